"""Throughput against concurrency, for an I/O-bound handler, on a local moto server.

For each concurrency it measures, in the same run, the worker and a ceiling: a bare loop of
``ReceiveMessage(10)`` + ``DeleteMessageBatch`` with the same number of pollers and no handler,
which is the most this broker gives. It prints messages per second, the ideal (concurrency
divided by the handler's duration), the ceiling, and the worker's ratio to the lower of the two:
throughput should grow with concurrency until the broker is the limit. Not part of
``make test``; run it with ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

from worker import Message
from worker.config import Settings
from worker.sqs import open_sqs
from worker.worker import serve

REGION = "us-east-1"


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server in its own process on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(  # noqa: S603 -- our own interpreter
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):  # noqa: S310 -- loopback
                return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto server did not start")


async def filled_queue(settings: Settings, messages: int) -> str:
    """A new queue holding ``messages`` messages."""
    async with open_sqs(settings) as sqs:
        url = (await sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        for start in range(0, messages, 10):
            entries = [
                {"Id": str(i), "MessageBody": f"m{start + i}"}
                for i in range(min(10, messages - start))
            ]
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[arg-type]
    return url


async def ceiling(endpoint: str, pollers: int, messages: int) -> float:
    """Messages per second of a bare receive + delete loop with ``pollers`` loops."""
    settings = Settings(endpoint_url=endpoint, region=REGION)
    url = await filled_queue(settings, messages)
    done = 0
    async with open_sqs(settings, pool=pollers + 2) as sqs:

        async def loop() -> None:
            nonlocal done
            while done < messages:
                response = await sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                batch = response.get("Messages", [])
                if not batch:
                    return
                done += len(batch)
                await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(batch)
                    ],
                )

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(pollers)))
        return done / (time.monotonic() - started)


async def one_round(endpoint: str, concurrency: int, messages: int, sleep: float) -> float:
    """Messages per second for one concurrency, from first handler start to last finish."""
    settings = Settings(endpoint_url=endpoint, region=REGION)
    url = await filled_queue(settings, messages)
    seen: set[str] = set()
    first: list[float] = []
    last: list[float] = []

    async def handler(message: Message) -> None:
        if not first:
            first.append(time.monotonic())
        await asyncio.sleep(sleep)
        seen.add(message.body)
        last[:] = [time.monotonic()]

    run = settings.model_copy(
        update={
            "queue_url": url,
            "concurrency": concurrency,
            "allow_no_dlq": True,
            "wait_time_seconds": 1,
            "exit_when_idle": 1.0,
            "log_level": "warning",
            "http_port": 0,
        }
    )
    await serve(run, handler=handler)
    if len(seen) != messages:
        raise SystemExit(f"lost messages: {messages - len(seen)} of {messages}")
    return messages / (last[0] - first[0])


async def main() -> None:
    """Run every concurrency and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--sleep", type=float, default=0.05, help="handler duration (s)")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 5, 10, 25, 50])
    args = parser.parse_args()
    from worker.config import LogFormat, LogLevel  # noqa: PLC0415
    from worker.logs import configure_logging  # noqa: PLC0415

    configure_logging(LogLevel.WARNING, LogFormat.JSON)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server, endpoint = start_moto()
    try:
        print(
            f"{args.messages} messages per round, handler sleeps {args.sleep} s\n"
            f"{'concurrency':>11} {'pollers':>7} {'msg/s':>8} {'ideal':>8} {'ceiling':>8} "
            f"{'ratio':>6}"
        )
        for concurrency in args.concurrency:
            pollers = Settings(concurrency=concurrency).poller_count
            limit = await ceiling(endpoint, pollers, args.messages)
            rate = await one_round(endpoint, concurrency, args.messages, args.sleep)
            ideal = concurrency / args.sleep
            print(
                f"{concurrency:>11} {pollers:>7} {rate:>8.1f} {ideal:>8.1f} {limit:>8.1f} "
                f"{rate / min(ideal, limit):>6.2f}"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())
