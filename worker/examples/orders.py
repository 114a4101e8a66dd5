"""An example ``message`` handler for order events published to SNS, and its DLQ's reprocessing.

Run it with ``WORKER_HANDLER=worker.examples.orders:handle``. It shows the three ways a handler
ends: returning (the message is deleted), raising (it is retried, then moved to the DLQ), and
raising :class:`worker.NonRetryableError` (released at once towards the DLQ). :func:`reprocess`
is the separate function that runs over the DLQ.
"""

from __future__ import annotations

import asyncio

import structlog

from worker import MalformedMessageError, Message, NonRetryableError

log = structlog.get_logger("orders")


async def handle(message: Message) -> None:
    """Process one order event."""
    order = message.json()  # a body that is not JSON fails as malformed
    if not isinstance(order, dict) or "order_id" not in order:
        raise NonRetryableError("not an order event")
    amount = order.get("amount")
    if not isinstance(amount, int | float):
        raise TypeError(f"order {order['order_id']}: amount {amount!r} is not a number")
    if order.get("fail_first_attempts", 0) >= message.receive_count:
        raise ConnectionError("payment service unavailable (simulated)")
    if order.get("slow_seconds"):
        await asyncio.sleep(float(order["slow_seconds"]))
    log.info("order.processed", order_id=order["order_id"], amount=amount)


def _why_unprocessable(message: Message) -> tuple[str | None, str]:
    """The order id, if there is one, and why ``handle`` cannot process the message."""
    try:
        order = message.json()
    except MalformedMessageError:
        return None, "the body is not JSON"
    if not isinstance(order, dict) or "order_id" not in order:
        return None, "not an order event"
    order_id = str(order["order_id"])
    amount = order.get("amount")
    if not isinstance(amount, int | float):
        return order_id, f"amount {amount!r} is not a number"
    return order_id, "it failed on every receive"


async def reprocess(message: Message) -> dict[str, str | None]:
    """The DLQ's reprocessing function: ``worker run --queue <DLQ> --handler
    worker.examples.orders:reprocess --exit-when-idle 30``, by hand or on a schedule.

    What reaches the DLQ failed every retry, so another retry is not the cure: each message is
    archived with the reason it could not be processed (a log line here; a table or a ticket for
    a person in production) and, once this returns, deleted from the DLQ. What failed for a
    passing reason (an outage) goes back with ``worker dlq redrive`` once the reason has passed.
    """
    order_id, reason = _why_unprocessable(message)
    log.info("order.archived", order_id=order_id, reason=reason)
    return {"archived": message.message_id, "order_id": order_id, "reason": reason}
