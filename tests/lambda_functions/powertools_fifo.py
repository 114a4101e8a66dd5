"""A Lambda function using Powertools' FIFO batch processor (unmodified)."""

import json

from aws_lambda_powertools.utilities.batch import (
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

processor = SqsFifoPartialProcessor()
FAILED_ONCE: set = set()  # module state survives between invocations, as in a warm Lambda


def record_handler(record: SQSRecord) -> None:
    envelope = json.loads(record.body)
    item = json.loads(envelope["Message"])
    key = (item["group"], item["n"])
    if item.get("flaky") and key not in FAILED_ONCE:
        FAILED_ONCE.add(key)
        raise RuntimeError(f"transient failure on {key}")
    print(f"handled {item['group']} {item['n']}")


def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
