"""The embedded local mode: a moto server on a free loopback port, inside this process.

It needs the ``local`` extra (``pip install 'sqs-event-worker[local]'``). The server lives in a
daemon thread, so it ends with the process even if the process is killed: nothing is left running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from worker.errors import StartupError

# moto accepts any credentials, but botocore refuses to sign a request without some.
_PLACEHOLDER_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
}


@contextmanager
def embedded_broker() -> Iterator[str]:
    """Start an in-process moto server on 127.0.0.1 and yield its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 -- an optional extra
    except ImportError:
        raise StartupError(
            "the embedded local mode needs moto: pip install 'sqs-event-worker[local]'"
        ) from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    for name, value in _PLACEHOLDER_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
