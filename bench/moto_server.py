"""A moto server for the benchmarks: receives that do not rescan the queue, and no lost updates.

``python -m bench.moto_server -p PORT [-H HOST] [--no-patch] [--keep-alive]`` runs moto's
server after patching four functions of ``moto.sqs.models``, in this process only. The worker
never sees this module: it is the benchmark harness's broker, nothing else.

With ``--keep-alive`` moto's WSGI application (the very one ``moto.server`` serves) runs under
waitress instead of werkzeug's development server. Werkzeug's server answers every request with
``Connection: close``, so every SQS call of a client opens a new TCP connection: on this kind of
machine that is about a third of the client's CPU per call, paid alike by the worker and the
ceiling, and not something a consumer of real SQS pays (its endpoints keep HTTP/1.1
connections alive, and botocore reuses them). Waitress keeps connections alive; what moto
answers is the same.

Why. Stock moto 5.2's ``SQSBackend.receive_message`` makes each receive cost grow with the backlog,
for two reasons:

1. For **every message it hands out** it calls ``is_message_valid_based_on_retention_period``,
   which asks ``get_queue_attributes(queue, ["MessageRetentionPeriod"])``. That builds the queue's
   whole ``attributes`` dict three times over, and each build counts
   ``ApproximateNumberOfMessages``, ``…NotVisible`` and ``…Delayed`` by scanning every message in
   the queue: nine full scans per message received.
2. Each of those scans asks ``Message.visible`` and ``Message.delayed``, which call
   ``moto.core.utils.unix_time_millis()``; that builds two ``datetime`` objects (now and the
   epoch) and subtracts them, for every message of the queue, on every check.

On a 2-core machine that is about 0.5 s per 10-message receive with 1,000 messages queued, and
about 5 s with 10,000: the benchmark would measure moto's scans, not the worker.

The patch (``apply()``):

1. ``SQSBackend.is_message_valid_based_on_retention_period`` reads the retention period straight
   from the queue (``queue.message_retention_period``, the very value ``get_queue_attributes``
   returns for that name: an ``int`` set by ``Queue._set_attributes``) and compares it with the
   message's age exactly as the original does. ``get_queue`` still raises ``QueueDoesNotExist``
   for an unknown queue, as before.
2. ``unix_time`` and ``unix_time_millis`` as seen by ``moto.sqs.models`` return ``time.time()``
   (and x 1000) when called without an argument. The original computes ``utcnow() - epoch``, i.e.
   the same POSIX time at microsecond resolution; with an argument the original is called.
3. ``Queue.delete_message`` stops scanning at the message it deletes. Stock moto scans every
   message of the queue twice per delete (once to check that the receipt handle is known, once
   to rebuild the list without it), so a delete costs in proportion to everything queued *and
   in flight*: a consumer with 50 messages in hand paid about 15% more broker CPU per message
   than one with 10, for a cost that SQS does not have. The message deleted is near the front
   (receives hand out the oldest first); the list is rebuilt from two slices. The outcome is the
   same: the message and its receipt handles are gone, a handle deleted before is accepted
   again, an unknown one raises ``ReceiptHandleIsInvalid``.
4. ``Queue.delete_message`` and ``SQSBackend.receive_message`` run under the queue's own lock
   (``Queue._messages_lock``, which ``add_message`` already takes to append, and whose condition
   a long poll already waits on, releasing it meanwhile). Stock moto takes no lock there, and
   its server runs a thread per request. Two concurrent deletes (or a delete and a send) each
   rebuild the message list from the same old one and the later assignment wins: a deleted
   message comes back, or a message just sent disappears. Two concurrent receives each pick the
   same visible message before either marks it received: one message, two deliveries. The
   benchmarks receive and delete from several pollers at once and saw both (10 to 70 of 10,000
   messages left on the queue although each was received and deleted once; a message delivered
   twice within its visibility timeout). These are thread-safety fixes: each call does what it
   did, one at a time per queue.

What receives, deletes, visibility, redrive to a DLQ, FIFO groups, retention and long polls do
is unchanged: the same code runs with the same values (and the delete, rewritten, has the same
outcome), only without the needless scans and datetimes, and without the lost updates. What
stays proportional to the backlog (``Queue.messages`` still filters every message once per
receive loop) is kept small by the harness, which feeds the queue as it drains instead of
filling it up front.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Any


def apply() -> None:
    """Patch ``moto.sqs.models`` in this process (see the module's docstring)."""
    # Imported here, in the moto server's process only; typed loosely: these are moto's internals.
    models: Any = importlib.import_module("moto.sqs.models")

    original_unix_time = models.unix_time
    original_unix_time_millis = models.unix_time_millis

    def unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else float(original_unix_time(dt))

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else float(original_unix_time_millis(dt))

    def is_message_valid_based_on_retention_period(
        self: Any, queue_name: str, message: Any
    ) -> bool:
        retention_period = self.get_queue(queue_name).message_retention_period
        retain_until = retention_period + message.sent_timestamp / 1000
        return not retain_until <= unix_time()

    models.unix_time = unix_time
    models.unix_time_millis = unix_time_millis
    models.SQSBackend.is_message_valid_based_on_retention_period = (
        is_message_valid_based_on_retention_period
    )

    def delete_message(self: Any, receipt_handle: str) -> None:
        # The lock add_message already takes (a re-entrant one). Stock moto scans the whole
        # queue twice per delete (is the handle known? then a rebuild without the message);
        # this stops at the message, which is near the front (receives take the oldest), and
        # rebuilds the list with C slices. Same outcome, same error for an unknown handle.
        with self._messages_lock:
            if receipt_handle in self.deleted_messages:
                return  # already deleted: accepted again, as stock moto does
            messages = self._messages
            for index, message in enumerate(messages):  # noqa: B007 -- used after the loop
                if message.had_receipt_handle(receipt_handle):
                    break
            else:
                raise models.ReceiptHandleIsInvalid()
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            self._messages = messages[:index] + messages[index + 1 :]

    models.Queue.delete_message = delete_message

    original_receive = models.SQSBackend.receive_message

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        # A long poll waits on this lock's condition, which releases it while waiting.
        with self.get_queue(queue_name)._messages_lock:
            return original_receive(self, queue_name, *args, **kwargs)

    models.SQSBackend.receive_message = receive_message


def serve_keep_alive(host: str, port: int) -> None:
    """Serve moto's application under waitress: HTTP/1.1 connections kept alive.

    Threads enough for every long poll the benchmarks hold open at once (a long poll holds its
    thread while it waits, as it does under werkzeug's server).
    """
    # The bench extra; only this mode needs it (and it has no type hints).
    waitress: Any = importlib.import_module("waitress")
    app: Any = importlib.import_module("moto.moto_server.werkzeug_app")

    application = app.DomainDispatcherApplication(app.create_backend_app)
    waitress.serve(application, host=host, port=port, threads=64, _quiet=True)


def main(argv: list[str] | None = None) -> None:
    """Patch (unless ``--no-patch``), then run moto's server with the remaining arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-patch", action="store_true", help="stock moto, for comparison")
    parser.add_argument("--keep-alive", action="store_true", help="serve under waitress")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    if not args.no_patch:
        apply()
    if args.keep_alive:
        serve_keep_alive(args.host, args.port)
        return
    from moto.server import main as moto_main  # noqa: PLC0415

    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main(sys.argv[1:])
