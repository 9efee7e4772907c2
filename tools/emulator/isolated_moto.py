"""moto's server, with DynamoDB requests applied one at a time, and moto's slowest paths made
fast: the benchmarks measure the stack against this one Python process, so its time per request
is theirs (BENCHMARKS.md, section 7).

moto serves each request on its own thread and applies DynamoDB operations to shared items
without isolation: two UpdateItems on one item at the same moment can lose one `list_append`,
and two conditional writes can both pass their condition. DynamoDB applies the writes to an
item one at a time, and the code under test relies on that (the intake's idempotent log write,
the dispatcher's claim, two dispatchers appending to one notification's timeline). One lock
around DynamoDB requests restores it; the other services, and SQS long polls, are untouched.

And SQS requests applied one at a time too: moto deletes a message by building the queue's list
anew without it and assigning it back, so two deletes at the same moment (two pollers' batches)
can each put back the message the other removed. The message then stays in flight, deleted as
far as its consumer knows, and comes back a visibility timeout later (180 s: 1 to 25 messages
in each schedule benchmark run once the emulator got faster). A receive waiting for messages
lets the others run while it waits. Sends by other services (EventBridge and SNS targets) take
the same lock.

And SQS receives without moto's quadratic retention check: for each message a receive returns,
moto reads the queue's retention period by computing every attribute of the queue, three
times, and each count among them (visible, in flight, delayed) walks all the queue's messages.
With a backlog of 1,500 messages in a queue, that was seven tenths of the emulator's time
(py-spy, during the backlog benchmark: BENCHMARKS.md, section 6), and every other request, a
DynamoDB one holding the lock above included, waited for it. The check reads the period alone.

And SQS sends without the same counts: each send computes every attribute of the queue to read
one (`ContentBasedDeduplication`), walking all its messages three times. A queue nobody reads
(the local stack's events queue, the bus's target: about five messages per notification) made
each event slower than the last; at 10,000 messages the emulator served about 15 requests a
second (py-spy, during the schedule benchmark). Within a send the three counts read 0.

And SQS's clock read as the epoch time it is: moto reads the time for each message a queue
holds, to see whether it is visible and whether it is delayed, by building two datetimes and
subtracting them. A receive, and each waiting receive woken by a send, walks the whole queue
so: with 2,000 scheduled messages delayed in one queue, the stack's idle long polls alone kept
a third of a core busy (py-spy, during the schedule benchmark's wait until due).

And DynamoDB's item reads and writes and its stream's records answered as the JSON they already
are: moto builds them in DynamoDB's wire shape (`{type: value}` maps) and then walks botocore's
model of the answer for every attribute of every item, which was 38% of the emulator's time in
the schedule benchmark's release (py-spy, GIL holders only), the notification records' nested
timelines and the stream's old and new images being most of what it answers.
`check_emulator.py` checks that both give the same answers.

And EventBridge's archive without building a JSONPath parser per event: moto archives through a
rule whose input transformer parses the same two paths for every event put, and jsonpath_ng
builds its grammar's tables for each parse (6% of the emulator's time in the same release).
The parsed paths are kept.

And each UpdateItem's update expression parsed once per distinct expression, not twice per
request (the handler and the backend both parse it; 5% of that release): the parsed tree is
only read, or copied by the validator before it fills in the values.

And served by cheroot rather than werkzeug's development server, which closes the connection
after every answer (so each request was a new connection and a new thread) and lists moto's
package directory on disk to route each request. Kept-alive connections, a pool of threads and
the list read once halved the emulator's CPU per request for small DynamoDB and SQS calls
(about 4 ms to 2 ms, measured on this machine kind).
"""

import argparse
import base64
import calendar
import functools
import json
import os
import signal
import sys
import threading
import time
from datetime import datetime

import jsonpath_ng.ext
from cheroot import wsgi
from moto import backends
from moto.core.responses import ActionResult
from moto.core import utils as moto_utils
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.sqs import models as sqs_models
from moto.sqs.models import Queue, SQSBackend
from moto.sqs.responses import SQSResponse

_dynamodb_one_at_a_time = threading.Lock()
_call_action = DynamoHandler.call_action


def _isolated_call_action(self):
    with _dynamodb_one_at_a_time:
        return _call_action(self)


DynamoHandler.call_action = _isolated_call_action


def _unix_time(at=None):
    return time.time() if at is None else moto_utils.unix_time(at)


