"""A moto server for the benchmarks: receives that do not rescan the queue, and no lost updates.

``python -m bench.moto_server -p PORT [-H HOST] [--no-patch] [--keep-alive]`` runs moto's
server after patching ``moto.sqs.models``, in this process only: the local broker's patch
(``worker.ops.local``) and four of its own that make moto cheaper to run without changing what it
answers. The worker's consume path never sees this module: it is the benchmark harness's broker.

With ``--keep-alive`` moto's WSGI application (the very one ``moto.server`` serves) runs under
waitress instead of werkzeug's development server. Werkzeug's server answers every request with
``Connection: close``, so every SQS call of a client opens a new TCP connection: on this kind of
machine that is about a third of the client's CPU per call, paid alike by the worker and the
ceiling, and not something a consumer of real SQS pays (its endpoints keep HTTP/1.1
connections alive, and botocore reuses them). Waitress keeps connections alive; what moto
answers is the same. Under waitress the application is wrapped in :class:`CallCosts`, which
counts the CPU time moto spends on each kind of call, so that the harness can say where the
broker's time goes.

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
4. The local broker's own patch (``worker.ops.local.patch_moto``, documented there), which the
   worker's embedded broker and the tests run too: receives, deletes and visibility changes one
   at a time per queue, under the queue's lock (stock moto takes none, and its server runs a
   thread per request: the benchmarks, receiving and deleting from several pollers at once, saw
   10 to 70 of 10,000 messages left on the queue although each was received and deleted once,
   and messages delivered twice within their visibility timeout), and FIFO long polls that serve
   a group as soon as it unlocks. The delete of 3 runs under that patch's lock.
5. ``SQSBackend.get_queue_attributes`` builds the queue's attribute dict once per call. Stock
   moto builds it three times for each name asked for (is the name there? is its value None?
   the value), and each build scans the queue three times to count it: a read of the two
   message counts cost ~3 ms of broker CPU at 300 messages queued. The harness reads them every
   few tens of milliseconds to keep the backlog topped up, so a slower consumer's run paid for
   more reads per message, and the broker's CPU per message measured the harness as much as the
   consumer. Same names, values, order and errors (checked against the original for every kind
   of name, FIFO and standard queues, and an unknown queue).

What receives, deletes, visibility, redrive to a DLQ, FIFO groups and retention do is unchanged:
the same code runs with the same values (and the delete, rewritten, has the same outcome), only
without the needless scans and datetimes, and without the lost updates. What
stays proportional to the backlog (``Queue.messages`` still filters every message once per
receive loop) is kept small by the harness, which feeds the queue as it drains instead of
filling it up front.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from typing import Any

from worker.ops.local import patch_moto


def apply() -> None:
    """Patch ``moto.sqs.models`` in this process (see the module's docstring)."""
    _patch_costs()
    patch_moto()  # after the delete of patch 3, which it wraps in the queue's lock


def _patch_costs() -> None:
    """Patches 1, 2, 3 and 5 of the module's docstring: the same answers, fewer scans."""
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
        # Stock moto scans the whole queue twice per delete (is the handle known? then a
        # rebuild without the message); this stops at the message, which is near the front
        # (receives take the oldest), and rebuilds the list with C slices. Same outcome, same
        # error for an unknown handle. patch_moto runs it under the queue's lock.
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
    _patch_attribute_reads(models)


def _patch_attribute_reads(models: Any) -> None:
    """Patch 5 of the module's docstring: one attribute build per GetQueueAttributes."""

    def get_queue_attributes(self: Any, queue_name: str, attribute_names: list[str]) -> Any:
        # Stock moto builds the queue's whole attribute dict three times per name asked for
        # (a membership test, a None test, the value), each build scanning the queue three
        # times to count it. One build per call; the same names, values and errors.
        queue = self.get_queue(queue_name)
        if not attribute_names:
            return {}
        valid_names = ["All", *queue.BASE_ATTRIBUTES, *queue.FIFO_ATTRIBUTES, *queue.KMS_ATTRIBUTES]
        invalid_name = next((name for name in attribute_names if name not in valid_names), None)
        if invalid_name or invalid_name == "":
            raise models.InvalidAttributeName(invalid_name)
        everything = queue.attributes
        if "All" in attribute_names:
            return everything
        return {
            name: everything[name]
            for name in attribute_names
            if name in everything and everything[name] is not None
        }

    models.SQSBackend.get_queue_attributes = get_queue_attributes


class CallCosts:
    """WSGI middleware: the CPU time moto's serving threads spend per SQS call, by call.

    ``GET /_bench/calls`` answers ``{action: [calls, cpu_seconds]}`` since start; the harness
    reads it before and after a run. The CPU is the serving thread's own
    (``time.thread_time``) from the request to the end of the response, so what the process
    spends besides (the HTTP server's I/O loop, the interpreter) is the rest of its CPU time.
    It costs two clock reads and a lock per call.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._costs: dict[str, list[float]] = {}

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/_bench/calls":
            with self._lock:
                body = json.dumps(self._costs).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        # The JSON protocol names the call in X-Amz-Target ("AmazonSQS.ReceiveMessage").
        action = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2] or "other"
        started = time.thread_time()
        response = list(self._app(environ, start_response))
        spent = time.thread_time() - started
        with self._lock:
            row = self._costs.setdefault(action, [0, 0.0])
            row[0] += 1
            row[1] += spent
        return response


def serve_keep_alive(host: str, port: int) -> None:
    """Serve moto's application under waitress: HTTP/1.1 connections kept alive.

    Threads enough for every long poll the benchmarks hold open at once (a long poll holds its
    thread while it waits, as it does under werkzeug's server).
    """
    # The bench extra; only this mode needs it (and it has no type hints).
    waitress: Any = importlib.import_module("waitress")
    app: Any = importlib.import_module("moto.moto_server.werkzeug_app")

    application = CallCosts(app.DomainDispatcherApplication(app.create_backend_app))
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
