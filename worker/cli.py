"""The command line: ``worker run | provision | publish | demo``.

Exit codes: 0 done; 1 could not start or failed (one line says why); 2 bad configuration or usage
(one line per problem); 128 + the signal number when a second signal forces an immediate exit.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog

from worker import dlq_cli
from worker._version import __version__
from worker.config import HandlerType, LogFormat, LogLevel, Settings, load_settings
from worker.errors import ConfigurationError, StartupError
from worker.logs import configure_logging
from worker.publish import Event, parse_attribute, read_lines

log = structlog.get_logger("worker.cli")

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file of settings (WORKER_CONFIG_FILE)")
    parser.add_argument("--queue", help="queue URL or name (WORKER_QUEUE_URL / WORKER_QUEUE_NAME)")
    parser.add_argument("--endpoint-url", help="SQS/SNS endpoint, e.g. a local emulator")
    parser.add_argument("--region", help="AWS region (AWS_REGION)")
    parser.add_argument("--log-level", choices=[level.value for level in LogLevel])
    parser.add_argument("--log-format", choices=[fmt.value for fmt in LogFormat])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="worker", description="Consume an SNS-subscribed SQS queue with your handler."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="consume the queue (the service)")
    _common(run)
    run.add_argument(
        "--handler", help="package.module:function, or Lambda's module.function (WORKER_HANDLER)"
    )
    run.add_argument("--handler-type", choices=[t.value for t in HandlerType])
    run.add_argument("--concurrency", type=int, help="handlers running at once")
    run.add_argument("--batch-size", type=int, help="records per Lambda invocation")
    run.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit 0 once nothing has arrived for SECONDS and nothing is in flight",
    )

    prov = commands.add_parser("provision", help="create or check topic, queue, DLQ, subscription")
    _common(prov)
    prov.add_argument("--topic", help="topic name (default: the queue's name)")
    prov.add_argument("--dlq", help="DLQ name (default: <queue>-dlq)")
    prov.add_argument("--max-receive-count", type=int, help="receives before the DLQ (default 5)")
    prov.add_argument("--visibility-timeout", type=int, help="queue visibility timeout (s)")
    prov.add_argument(
        "--raw-delivery",
        action="store_true",
        default=None,
        help="subscribe with RawMessageDelivery",
    )
    prov.add_argument("--filter-policy", help="subscription filter policy (JSON)")
    prov.add_argument(
        "--fifo",
        action="store_true",
        default=None,
        help="FIFO topic, queue and DLQ (names get .fifo)",
    )
    prov.add_argument(
        "--content-based-deduplication",
        action="store_true",
        default=None,
        help="FIFO: deduplicate by content instead of by deduplication id",
    )

    pub = commands.add_parser("publish", help="publish events to the topic")
    _common(pub)
    pub.add_argument("messages", nargs="*", help="message bodies")
    pub.add_argument("--topic", help="topic name or ARN")
    pub.add_argument("--file", help="JSON lines to publish, one message a line ('-' for stdin)")
    pub.add_argument(
        "--attribute",
        action="append",
        default=[],
        metavar="NAME[:TYPE]=VALUE",
        help="message attribute (repeatable; TYPE is String, Number or Binary)",
    )
    pub.add_argument("--subject", help="SNS subject")
    pub.add_argument("--group-id", help="FIFO topics: the MessageGroupId")
    pub.add_argument(
        "--dedup-id",
        help="FIFO topics: the MessageDeduplicationId (several messages get -1, -2, ...)",
    )

    demo = commands.add_parser(
        "demo", help="run the whole path on the embedded local broker (or WORKER_ENDPOINT_URL)"
    )
    _common(demo)

    dlq_cli.add_commands(commands, _common)

    check = commands.add_parser(
        "healthcheck", help="exit 0 if the worker's /healthz passes, 1 otherwise"
    )
    check.add_argument("--config", type=Path, help="TOML file of settings (WORKER_CONFIG_FILE)")
    check.add_argument("--url", help="default: http://127.0.0.1:$WORKER_HTTP_PORT/healthz")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    return parser


def _not_a_health_url(url: str) -> str | None:
    """Why ``url`` cannot be asked for health, or ``None`` if it can."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        return str(exc)
    if scheme not in {"http", "https"}:
        # urlopen would also read file: and ftp: URLs; a health check asks only the worker.
        return "not an http:// or https:// URL"
    return None


