"""An example ``lambda`` handler: an unmodified SQS-triggered Lambda function.

Run it with ``WORKER_HANDLER=worker.examples.lambda_orders:lambda_handler`` and
``WORKER_HANDLER_TYPE=lambda``. It reads the SNS envelope from each record's body, as Lambda
functions subscribed through SNS do, and reports the records it could not process in
``batchItemFailures`` so that only those are retried.
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger(__name__)


def order_from(record: dict[str, Any]) -> dict[str, Any]:
    """The order in a record: the SNS envelope's ``Message``, or the body itself."""
    document = json.loads(record["body"])
    order: dict[str, Any] = json.loads(document["Message"]) if "TopicArn" in document else document
    if not isinstance(order.get("amount"), int | float):
        raise TypeError(f"amount {order.get('amount')!r} is not a number")
    return order


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Process a batch of order events; report the ones that failed."""
    failures = []
    for record in event["Records"]:
        try:
            order = order_from(record)
        except Exception:  # noqa: BLE001 -- any failure fails only this record
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        logger.info(
            "processed order %s (%d ms left)",
            order["order_id"],
            context.get_remaining_time_in_millis(),
        )
    return {"batchItemFailures": failures}
