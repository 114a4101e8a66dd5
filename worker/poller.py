"""Pollers: long-poll SQS for as many messages as there are free slots, and hand them over.

Several pollers run at once so that one slow receive does not leave the pool idle. Each takes
free slots first, then asks SQS for at most that many messages (or batches), so received messages
start at once. Errors talking to SQS never end a poller: it backs off with jitter and tries again.

On shutdown a poller waiting for slots or backing off stops at once. A poller whose receive is
already open lets it finish (at most ``WaitTimeSeconds``) instead of cutting it short, because SQS
may already have taken messages for it; those are released at once (visibility 0) rather than
stranded invisible for a whole visibility timeout.
"""

from __future__ import annotations

import asyncio
import random

import structlog

from worker.capacity import Capacity
from worker.runner import Runner
from worker.sqs import MAX_BATCH, SqsQueue, describe_failure, error_code

log = structlog.get_logger("worker.poller")

_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_CAP_SECONDS = 20.0


class Poller:
    """One long-polling loop."""

    def __init__(
        self,
        queue: SqsQueue,
        *,
        capacity: Capacity,
        runner: Runner,
        wait_seconds: int,
        visibility_timeout: int | None,
    ) -> None:
        self._queue = queue
        self._capacity = capacity
        self._runner = runner
        self._wait_seconds = wait_seconds
        self._visibility_timeout = visibility_timeout
        # A slot runs one batch; ask for no more batches than one receive can fill.
        self._slots_per_receive = max(1, MAX_BATCH // runner.batch_size)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.receiving = False
        self.consecutive_errors = 0

    def start(self) -> asyncio.Task[None]:
        """Run the loop in a task."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    def stop(self) -> None:
        """Receive no more; stop now unless a receive is open."""
        self._stopping = True
        if self._task is not None and not self.receiving:
            self._task.cancel()

    async def _run(self) -> None:
        while not self._stopping:
            slots = await self._capacity.acquire(self._slots_per_receive)
            self.receiving = True
            try:
                messages = await self._queue.receive(
                    min(MAX_BATCH, slots * self._runner.batch_size),
                    self._wait_seconds,
                    self._visibility_timeout,
                )
            except Exception as exc:  # noqa: BLE001 -- SQS unreachable or refusing: back off
                self.receiving = False
                self._capacity.release(slots)
                await self._back_off(exc)
                continue
            self.receiving = False
            self.consecutive_errors = 0
            self._runner.submit(messages, slots)

    async def _back_off(self, exc: Exception) -> None:
        self.consecutive_errors += 1
        step = min(
            _BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2 ** min(self.consecutive_errors, 10)
        )
        delay = step / 2 + random.uniform(0, step / 2)  # noqa: S311 -- jitter, not cryptography
        log.warning(
            "sqs.receive_failed",
            error=describe_failure(exc),
            code=error_code(exc),
            consecutive_errors=self.consecutive_errors,
            retry_in_seconds=round(delay, 2),
        )
        await asyncio.sleep(delay)