def _local_address(listening_on: str) -> str:
    """Where this container reaches a server listening on ``listening_on``, as a URL's host.

    The wildcards are reached on the loopback of their family (``::`` may be IPv6-only);
    IPv6 addresses are bracketed.
    """
    host = listening_on.removeprefix("[").removesuffix("]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return f"[{host}]" if ":" in host else host


def healthcheck(args: argparse.Namespace) -> int:
    """Ask the worker's ``/healthz``; 0 if it passes, 1 for anything else.

    For container health checks (Docker's HEALTHCHECK, ECS) in images without curl. Every
    failure is 1, bad configuration included: to a health check, 2 means something else.
    """
    url = args.url
    if url is None:
        try:
            settings = load_settings(config_file=args.config)
        except ConfigurationError as exc:
            print(f"worker: healthcheck: {exc}", file=sys.stderr)
            return EXIT_FAILED
        url = f"http://{_local_address(settings.http_host)}:{settings.http_port}/healthz"
    problem = _not_a_health_url(url)
    if problem:
        print(f"worker: healthcheck: --url {url}: {problem}", file=sys.stderr)
        return EXIT_FAILED
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310 -- http(s)
            print(response.read().decode("utf-8", "replace").strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode("utf-8", "replace").strip())
        return EXIT_FAILED
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        # ValueError and InvalidURL: a URL that cannot be asked (no host, a port that is not a
        # number); HTTPException: an answer that is not HTTP.
        reason = getattr(exc, "reason", exc)
        print(f"worker: healthcheck: cannot reach {url}: {reason}", file=sys.stderr)
        return EXIT_FAILED


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    if args.queue:
        key = "queue_url" if args.queue.startswith(("http://", "https://")) else "queue_name"
        values[key] = args.queue
    for name in (
        "handler",
        "handler_type",
        "concurrency",
        "batch_size",
        "exit_when_idle",
        "max_receive_count",
        "visibility_timeout",
        "filter_policy",
        "fifo",
        "content_based_deduplication",
    ):
        values[name] = getattr(args, name, None)
    values["raw_message_delivery"] = getattr(args, "raw_delivery", None)
    values["dlq_name"] = getattr(args, "dlq", None)
    topic = getattr(args, "topic", None)
    if topic:
        values["topic_arn" if topic.startswith("arn:") else "topic_name"] = topic
    return values


class _Signals:
    """First SIGTERM/SIGINT: graceful stop. Second: exit at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._stop: Callable[[str], None] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, self._on_signal, number)

    def attach(self, stop: Callable[[str], None]) -> None:
        self._stop = stop
        if self.received:  # a signal came while starting up
            stop(self.received)

    def _on_signal(self, number: int) -> None:
        name = signal.Signals(number).name
        if self.received is not None:
            log.warning("worker.forced_exit", signal=name)
            sys.stderr.flush()
            os._exit(128 + number)
        self.received = name
        if self._stop is not None:
            self._stop(name)


async def _run(settings: Settings, _: argparse.Namespace) -> int:
    from worker.worker import serve  # noqa: PLC0415 -- keeps `worker --help` light

    signals = _Signals()
    signals.install(asyncio.get_running_loop())
    report = await serve(settings, on_started=lambda worker: signals.attach(worker.stop))
    if report.threads_left_running:
        # Handler threads that never returned would keep the interpreter from exiting.
        log.warning("worker.threads_left_running", threads=report.threads_left_running)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


async def _provision(settings: Settings, _: argparse.Namespace) -> int:
    from worker.provision import provision  # noqa: PLC0415

    result = await provision(settings)
    print("\n".join(result.lines()))
    return 0


def _events(args: argparse.Namespace) -> list[Event]:
    bodies = list(args.messages)
    if args.file == "-":
        bodies.extend(read_lines(sys.stdin))
    elif args.file:
        try:
            with Path(args.file).open(encoding="utf-8") as lines:
                bodies.extend(read_lines(lines))
        except OSError as exc:
            raise ConfigurationError([f"--file {args.file}: {exc.strerror}"]) from None
    if not bodies:
        raise ConfigurationError(["nothing to publish: give messages, or --file"])
    attributes = dict(parse_attribute(text) for text in args.attribute) or None

    def dedup(index: int) -> str | None:
        if args.dedup_id is None or len(bodies) == 1:
            return args.dedup_id  # type: ignore[no-any-return]
        return f"{args.dedup_id}-{index + 1}"

    return [
        Event(
            body=body,
            attributes=attributes,
            subject=args.subject,
            group_id=args.group_id,
            deduplication_id=dedup(index),
        )
        for index, body in enumerate(bodies)
    ]


async def _publish(settings: Settings, args: argparse.Namespace) -> int:
    from worker.publish import publish  # noqa: PLC0415

    ids = await publish(settings, args.events)
    print(f"published {len(ids)} messages")
    return 0


async def _demo(settings: Settings, _: argparse.Namespace) -> int:
    from worker.demo import run_demo  # noqa: PLC0415

    return await run_demo(settings, sys.stdout)


async def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    return await dlq_cli.run(settings, args)


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": _run,
    "provision": _provision,
    "publish": _publish,
    "demo": _demo,
    "dlq": _dlq,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "healthcheck":
        return healthcheck(args)
    try:
        settings = load_settings(config_file=args.config, overrides=_overrides(args))
        if args.command == "publish":
            args.events = _events(args)
        configure_logging(settings.log_level, settings.log_format)
        return asyncio.run(_COMMANDS[args.command](settings, args))
    except ConfigurationError as exc:
        for problem in exc.problems:
            print(f"worker: configuration error: {problem}", file=sys.stderr)
        return EXIT_CONFIGURATION
    except StartupError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
