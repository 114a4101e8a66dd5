"""An SQS-triggered Lambda function, as it runs on Lambda: ``WORKER_HANDLER_TYPE=lambda``,
``WORKER_HANDLER=lambda_function.lambda_handler``. It reads the SNS envelope in each record's
body and reports the records it could not process, so that only those are retried."""

import json
from typing import Any


def process(order: dict[str, Any]) -> None:
    """A stand-in for your business logic: an order whose amount is not a number fails."""
    if not isinstance(order.get("amount"), int | float):
        raise TypeError(f"order {order.get('order_id')}: the amount is not a number")


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event["Records"]:
        try:
            process(json.loads(json.loads(record["body"])["Message"]))
        except Exception:  # noqa: BLE001 -- a record that fails fails alone
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