def _unix_time_millis(at=None):
    return _unix_time(at) * 1000.0


sqs_models.unix_time = _unix_time
sqs_models.unix_time_millis = _unix_time_millis


def _retained(self, queue_name, message):
    retention_seconds = int(self.get_queue(queue_name).message_retention_period)
    return retention_seconds + message.sent_timestamp / 1000 > _unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _retained

# Re-entrant: a request's send takes it again.
_sqs_one_at_a_time = threading.RLock()
_sqs_call_action = SQSResponse.call_action
_wait_for_messages = Queue.wait_for_messages


def _isolated_sqs_call_action(self):
    with _sqs_one_at_a_time:
        return _sqs_call_action(self)


def _wait_for_messages_unlocked(self, timeout):
    # Called only by a receive, which holds the lock once (through its request).
    _sqs_one_at_a_time.release()
    try:
        _wait_for_messages(self, timeout)
    finally:
        _sqs_one_at_a_time.acquire()


SQSResponse.call_action = _isolated_sqs_call_action
Queue.wait_for_messages = _wait_for_messages_unlocked

_sending = threading.local()
_send_message = SQSBackend.send_message


def _send_without_counting(self, *args, **kwargs):
    with _sqs_one_at_a_time:
        _sending.active = True
        try:
            return _send_message(self, *args, **kwargs)
        finally:
            _sending.active = False


def _uncounted_while_sending(count):
    return property(lambda queue: 0 if getattr(_sending, "active", False) else count.fget(queue))


SQSBackend.send_message = _send_without_counting
for _count in (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
):
    setattr(Queue, _count, _uncounted_while_sending(getattr(Queue, _count)))

# The operations whose answers are written out as moto builds them, per service model.
AS_IS = {
    "dynamodb": frozenset(
        {
            "BatchGetItem",
            "BatchWriteItem",
            "DeleteItem",
            "GetItem",
            "PutItem",
            "Query",
            "Scan",
            "TransactGetItems",
            "TransactWriteItems",
            "UpdateItem",
        }
    ),
    "dynamodbstreams": frozenset({"GetRecords"}),
}


def _wire(value):
    """The JSON protocol's form of what `json` cannot write: blobs in base64, times in epoch
    seconds (to the millisecond), as moto's serializer writes them."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        seconds = calendar.timegm(value.timetuple())
        return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds
    raise TypeError(f"{type(value).__name__} has no JSON form")


def as_is(result, context):
    """The answer to `context`'s operation written out as it is, or None if it is not one of
    `AS_IS` (or not a plain answer)."""
    model = context.operation_model
    if model.name not in AS_IS.get(model.service_model.service_name, ()) or not isinstance(result, dict):
        return None
    # Only what the answer's shape has (moto adds a field of its own here and there).
    members = model.output_shape.members
    answer = {name: value for name, value in result.items() if value is not None and name in members}
    body = json.dumps(answer, default=_wire, separators=(",", ":"))
    version = model.service_model.metadata.get("jsonVersion", "1.0")
    return model.http.get("responseCode", 200), {"Content-Type": f"application/x-amz-json-{version}"}, body


_execute_result = ActionResult.execute_result


def _execute_as_is(self, context):
    answer = as_is(self.result, context)
    return _execute_result(self, context) if answer is None else answer


ActionResult.execute_result = _execute_as_is

jsonpath_ng.ext.parse = functools.lru_cache(maxsize=256)(jsonpath_ng.ext.parse)
UpdateExpressionParser.make = classmethod(functools.lru_cache(maxsize=1024)(UpdateExpressionParser.make.__func__))

_moto_modules = frozenset(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _moto_modules

# Requests in flight at once, SQS long polls included (each holds a thread while it waits): a
# local stack polls about 20 queues and streams, and tests run two stacks at a time.
THREADS = 128


def main():
    parser = argparse.ArgumentParser(description="moto's server, as moto_server takes it")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    # moto writes its own address into what it returns (queue URLs).
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    # An idle connection is left open longer than the SDK's pool keeps one (90 s), so it is the
    # client that closes it, never the server just as the client reuses it.
    server = wsgi.Server(
        (args.host, args.port), app, numthreads=THREADS, request_queue_size=THREADS, timeout=300
    )
    server.keep_alive_conn_limit = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.prepare()
    print(f"serving moto on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
