"""moto's server, with DynamoDB requests applied one at a time.

moto serves each request on its own thread and applies DynamoDB operations to shared items
without isolation: two UpdateItems on one item at the same moment can lose one `list_append`,
and two conditional writes can both pass their condition. DynamoDB applies the writes to an
item one at a time, and the code under test relies on that (the intake's idempotent log write,
the dispatcher's claim, two dispatchers appending to one notification's timeline). One lock
around DynamoDB requests restores it; the other services, and SQS long polls, are untouched.

And SQS receives without moto's quadratic retention check: for each message a receive returns,
moto reads the queue's retention period by computing every attribute of the queue, three
times, and each count among them (visible, in flight, delayed) walks all the queue's messages.
With a backlog of 1,500 messages in a queue, that was seven tenths of the emulator's time
(py-spy, during the backlog benchmark: BENCHMARKS.md, section 6), and every other request, a
DynamoDB one holding the lock above included, waited for it. The check reads the period alone.
"""

import threading

from moto.core.utils import unix_time
from moto.dynamodb.responses import DynamoHandler
from moto.server import main
from moto.sqs.models import SQSBackend

_one_at_a_time = threading.Lock()
_call_action = DynamoHandler.call_action


def _isolated_call_action(self):
    with _one_at_a_time:
        return _call_action(self)


DynamoHandler.call_action = _isolated_call_action


def _retained(self, queue_name, message):
    retention_seconds = int(self.get_queue(queue_name).message_retention_period)
    return retention_seconds + message.sent_timestamp / 1000 > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _retained

if __name__ == "__main__":
    main()
