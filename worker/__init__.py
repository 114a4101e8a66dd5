"""sqs-event-worker: a long-running SQS consumer that stands in for AWS Lambda.

Handlers import what they need from here: :class:`Message` (what a ``message`` handler receives)
and :class:`NonRetryableError` (raise it to send a message towards the DLQ without retries).
"""

from worker._version import __version__
from worker.errors import MalformedMessageError, NonRetryableError, WorkerError
from worker.handlers.message import Message, MessageAttribute, SnsNotification

__all__ = [
    "MalformedMessageError",
    "Message",
    "MessageAttribute",
    "NonRetryableError",
    "SnsNotification",
    "WorkerError",
    "__version__",
]
