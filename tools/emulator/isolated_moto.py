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

And SQS sends without the same counts: each send computes every attribute of the queue to read
one (`ContentBasedDeduplication`), walking all its messages three times. A queue nobody reads
(the local stack's events queue, the bus's target: about five messages per notification) made
each event slower than the last; at 10,000 messages the emulator served about 15 requests a
second (py-spy, during the schedule benchmark). Within a send the three counts read 0.
"""

import threading

from moto.core.utils import unix_time
from moto.dynamodb.responses import DynamoHandler
from moto.server import main
from moto.sqs.models import Queue, SQSBackend

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

_sending = threading.local()
_send_message = SQSBackend.send_message


def _send_without_counting(self, *args, **kwargs):
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

if __name__ == "__main__":
    main()
