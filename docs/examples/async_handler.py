"""An ``async def`` message handler: ``worker run --handler async_handler:handle``."""

import asyncio

from worker import Message, NonRetryableError


async def charge(order_id: str, amount: float) -> None:
    """A stand-in for your payment service's client."""
    await asyncio.sleep(0)
    print(f"order {order_id}: charged {amount}")


async def handle(message: Message) -> None:
    order = message.json()  # decoded on demand; not JSON → MalformedMessageError
    if "order_id" not in order:
        raise NonRetryableError("not an order")  # released at once, towards the DLQ
    await charge(order["order_id"], order["amount"])
