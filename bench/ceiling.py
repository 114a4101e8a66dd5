"""The ceiling: the least a consumer can do, in a process of its own, measured like the worker.

``python -m bench.ceiling`` runs ``BENCH_POLLERS`` loops of ``ReceiveMessage
(MaxNumberOfMessages=10)`` + ``DeleteMessageBatch`` with plain aiobotocore: no handler, no
framework, no attributes asked for. It reports to a :class:`~bench.probe.Probe` as the worker's
bench handlers do (taken up when the receive returns, done when the delete returns), and stops
once every expected message is done. With ``BENCH_LATENCY=1`` it reads the publish time out of
each SNS envelope, for scenario D.

With ``BENCH_HANDLER`` set (``sleep``: ``BENCH_SLEEP`` seconds, scenario B; ``skewed``: scenario
C's durations) it is the least a consumer can do that runs the scenario's handler: each receive's
messages sleep side by side (``asyncio.gather``), then one delete batch. That loop's CPU per
message is what running the handler costs any consumer (a task, a timer and a wake-up per
message, which the bare loop does not pay); the harness reports the worker's CPU against it as
well as against the bare loop's.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bench.probe import Probe, count_requests


def handler_durations() -> Callable[[], float] | None:
    """How long each message's handler sleeps, by ``BENCH_HANDLER``; ``None``: no handler."""
    kind = os.environ.get("BENCH_HANDLER")
    if kind == "sleep":
        seconds = float(os.environ["BENCH_SLEEP"])
        return lambda: seconds
    if kind == "skewed":
        import random  # noqa: PLC0415 -- only for scenario C

        from bench.handlers import skewed_duration  # noqa: PLC0415 -- it imports the worker

        draw = random.Random(int(os.environ.get("BENCH_SEED", "1")))
        return lambda: skewed_duration(draw)
    if kind:
        raise SystemExit(f"unknown BENCH_HANDLER {kind!r}")
    return None


async def consume(
    endpoint: str, queue_url: str, pollers: int, wait: int, expected: int, *, latency: bool
) -> Probe:
    """Receive and delete until every expected message is done; returns the probe."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def completed() -> None:
        loop.call_soon_threadsafe(stop.set)

    probe = Probe(expected, Path(os.environ["BENCH_RESULT"]), completed)
    duration = handler_durations()
    count_requests(probe)
    probe.extra["receive_seconds"] = 0.0  # time inside ReceiveMessage calls that got messages
    probe.extra["receives_timed"] = 0
    config = AioConfig(max_pool_connections=pollers + 2)
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=endpoint, config=config
    ) as sqs:

        async def poll() -> None:
            while not stop.is_set():
                asked = time.perf_counter()
                response = await sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
                )
                messages = response.get("Messages", [])
                if not messages:
                    continue  # the long polls at the end, once the queue is drained: not timed
                probe.extra["receive_seconds"] += time.perf_counter() - asked
                probe.extra["receives_timed"] += 1
                for message in messages:
                    published = None
                    if latency:
                        envelope = json.loads(message["Body"])
                        published = float(json.loads(envelope["Message"])["t"])
                    probe.start(message["MessageId"], published)
                if duration is not None:
                    await asyncio.gather(*(asyncio.sleep(duration()) for _ in messages))
                await sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                        for index, message in enumerate(messages)
                    ],
                )
                probe.done(len(messages))

        await asyncio.gather(*(poll() for _ in range(pollers)))
    return probe


def main() -> None:
    """Run from the environment the harness sets."""
    probe = asyncio.run(
        consume(
            os.environ["BENCH_ENDPOINT"],
            os.environ["BENCH_QUEUE_URL"],
            int(os.environ["BENCH_POLLERS"]),
            int(os.environ.get("BENCH_WAIT", "2")),
            int(os.environ["BENCH_EXPECTED"]),
            latency=os.environ.get("BENCH_LATENCY") == "1",
        )
    )
    probe.write(kind="ceiling")


if __name__ == "__main__":
    main()
