"""How long a failed message stays invisible before SQS hands it out again."""

from __future__ import annotations

import math
import random
from typing import Protocol


class RetryDelay(Protocol):
    """Chooses the visibility timeout of a failed message from how often it was received."""

    def seconds(self, receive_count: int) -> int:
        """Seconds until the message is visible again."""
        ...


class ExponentialBackoff:
    """``base * 2 ** (receive_count - 1)``, capped, with "equal jitter".

    Half the delay is kept and half is random, so a burst of failures spreads out without any
    retry coming back sooner than half its step. The cap bounds the wait of the last retries.
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography

    def seconds(self, receive_count: int) -> int:
        """Seconds until the message is visible again."""
        step = min(self.cap, self.base * (1 << max(0, min(receive_count - 1, 30))))
        return min(round(step / 2 + self._rng.uniform(0, step / 2)), math.floor(self.cap))

    def __repr__(self) -> str:
        return f"ExponentialBackoff(base={self.base}, cap={self.cap})"


class QueueTimeout:
    """The queue's own visibility timeout: what Lambda does with a failed message."""

    def __init__(self, visibility_timeout: int) -> None:
        self.visibility_timeout = visibility_timeout

    def seconds(self, receive_count: int) -> int:
        """Seconds until the message is visible again."""
        return self.visibility_timeout

    def __repr__(self) -> str:
        return f"QueueTimeout({self.visibility_timeout})"
