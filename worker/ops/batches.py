"""Cutting entries into the batches a batch call accepts: so many entries, so many bytes in all.

SQS's SendMessageBatch takes ten entries of at most 1 MiB in all, SNS's PublishBatch ten of at
most 256 KiB in all; a request over either limit is refused whole (``BatchRequestTooLong``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from worker.consume.sqs import MAX_BATCH

T = TypeVar("T")


def split_batches(
    entries: Sequence[T], size: Callable[[T], int], max_bytes: int, max_count: int = MAX_BATCH
) -> list[list[T]]:
    """``entries`` cut, in order, into batches of at most ``max_count`` and ``max_bytes``.

    In order, so that a FIFO group keeps its order. An entry larger than ``max_bytes`` by itself
    goes alone, for the service to accept or refuse on its own, without taking others with it.
    """
    batches: list[list[T]] = []
    total = 0
    for entry in entries:
        needed = size(entry)
        if not batches or len(batches[-1]) == max_count or total + needed > max_bytes:
            batches.append([])
            total = 0
        batches[-1].append(entry)
        total += needed
    return batches
