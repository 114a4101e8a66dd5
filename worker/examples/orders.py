"""An example ``message`` handler for order events published to SNS.

Run it with ``WORKER_HANDLER=worker.examples.orders:handle``. It shows the three ways a handler
ends: returning (the message is deleted), raising (it is retried, then moved to the DLQ), and
raising :class:`worker.NonRetryableError` (released at once towards the DLQ).
"""

from __future__ import annotations

import asyncio

import structlog

from worker import Message, NonRetryableError

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
