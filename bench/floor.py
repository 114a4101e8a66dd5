"""The memory floor of the worker's fixed stack, to read the peak RSS figures against.

``python -m bench.floor`` imports only the libraries the worker is built on (aiobotocore,
structlog, prometheus-client, pydantic-settings), creates one SQS client, and prints its peak RSS
(``VmHWM``, MiB) after the imports and after the client, as JSON. No worker code is imported:
this is where any process on this stack starts, before it handles a message.
"""

from __future__ import annotations

import asyncio
import json

import prometheus_client  # noqa: F401 -- imported for its memory
import pydantic_settings  # noqa: F401 -- imported for its memory
import structlog  # noqa: F401 -- imported for its memory
from aiobotocore.session import get_session

from bench.probe import memory_kb


async def _client() -> None:
    async with get_session().create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="floor",
        aws_secret_access_key="floor",  # noqa: S106 -- no request is made
    ):
        pass


def main() -> None:
    """Print the peak RSS after the imports and after creating the client."""
    imports = memory_kb()[1] / 1024
    asyncio.run(_client())
    client = memory_kb()[1] / 1024
    print(json.dumps({"imports_mb": round(imports, 1), "with_client_mb": round(client, 1)}))


if __name__ == "__main__":
    main()
