"""moto's server, with DynamoDB requests applied one at a time.

moto serves each request on its own thread and applies DynamoDB operations to shared items
without isolation: two UpdateItems on one item at the same moment can lose one `list_append`,
and two conditional writes can both pass their condition. DynamoDB applies the writes to an
item one at a time, and the code under test relies on that (the intake's idempotent log write,
the dispatcher's claim, two dispatchers appending to one notification's timeline). One lock
around DynamoDB requests restores it; the other services, and SQS long polls, are untouched.
"""

import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_one_at_a_time = threading.Lock()
_call_action = DynamoHandler.call_action


def _isolated_call_action(self):
    with _one_at_a_time:
        return _call_action(self)


DynamoHandler.call_action = _isolated_call_action

if __name__ == "__main__":
    main()
