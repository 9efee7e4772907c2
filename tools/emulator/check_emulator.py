"""Checks the emulator's own changes to moto (`isolated_moto.py`), exiting 1 naming each failure:
- the DynamoDB answers written as they are (`isolated_moto.as_is`) are the answers moto's own
  serializer writes: every operation of `AS_IS`, over every attribute type, found and missing
  items, each `ReturnValues`, consumed capacity, pagination and the stream's records, each
  answered both ways and compared as JSON;
- SQS deletes made at the same moment are all applied: eight consumers receive and delete 2,000
  messages in batches from the emulator in its own process (as the tests run it), and none is
  left in flight (moto alone left 8 to 59 of them, though not in every run).

Run by scripts/test.sh with the emulator's venv: `.venv/emulator/bin/python tools/emulator/check_emulator.py`.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import boto3
from botocore.config import Config
from cheroot import wsgi
from moto.core.responses import ActionResult
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

import isolated_moto

compared = Counter()
differences = []


def _execute_both(self, context):
    """moto's answer, after checking that the one written as it is says the same."""
    answer = isolated_moto._execute_result(self, context)
    fast = isolated_moto.as_is(self.result, context)
    if fast is not None:
        name = context.operation_model.name
        compared[name] += 1
        status, headers, body = answer
        if (fast[0], fast[1]["Content-Type"]) != (status, headers.get("Content-Type")):
            differences.append(f"{name}: {fast[:2]} against {status} {headers}")
        elif json.loads(fast[2]) != json.loads(body):
            differences.append(f"{name}: {fast[2]}\n  against moto's {body}")
    return answer


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    ActionResult.execute_result = _execute_both
    port = free_port()
    server = wsgi.Server(("127.0.0.1", port), DomainDispatcherApplication(create_backend_app), numthreads=4)
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    endpoint = f"http://127.0.0.1:{port}"
    config = Config(retries={"max_attempts": 1})
    dynamodb = session.client("dynamodb", endpoint_url=endpoint, config=config)
    streams = session.client("dynamodbstreams", endpoint_url=endpoint, config=config)
    try:
        exercise(dynamodb, streams)
    finally:
        server.stop()
    delete_at_once(session, config)
    missing = sorted(set().union(*isolated_moto.AS_IS.values()) - set(compared))
    if missing:
        differences.append(f"never compared: {missing}")
    if differences:
        print("\n".join(differences), file=sys.stderr)
        sys.exit(1)
    print(f"check_emulator: {sum(compared.values())} answers the same both ways ({dict(sorted(compared.items()))})")
    print("check_emulator: 2,000 messages deleted by eight consumers at once, none left in flight")


