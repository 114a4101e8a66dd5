"""The local mode: a moto server inside this process, for ``worker demo`` and ``worker local``.

It needs the ``local`` extra (``pip install 'sqs-event-worker[local]'``). The server lives in a
daemon thread, so it ends with the process even if the process is killed: nothing is left running.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from worker.errors import StartupError

# moto accepts any credentials, but botocore refuses to sign a request without some.
_PLACEHOLDER_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
}
DEFAULT_PORT = 4566  # where local AWS endpoints usually are (LocalStack's)
DEFAULT_REGION = "us-east-1"


def shell_environment(endpoint_url: str, region: str | None = None) -> dict[str, str]:
    """What another shell exports to use the broker: its endpoint, a region and credentials."""
    return {
        "WORKER_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region or DEFAULT_REGION,
        **_PLACEHOLDER_CREDENTIALS,
    }


def _refuse_a_taken_port(host: str, port: int) -> None:
    """moto's server thread would die on a taken port and leave its caller waiting forever."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port"
            ) from None


@contextmanager
def embedded_broker(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start an in-process moto server (on a free port unless ``port``); yield its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 -- an optional extra
    except ImportError:
        raise StartupError(
            "the local mode needs moto: pip install 'sqs-event-worker[local]'"
        ) from None
    if port:
        _refuse_a_taken_port(host, port)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    for name, value in _PLACEHOLDER_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        server.stop()
