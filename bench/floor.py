"""The memory floor of the worker's fixed stack, to read the peak RSS figures against.

``python -m bench.floor`` imports only the libraries the worker is built on (aiobotocore,
structlog, prometheus-client, pydantic-settings), creates one SQS client and makes one request
with it (to a closed port: the client still builds its TLS context and connection pool, as any
consumer's first request does), and prints its peak RSS (``VmHWM``, MiB) after each step, as
JSON. ``--lean`` creates the client with the worker's lean endpoint table
(:mod:`worker.endpoint_data`, which imports nothing but botocore). No other worker code is
imported: this is where any process on this stack stands before it handles a message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import botocore.exceptions
import prometheus_client  # noqa: F401 -- imported for its memory
import pydantic_settings  # noqa: F401 -- imported for its memory
import structlog  # noqa: F401 -- imported for its memory
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bench.probe import memory_kb


def _peak_mb() -> float:
    return round(memory_kb()[1] / 1024, 1)


async def _client(*, lean: bool, peaks: dict[str, float]) -> None:
    session = get_session()
    if lean:
        from worker.endpoint_data import lean_loader  # noqa: PLC0415 -- only when asked

        session.register_component("data_loader", lean_loader(None))
    async with session.create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",  # discard: nothing listens
        aws_access_key_id="floor",
        aws_secret_access_key="floor",  # noqa: S106 -- not a secret
        config=AioConfig(retries={"total_max_attempts": 1}, connect_timeout=1),
    ) as client:
        peaks["with_client_mb"] = _peak_mb()
        with contextlib.suppress(botocore.exceptions.EndpointConnectionError):
            await client.get_queue_url(QueueName="floor")
        peaks["after_request_mb"] = _peak_mb()


def main(argv: list[str] | None = None) -> None:
    """Print the peak RSS after the imports, the client and its first request."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--lean", action="store_true", help="the worker's lean endpoint table")
    args = parser.parse_args(argv)
    peaks = {"imports_mb": _peak_mb()}
    asyncio.run(_client(lean=args.lean, peaks=peaks))
    print(json.dumps(peaks))


if __name__ == "__main__":
    main()