def exercise(dynamodb, streams):
    table = "as-is"
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "group", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-group",
                "KeySchema": [{"AttributeName": "group", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    every_type = {
        "pk": {"S": "user-1"},
        "sk": {"N": "1"},
        "group": {"S": "a"},
        "text": {"S": "héllo \"quoted\" \u2603"},
        "number": {"N": "-12.50"},
        "blob": {"B": b"\x00\xffbinary"},
        "flag": {"BOOL": True},
        "nothing": {"NULL": True},
        "strings": {"SS": ["x", "y"]},
        "numbers": {"NS": ["1", "2.5"]},
        "blobs": {"BS": [b"\x01", b"\x02"]},
        "timeline": {
            "L": [
                {"M": {"type": {"S": "accepted"}, "at": {"N": "1765000000000"}, "tags": {"L": [{"S": "t"}]}}},
                {"M": {"type": {"S": "sent"}, "raw": {"B": b"\x10"}, "empty": {"M": {}}}},
            ]
        },
    }
    capacity = {"ReturnConsumedCapacity": "INDEXES"}
    dynamodb.put_item(TableName=table, Item=every_type, **capacity)
    dynamodb.put_item(TableName=table, Item=every_type, ReturnValues="ALL_OLD")
    for sk in range(2, 8):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "user-1"}, "sk": {"N": str(sk)}, "group": {"S": "a"}})
    key = {"pk": {"S": "user-1"}, "sk": {"N": "1"}}
    dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True, **capacity)
    dynamodb.get_item(TableName=table, Key={"pk": {"S": "nobody"}, "sk": {"N": "1"}})
    dynamodb.get_item(TableName=table, Key=key, ProjectionExpression="timeline[1], #b, #n", ExpressionAttributeNames={"#b": "blob", "#n": "number"})
    for returns in ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"):
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #t = list_append(#t, :event), #c = if_not_exists(#c, :zero) + :one ADD strings :more",
            ExpressionAttributeNames={"#t": "timeline", "#c": "count"},
            ExpressionAttributeValues={
                ":event": {"L": [{"M": {"type": {"S": returns}, "blob": {"B": b"\x7f"}}}]},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
                ":more": {"SS": [returns]},
            },
            ReturnValues=returns,
            **capacity,
        )
    dynamodb.batch_get_item(
        RequestItems={table: {"Keys": [key, {"pk": {"S": "nobody"}, "sk": {"N": "2"}}], "ConsistentRead": True}},
        **capacity,
    )
    dynamodb.batch_write_item(
        RequestItems={
            table: [
                {"PutRequest": {"Item": {"pk": {"S": "user-2"}, "sk": {"N": "1"}, "group": {"S": "b"}}}},
                {"DeleteRequest": {"Key": {"pk": {"S": "user-1"}, "sk": {"N": "7"}}}},
            ]
        },
        ReturnConsumedCapacity="TOTAL",
    )
    page = dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk AND sk > :low",
        ExpressionAttributeValues={":pk": {"S": "user-1"}, ":low": {"N": "0"}},
        Limit=3,
        **capacity,
    )
    dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "user-1"}},
        ExclusiveStartKey=page["LastEvaluatedKey"],
        Select="COUNT",
    )
    dynamodb.query(
        TableName=table,
        IndexName="by-group",
        KeyConditionExpression="#g = :g",
        ExpressionAttributeNames={"#g": "group"},
        ExpressionAttributeValues={":g": {"S": "a"}},
        ScanIndexForward=False,
    )
    dynamodb.scan(TableName=table, Limit=4, **capacity)
    dynamodb.scan(TableName=table, FilterExpression="attribute_exists(#b)", ExpressionAttributeNames={"#b": "blob"})
    dynamodb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": "user-3"}, "sk": {"N": "1"}, "n": {"N": "3"}}}},
            {
                "Update": {
                    "TableName": table,
                    "Key": key,
                    "UpdateExpression": "SET flag = :f",
                    "ExpressionAttributeValues": {":f": {"BOOL": False}},
                }
            },
        ],
        ReturnConsumedCapacity="TOTAL",
    )
    dynamodb.transact_get_items(
        TransactItems=[{"Get": {"TableName": table, "Key": key}}, {"Get": {"TableName": table, "Key": {"pk": {"S": "nobody"}, "sk": {"N": "1"}}}}]
    )
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "user-3"}, "sk": {"N": "1"}}, ReturnValues="ALL_OLD", **capacity)
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "nobody"}, "sk": {"N": "1"}})

    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    first = streams.get_records(ShardIterator=iterator, Limit=5)
    rest = streams.get_records(ShardIterator=first["NextShardIterator"])
    streams.get_records(ShardIterator=rest["NextShardIterator"])


def delete_at_once(session, config, emulator=os.path.join(os.path.dirname(__file__), "isolated_moto.py")):
    port = free_port()
    command = [sys.executable, emulator, "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        sqs = session.client("sqs", endpoint_url=endpoint, config=config)
        deadline = time.time() + 30
        while True:
            try:
                sqs.list_queues()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        consume_at_once(session, endpoint, config)
    finally:
        server.terminate()
        server.wait()


def consume_at_once(session, endpoint, config):
    sqs = session.client("sqs", endpoint_url=endpoint, config=config)
    url = sqs.create_queue(QueueName="deleted-at-once", Attributes={"VisibilityTimeout": "180"})["QueueUrl"]
    for first in range(0, 2000, 10):
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(index), "MessageBody": f"m{first + index}"} for index in range(10)]
        )

    def consume():
        consumer = session.client("sqs", endpoint_url=endpoint, config=config)
        while messages := consumer.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            entries = [{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(messages)]
            failed = consumer.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed")
            if failed:
                differences.append(f"DeleteMessageBatch failed: {failed}")

    consumers = [threading.Thread(target=consume) for _ in range(8)]
    for consumer in consumers:
        consumer.start()
    for consumer in consumers:
        consumer.join()
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    if any(count != "0" for count in left.values()):
        differences.append(f"SQS deletes made at once were lost: {left} after every message was deleted")


if __name__ == "__main__":
    main()
