"""The local broker: moto's SQS and SNS, made to behave as SQS does where the worker depends on it.

``worker demo`` and ``worker local`` start it in-process (:func:`embedded_broker`, a moto server
on loopback in a daemon thread, so that it ends with the process even if the process is
killed). ``python -m worker.ops.local [-H HOST] [-p PORT]`` runs it as a server of its own; the
tests
use that one where they count deliveries exactly. It needs the ``local`` extra
(``pip install 'sqs-event-worker[local]'``).

Stock moto 5.2 differs from SQS in three ways that a consumer sees, and :func:`patch_moto` mends
them (in this process only, on its first call; the consume path never imports this module):

1. **Receives and deletes are not atomic.** moto's server runs a thread per request, and its
   ``receive_message`` takes no lock: two concurrent receives each pick the same visible message
   before either marks it received (one message, two deliveries within its visibility timeout;
   of a FIFO queue, two messages of one group at once), and two concurrent deletes (or a delete
   and a send) each rebuild the queue's message list from the same old one, so that a deleted
   message comes back or a message just sent disappears. Here receives, deletes and visibility
   changes run under the queue's own lock (``Queue._messages_lock``, the condition that moto's
   ``add_message`` already takes to append and notify), one at a time per queue.
2. **A FIFO long poll does not see a group unlock.** moto reads the set of message groups in
   flight once, when a long poll starts, and skips their messages until the poll ends: a
   message of a group whose previous message is deleted during the poll is served up to
   ``WaitTimeSeconds`` (20 s) late. Worse, its wait returns at once while any message is visible,
   so a poll over a locked group spins for its whole length. SQS serves the group's next
   message as soon as the group unlocks. Here a long poll is a series of single passes of moto's
   own receive (each reading the groups in flight afresh), and between passes it waits on the
   queue's condition, which a send, a delete or a visibility change notifies, for no longer than
   until the next in-flight or delayed message becomes visible by itself.

3. **A Binary attribute through SNS with raw delivery breaks the queue's receives.** SNS hands
   the attribute's value on as the base64 text it holds, and moto's SQS, which keeps binary
   values as bytes, fails computing the attributes' MD5 on every receive that returns the
   message (HTTP 500): that message, and every message received with it, is never delivered.
   Here such a value is decoded to its bytes as it is sent to the queue, as SQS holds it.

What a receive returns, and how visibility, receive counts, redrive to a DLQ, FIFO groups,
retention and deduplication work, is moto's own code: each pass is moto's receive with no wait.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from worker.errors import StartupError

# moto accepts any credentials, but botocore refuses to sign a request without some.
_PLACEHOLDER_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
}

DEFAULT_PORT = 4566  # where local AWS endpoints usually are (LocalStack's)
DEFAULT_REGION = "us-east-1"

_patch_lock = threading.Lock()
_patched = False


def patch_moto() -> None:
    """Make moto's SQS atomic per queue and its FIFO long polls prompt (see the module's doc).

    Idempotent. Raises :class:`StartupError` if moto is not installed.
    """
    global _patched  # noqa: PLW0603 -- moto's classes are process-wide: so is the patch
    with _patch_lock:
        if _patched:
            return
        try:
            # moto's internals, typed loosely; imported here: moto is an optional extra.
            models: Any = importlib.import_module("moto.sqs.models")
        except ImportError:
            raise StartupError(
                "the embedded local mode needs moto: pip install 'sqs-event-worker[local]'"
            ) from None
        _atomic_deletes_and_visibility(models)
        _prompt_receives(models)
        _binary_values_as_bytes(models)
        _patched = True


def _binary_values_as_bytes(models: Any) -> None:
    """Binary attribute values sent as base64 text (SNS's raw delivery) held as bytes."""
    original_send = models.SQSBackend.send_message

    def send_message(
        self: Any, queue_name: str, message_body: str, *args: Any, **kwargs: Any
    ) -> Any:
        attributes = kwargs.get("message_attributes")
        if attributes is None and args:
            attributes = args[0]
        for value in (attributes or {}).values():
            binary = value.get("BinaryValue")
            if isinstance(binary, str):
                value["BinaryValue"] = base64.b64decode(binary)
        return original_send(self, queue_name, message_body, *args, **kwargs)

    models.SQSBackend.send_message = send_message


def _atomic_deletes_and_visibility(models: Any) -> None:
    """Deletes and visibility changes under the queue's lock, and waking the long polls."""
    original_delete = models.Queue.delete_message

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            original_delete(self, receipt_handle)
            self._messages_lock.notify_all()  # the message's group may have unlocked

    original_change = models.SQSBackend.change_message_visibility

    def change_message_visibility(
        self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        lock = self.get_queue(queue_name)._messages_lock
        with lock:
            original_change(self, queue_name, receipt_handle, visibility_timeout)
            lock.notify_all()  # the message may be visible now, and its group unlocked

    models.Queue.delete_message = delete_message
    models.SQSBackend.change_message_visibility = change_message_visibility


def _prompt_receives(models: Any) -> None:
    """A receive is single passes of moto's own, under the queue's lock, with waits between."""
    original_receive = models.SQSBackend.receive_message

    def receive_message(  # noqa: PLR0917 -- the signature of the moto method it replaces
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        queue = self.get_queue(queue_name)
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        with queue._messages_lock:
            while True:
                result = original_receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
                remaining = deadline - time.monotonic()
                if result or remaining <= 0:
                    return result
                # wait() releases the lock: sends, deletes and visibility changes go on.
                queue._messages_lock.wait(min(remaining, _until_next_visible(queue)))

    models.SQSBackend.receive_message = receive_message


def _until_next_visible(queue: Any) -> float:
    """Seconds until the next in-flight or delayed message of ``queue`` becomes visible."""
    now_ms = time.time() * 1000.0
    upcoming = [
        moment
        for message in queue._messages
        if (moment := float(max(message.visible_at, message.delayed_until))) > now_ms
    ]
    if not upcoming:
        return float("inf")
    # moto's visibility test is strict (now > visible_at): wake just after the moment.
    return (min(upcoming) - now_ms) / 1000.0 + 0.005


def shell_environment(endpoint_url: str, region: str | None = None) -> dict[str, str]:
    """What another shell exports to use the broker: its endpoint, a region and credentials."""
    return {
        "WORKER_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region or DEFAULT_REGION,
        **_PLACEHOLDER_CREDENTIALS,
    }


def _refuse_a_taken_port(host: str, port: int) -> None:
    """moto's server thread would die on a taken port and leave its caller waiting forever.

    The probe binds as the server will, with SO_REUSEADDR: a port whose last connections
    linger in TIME_WAIT (``worker local`` stopped a moment ago) is free to listen on.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port"
            ) from None


@contextmanager
def embedded_broker(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start the local broker in-process (on a free port unless ``port``); yield its URL."""
    patch_moto()
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 -- an optional extra

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


def main(argv: list[str] | None = None) -> None:
    """Run the local broker as a server of its own (moto's server, patched)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "The local broker.").splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    patch_moto()
    from moto.server import main as moto_main  # noqa: PLC0415 -- an optional extra

    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main(sys.argv[1:])
