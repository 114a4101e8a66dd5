"""The worker's own CPU per message, without a broker: a stand-in SQS client that answers at once.

``python -m bench.path [--messages N] [--concurrency C] [--rounds R]`` runs the worker in this
process (:class:`worker.consume.worker.Worker`, a no-op ``message`` handler, INFO logs to
/dev/null) on a
client that hands out SNS-envelope messages as fast as they are asked for and accepts every
delete. What it measures is the worker's path alone — poller, lease, runner, handler call,
settler, metrics, logs — with no botocore and no network: the part of the CPU per message the
worker can change. Less noisy than the end-to-end figures; ``--worker-path`` compares versions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

_TOPIC = "arn:aws:sns:us-east-1:123456789012:bench"


def _envelope(index: int) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": _TOPIC,
            "Message": json.dumps({"i": index, "t": time.time()}),
            "Timestamp": "2026-11-29T06:00:00.123Z",
            "SignatureVersion": "1",
            "Signature": "x" * 344,
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
    )


class StandInSqs:
    """Answers the worker's SQS calls at once: ``total`` messages, then empty receives."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.deleted = 0
        self.calls = 0
        self._bodies = [_envelope(i) for i in range(100)]
        self.done = asyncio.Event()

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        """Up to ``MaxNumberOfMessages`` messages, with the attributes SQS gives."""
        await asyncio.sleep(0)
        self.calls += 1
        count = min(int(kwargs["MaxNumberOfMessages"]), self.total - self.sent)
        now = str(int(time.time() * 1000))
        messages = []
        for _ in range(count):
            self.sent += 1
            messages.append(
                {
                    "MessageId": f"{self.sent:08d}-0000-4000-8000-000000000000",
                    "ReceiptHandle": f"{self.sent:016d}" * 10,
                    "MD5OfBody": "d41d8cd98f00b204e9800998ecf8427e",
                    "Body": self._bodies[self.sent % 100],
                    "Attributes": {
                        "SenderId": "AIDAEXAMPLE",
                        "SentTimestamp": now,
                        "ApproximateReceiveCount": "1",
                        "ApproximateFirstReceiveTimestamp": now,
                    },
                }
            )
        if not messages:
            await asyncio.sleep(0.05)
        return {"Messages": messages, "ResponseMetadata": {"RetryAttempts": 0}}

    async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        """Every entry deleted."""
        await asyncio.sleep(0)
        self.calls += 1
        entries = kwargs["Entries"]
        self.deleted += len(entries)
        if self.deleted >= self.total:
            self.done.set()
        return {"Successful": [{"Id": e["Id"]} for e in entries], "ResponseMetadata": {}}

    async def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        """Every entry changed."""
        await asyncio.sleep(0)
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]], "ResponseMetadata": {}}

    async def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        """Nothing to report."""
        return {"Attributes": {}, "ResponseMetadata": {}}


async def handler(message: Any) -> None:
    """The no-op handler."""


async def one_round(total: int, concurrency: int) -> tuple[float, int]:
    """(CPU µs per message, SQS calls) for one run of ``total`` messages."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415 -- after --worker-path

    from worker.config import Settings  # noqa: PLC0415
    from worker.consume.sqs import QueueInfo  # noqa: PLC0415
    from worker.consume.worker import Worker, build_adapter  # noqa: PLC0415
    from worker.handlers.calls import Caller  # noqa: PLC0415
    from worker.health import Health  # noqa: PLC0415
    from worker.metrics import Metrics  # noqa: PLC0415

    settings = Settings(
        queue_url="http://localhost/123456789012/bench",
        region="us-east-1",
        concurrency=concurrency,
        http_port=0,
        allow_no_dlq=True,
        wait_time_seconds=2,
    )
    info = QueueInfo(
        url="http://localhost/123456789012/bench",
        arn="arn:aws:sqs:us-east-1:123456789012:bench",
        region="us-east-1",
        visibility_timeout=30,
        fifo=False,
        redrive=None,
        dlq_url=None,
    )
    caller = Caller(max_threads=concurrency)
    sqs = StandInSqs(total)
    worker = Worker(
        settings,
        client=sqs,  # type: ignore[arg-type]  # a stand-in with the calls the worker makes
        info=info,
        adapter=build_adapter(settings, info, caller, handler),
        caller=caller,
        metrics=Metrics(CollectorRegistry(), queue="bench"),
        health=Health(loop_block_threshold=60),
    )

    async def stop_when_done() -> None:
        await sqs.done.wait()
        worker.stop("done")

    stopper = asyncio.create_task(stop_when_done())
    started = time.process_time()
    await worker.run()
    cpu = time.process_time() - started
    await stopper
    return cpu / total * 1e6, sqs.calls


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and print the median and range."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker-path", help="import the worker from here (compare versions)")
    args = parser.parse_args(argv)
    if args.worker_path:
        sys.path.insert(0, args.worker_path)
    from worker.config import LogFormat, LogLevel  # noqa: PLC0415 -- after --worker-path
    from worker.logs import configure_logging  # noqa: PLC0415

    with Path(os.devnull).open("w", encoding="utf-8") as sink:  # INFO logs, as in production
        configure_logging(LogLevel.INFO, LogFormat.JSON, stream=sink)
        results = [
            asyncio.run(one_round(args.messages, args.concurrency)) for _ in range(args.rounds)
        ]
    per_message = [cpu for cpu, _ in results]
    print(
        f"worker path: {statistics.median(per_message):.1f} µs CPU per message "
        f"({min(per_message):.1f}-{max(per_message):.1f}) over {args.rounds} rounds of "
        f"{args.messages} messages, concurrency {args.concurrency}, "
        f"{results[0][1] / args.messages * 10:.2f} SQS calls per 10 messages"
    )


if __name__ == "__main__":
    main()
