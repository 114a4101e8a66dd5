"""Your first handler: ``worker run --handler myhandlers:handle`` calls it once per message."""

from worker import Message, NonRetryableError


def handle(message: Message) -> None:
    order = message.json()  # a body that is not JSON fails: retried, then the DLQ
    if not isinstance(order.get("amount"), int | float):
        # Retrying cannot help: released at once, it reaches the DLQ without waiting.
        raise NonRetryableError(f"order {order.get('order_id')}: the amount is not a number")
    print(f"order {order['order_id']}: charged {order['amount']}")
