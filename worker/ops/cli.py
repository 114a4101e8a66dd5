"""The command line: ``worker run | provision | publish | demo | local | invoke | dlq | ...``.

Exit codes: 0 done; 1 could not start or failed (one line says why); 2 bad configuration or usage
(one line per problem); 128 + the signal number when a second signal forces an immediate exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from worker._version import __version__
from worker.config import (
    CLEARED,
    HANDLER_FORMS,
    HandlerType,
    LogFormat,
    LogLevel,
    Requirement,
    Settings,
    load_settings,
)
from worker.errors import ConfigurationError, StartupError
from worker.logs import configure_logging
from worker.ops.cli_help import HelpFormatter, command, option, setting

if TYPE_CHECKING:
    from worker.ops.publish import Event

log = structlog.get_logger("worker.ops.cli")

EXIT_FAILED = 1
EXIT_CONFIGURATION = 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file of settings (WORKER_CONFIG_FILE; default: none)",
    )
    parser.add_argument(
        "--queue",
        help="queue URL or name (WORKER_QUEUE_URL or WORKER_QUEUE_NAME; default: none)",
    )
    parser.add_argument(
        "--endpoint-url",
        metavar="URL",
        help=setting("SQS and SNS endpoint, e.g. worker local's", "endpoint_url", default="AWS"),
    )
    parser.add_argument(
        "--region",
        help=setting("AWS region", "region", default="AWS_REGION, or the queue URL's"),
    )
    _log_flags(parser)


def _log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        choices=[level.value for level in LogLevel],
        help=setting("least severe log level written", "log_level"),
    )
    parser.add_argument(
        "--log-format",
        choices=[fmt.value for fmt in LogFormat],
        help=setting("log lines on stderr; auto: console on a terminal", "log_format"),
    )


def _handler_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--handler",
        metavar="NAME",
        help=setting("package.module:function, or Lambda's module.function", "handler"),
    )
    parser.add_argument(
        "--handler-type",
        choices=[t.value for t in HandlerType],
        help=setting("how the handler is called", "handler_type"),
    )
    parser.add_argument(
        "--handler-path",
        type=Path,
        metavar="DIR",
        help=setting(
            "directory to import the handler from", "handler_path", default="the current one"
        ),
    )


def _invoke_common(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _handler_flags(parser)


def _json_flag(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=option(f"print {what} as JSON", False))


def _run_command(commands: Any) -> None:
    run = command(
        commands,
        "run",
        summary="consume the queue with your handler (the service)",
        description="Consume the queue: receive, run the handler, extend visibility, delete or "
        "retry, until SIGTERM or Ctrl-C (a second one exits at once), or until idle with "
        "--exit-when-idle.",
        examples=[
            "worker run --queue orders --handler myhandlers:handle",
            "worker run --queue orders --handler app.handler --handler-type lambda",
            "worker run --queue orders-dlq --handler orders.reprocess:handle --exit-when-idle 30",
        ],
    )
    _common(run)
    _handler_flags(run)
    run.add_argument(
        "--concurrency", type=int, help=setting("handler calls running at once", "concurrency")
    )
    run.add_argument(
        "--batch-size", type=int, help=setting("records per Lambda invocation", "batch_size")
    )
    run.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help=setting(
            "exit 0 once nothing has arrived for SECONDS, nothing is in flight and no message "
            "is visible",
            "exit_when_idle",
        ),
    )


def _provision_command(commands: Any) -> None:
    prov = command(
        commands,
        "provision",
        summary="create or check the topic, the queue, its DLQ and the subscription",
        description="Create what is missing and bring what exists in line: the SNS topic, the "
        "queue with its RedrivePolicy, the DLQ, the subscription and a queue policy that lets "
        "only the topic send. Each step says created, updated (and how) or unchanged.",
        examples=[
            "worker provision --queue orders",
            "worker provision --queue orders --max-receive-count 3 --dry-run",
            "worker provision --queue orders.fifo --fifo --json",
        ],
    )
    _common(prov)
    prov.add_argument(
        "--topic",
        help="topic name, or ARN in this account and region (WORKER_TOPIC_NAME or "
        "WORKER_TOPIC_ARN; default: the queue's name)",
    )
    prov.add_argument("--dlq", help=setting("DLQ name", "dlq_name", default="<queue>-dlq"))
    prov.add_argument(
        "--max-receive-count",
        type=int,
        help=setting("receives before the DLQ", "max_receive_count"),
    )
    prov.add_argument(
        "--visibility-timeout",
        type=int,
        metavar="SECONDS",
        help=setting(
            "queue visibility timeout",
            "visibility_timeout",
            default="30 for a new queue, an existing one's kept",
        ),
    )
    prov.add_argument(
        "--raw-delivery",
        action="store_true",
        default=None,
        help=setting("subscribe with RawMessageDelivery", "raw_message_delivery"),
    )
    prov.add_argument(
        "--filter-policy",
        metavar="JSON",
        help=setting("subscription filter policy", "filter_policy"),
    )
    prov.add_argument(
        "--fifo",
        action="store_true",
        default=None,
        help=setting("FIFO topic, queue and DLQ (names get .fifo)", "fifo"),
    )
    prov.add_argument(
        "--content-based-deduplication",
        action="store_true",
        default=None,
        help=setting(
            "FIFO: deduplicate by content instead of by deduplication id",
            "content_based_deduplication",
        ),
    )
    prov.add_argument(
        "--dry-run",
        action="store_true",
        help=option("say what would change; change nothing", False),
    )
    _json_flag(prov, "the steps and resources")


def _publish_command(commands: Any) -> None:
    pub = command(
        commands,
        "publish",
        summary="publish events to the topic",
        description="Publish messages to the SNS topic, in batches of at most ten and 256 KiB, "
        "and print their message ids. Bodies come from the arguments, from --file (JSON lines, "
        "one message a line), or from stdin: a BODY of '-', --file -, or no BODY and no --file "
        "when stdin is not a terminal. Exits 1 if any message "
        "was not published, after naming each one by its position (1 for the first).",
        examples=[
            'worker publish --queue orders \'{"order_id": "o-1", "amount": 5}\'',
            "worker publish --queue orders --attribute source=shop --file orders.jsonl",
            "jq -c '.[]' orders.json | worker publish --queue orders --json",
        ],
    )
    _common(pub)
    pub.add_argument(
        "messages", nargs="*", metavar="BODY", help="message bodies; '-' for stdin's lines"
    )
    pub.add_argument(
        "--topic",
        help="topic name or ARN (WORKER_TOPIC_NAME or WORKER_TOPIC_ARN; default: the queue's name)",
    )
    pub.add_argument(
        "--file",
        metavar="PATH",
        help=option("JSON lines to publish, one message a line; '-' for stdin"),
    )
    pub.add_argument(
        "--attribute",
        action="append",
        default=[],
        metavar="NAME[:TYPE]=VALUE",
        help=option("message attribute, repeatable; TYPE is String, Number or Binary (base64)"),
    )
    pub.add_argument("--subject", help=option("SNS subject"))
    pub.add_argument("--group-id", help=option("FIFO topics: the MessageGroupId"))
    pub.add_argument(
        "--dedup-id",
        help=option("FIFO topics: the MessageDeduplicationId (several messages get -1, -2, ...)"),
    )
    _json_flag(pub, "the message ids")


_MOST_SECONDS = 86_400.0  # a socket's timeout past the platform's time_t is an OverflowError


def _seconds(text: str) -> float:
    """A duration: a number of seconds above 0 and at most a day (``float`` takes "inf",
    "nan" and 1e10 too, which a socket's timeout cannot be)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= _MOST_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {_MOST_SECONDS:g}"
        )
    return seconds


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return port


def _local_command(commands: Any) -> None:
    from worker.ops.local import DEFAULT_PORT  # noqa: PLC0415 -- see build_parser

    local = command(
        commands,
        "local",
        summary="serve a local SQS and SNS (moto) until Ctrl-C, to try the other commands on",
        description="Serve SQS and SNS on this machine (moto, from the local extra) until "
        "Ctrl-C, and print the line that points the other commands at it: its endpoint, a "
        "region and placeholder credentials. Nothing is kept when it stops.",
        examples=["worker local", "worker local --port 0 --json"],
    )
    local.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=option("port; 0: any free one", DEFAULT_PORT),
    )
    local.add_argument("--host", default="127.0.0.1", help=option("address", "127.0.0.1"))
    _json_flag(local, "the endpoint and variables")
    _log_flags(local)


def _healthcheck_command(commands: Any) -> None:
    check = command(
        commands,
        "healthcheck",
        summary="exit 0 if the worker's /healthz passes, 1 otherwise",
        description="Ask a running worker's /healthz, for container health checks in images "
        "without curl: prints its answer; exits 0 when it passes, 1 for anything else.",
        examples=["worker healthcheck", "worker healthcheck --url http://10.0.0.7:8080/healthz"],
    )
    check.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file of settings (WORKER_CONFIG_FILE; default: none)",
    )
    check.add_argument(
        "--url",
        help=option("what to ask", "http://127.0.0.1:$WORKER_HTTP_PORT/healthz"),
    )
    check.add_argument("--timeout", type=_seconds, default=5.0, help=option("seconds", 5))


def _demo_command(commands: Any) -> None:
    demo = command(
        commands,
        "demo",
        summary="run the whole path on the embedded local broker (or WORKER_ENDPOINT_URL's)",
        description="Provision, publish, consume, then the DLQ's redrive and reprocessing, on "
        "the local broker inside the process (moto, or WORKER_ENDPOINT_URL's); prints what "
        "became of each event and exits 0 when everything happened as expected.",
        examples=["worker demo"],
    )
    _common(demo)


def _invoke_command(commands: Any) -> None:
    from worker.ops import invoke_cli  # noqa: PLC0415 -- see build_parser

    invoke_cli.add_command(commands, _invoke_common)


def _dlq_command(commands: Any) -> None:
    from worker.ops import dlq_args  # noqa: PLC0415 -- see build_parser

    dlq_args.add_commands(commands, _common)


def _completion_command(commands: Any) -> None:
    from worker.ops import completion  # noqa: PLC0415 -- see build_parser

    completion.add_command(commands)


_PARSERS: dict[str, Callable[[Any], None]] = {  # in the order help lists them
    "run": _run_command,
    "provision": _provision_command,
    "publish": _publish_command,
    "demo": _demo_command,
    "local": _local_command,
    "invoke": _invoke_command,
    "dlq": _dlq_command,
    "healthcheck": _healthcheck_command,
    "completion": _completion_command,
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for every subcommand, or for the subcommand ``only`` alone.

    :func:`main` builds only the command its first argument names, so that ``worker run`` never
    imports the other commands' modules nor builds their parsers: about 0.15 MB that a worker
    would otherwise carry for all its life. A first argument that names no command (``--help``,
    a typo) gets every command, so that help and errors list them all.
    """
    parser = argparse.ArgumentParser(
        prog="worker",
        description="Consume an SNS-subscribed SQS queue with your handler.",
        epilog="examples:\n  worker demo\n  worker local\n  worker run --help",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add_command in _PARSERS.items():
        if only is None or name == only:
            add_command(commands)
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


def _one_of(value: str | None, prefixes: tuple[str, ...], names: tuple[str, str]) -> dict[str, Any]:
    """A flag that sets one of two settings sets the first where ``value`` starts with one of
    ``prefixes`` (``--queue`` a URL), the second otherwise (a name), and unsets the other one,
    so that it wins over a variable or a file that gave the other one."""
    if not value:
        return {}
    chosen, other = names if value.startswith(prefixes) else names[::-1]
    return {chosen: value, other: CLEARED}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    queue, topic = getattr(args, "queue", None), getattr(args, "topic", None)
    values = _one_of(queue, ("http://", "https://"), ("queue_url", "queue_name"))
    values |= _one_of(topic, ("arn:",), ("topic_arn", "topic_name"))
    for name in (
        "endpoint_url",
        "region",
        "log_level",
        "log_format",
        "handler",
        "handler_type",
        "handler_path",
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
    return values


def _flush_output() -> None:
    """Flush stdout and stderr before ``os._exit``; a broken stream must not stop the exit."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _say(line: str) -> None:
    """One line on stderr for the operator, if stderr can still take it; the exit code says
    the rest."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr)


def _exit_after(seconds: float) -> None:
    """End the process ``seconds`` from now if it has not ended by itself, with exit code 0.

    What a handler leaves behind can keep a stopped worker alive for ever: a non-daemon thread
    (which the interpreter joins at exit), a coroutine that swallows its cancellation (which
    ``asyncio.run`` waits for). The messages are settled by then; this keeps the stop within the
    time docs/operations.md promises and the grace period allows.
    """

    def force() -> None:
        running = [
            thread.name
            for thread in threading.enumerate()
            if not thread.daemon and thread is not threading.main_thread() and thread.is_alive()
        ]
        log.warning("worker.exit_forced", threads_left_running=len(running), threads=running[:10])
        _flush_output()
        os._exit(0)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    if os.environ.get("NO_COLOR"):  # https://no-color.org: set and not empty
        for processor in structlog.get_config()["processors"]:
            if isinstance(processor, structlog.dev.ConsoleRenderer):
                processor.colors = False  # the same renderer formats the stdlib's lines


class _Signals:
    """First SIGTERM/SIGINT: graceful stop, within a deadline. Second: exit at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._stop: Callable[[str], None] | None = None
        self._stop_seconds = 0.0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, self._on_signal, number)

    def attach(self, stop: Callable[[str], None], stop_seconds: float) -> None:
        self._stop = stop
        self._stop_seconds = stop_seconds
        if self.received:  # a signal came while starting up
            self._stopping(stop, self.received)

    def _on_signal(self, number: int) -> None:
        name = signal.Signals(number).name
        if self.received is not None:
            log.warning("worker.forced_exit", signal=name)
            _flush_output()
            os._exit(128 + number)
        self.received = name
        if self._stop is not None:
            self._stopping(self._stop, name)

    def _stopping(self, stop: Callable[[str], None], name: str) -> None:
        stop(name)
        _exit_after(self._stop_seconds)


async def _run(settings: Settings, _: argparse.Namespace) -> int:
    from worker.consume.worker import EXIT_SECONDS, serve  # noqa: PLC0415 -- keeps `worker --help` light

    signals = _Signals()
    signals.install(asyncio.get_running_loop())
    report = await serve(
        settings, on_started=lambda worker: signals.attach(worker.stop, worker.stop_seconds)
    )
    if report.threads_left_running or report.coroutines_left_running:
        # Handler threads that never returned would keep the interpreter from exiting, and
        # coroutines that swallow cancellation would keep asyncio.run from returning.
        log.warning(
            "worker.threads_left_running",
            threads=report.threads_left_running,
            coroutines=report.coroutines_left_running,
        )
        _flush_output()
        os._exit(0)
    # Anything else that would hold the exit (a thread a handler started): a second at most.
    _exit_after(EXIT_SECONDS)
    return 0


async def _provision(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.provision import provision  # noqa: PLC0415

    result = await provision(settings, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print("\n".join(result.lines()))
    return 0


def _events(args: argparse.Namespace) -> list[Event]:
    from worker.ops.publish import Event, parse_attribute, read_lines  # noqa: PLC0415

    # A BODY of "-" is stdin, as for --file and most commands: its lines, in its place.
    if args.messages.count("-") + (args.file == "-") > 1:
        raise ConfigurationError(["'-' (stdin) given more than once: it can be read only once"])
    if sys.stdin is None and (args.file == "-" or "-" in args.messages):  # started with it closed
        raise ConfigurationError(["'-' (stdin): there is no stdin to read (it is closed)"])
    bodies: list[str] = []
    for body in args.messages:
        bodies.extend(read_lines(sys.stdin) if body == "-" else [body])
    piped = (
        not args.messages and args.file is None and sys.stdin is not None and not sys.stdin.isatty()
    )
    if args.file == "-" or piped:
        bodies.extend(read_lines(sys.stdin))
    elif args.file:
        try:
            with Path(args.file).open(encoding="utf-8") as lines:
                bodies.extend(read_lines(lines))
        except OSError as exc:
            raise ConfigurationError([f"--file {args.file}: {exc.strerror}"]) from None
    if not bodies:
        raise ConfigurationError(["nothing to publish: give messages, --file, or lines on stdin"])
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
    from worker.ops.publish import publish  # noqa: PLC0415

    published = await publish(settings, args.events)
    ids, failed = published.message_ids, published.failed
    if args.json:
        print(json.dumps(published.as_json()))
    elif ids:
        print("\n".join(ids))
    if not failed:
        _say(f"published {len(ids)} message{'' if len(ids) == 1 else 's'}")
        return 0
    _say(f"published {len(ids)} of {len(args.events)} messages; not published:")
    for position, why in failed:
        _say(f"  event {position}: {why}")
    return EXIT_FAILED


async def _demo(settings: Settings, _: argparse.Namespace) -> int:
    from worker.ops.demo import run_demo  # noqa: PLC0415

    return await run_demo(settings, sys.stdout)


async def _invoke(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops import invoke_cli  # noqa: PLC0415

    invoked = await invoke_cli.run(settings, args)
    invoke_cli.report(invoked, sys.stdout, as_json=args.json)
    code = 0 if invoked.succeeded else EXIT_FAILED
    if invoked.abandoned:
        # A handler thread past its budget would keep the interpreter from exiting.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


async def _until_signalled() -> str:
    """Wait for SIGINT or SIGTERM; the signal's name."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[str] = loop.create_future()

    def on_signal(number: int) -> None:
        if not stopped.done():
            stopped.set_result(signal.Signals(number).name)

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)
    return await stopped


async def _local(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops.local import embedded_broker, shell_environment  # noqa: PLC0415

    with embedded_broker(args.host, args.port) as endpoint:
        variables = shell_environment(endpoint, settings.region)
        if args.json:
            print(json.dumps({"endpoint_url": endpoint, "environment": variables}))
        else:
            exports = " ".join(f"{name}={value}" for name, value in variables.items())
            print(
                f"SQS and SNS (moto) on {endpoint}, until Ctrl-C. In another shell:\n\n"
                f"  export {exports}\n",
                flush=True,
            )
        sys.stdout.flush()
        log.info("local.stopping", signal=await _until_signalled())
    return 0


async def _completion(_: Settings, args: argparse.Namespace) -> int:
    from worker.ops import completion  # noqa: PLC0415

    print(completion.script(build_parser(), args.shell), end="")
    return 0


async def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from worker.ops import dlq_cli  # noqa: PLC0415 -- not loaded by a worker that consumes

    return await dlq_cli.run(settings, args)


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": _run,
    "provision": _provision,
    "publish": _publish,
    "demo": _demo,
    "invoke": _invoke,
    "local": _local,
    "completion": _completion,
    "dlq": _dlq,
}


# What a command cannot start without, said with every other configuration problem at once.
_REQUIRED: dict[str, tuple[Requirement, ...]] = {
    "run": (
        (("handler",), f"WORKER_HANDLER: required ({HANDLER_FORMS})"),
        (("queue_url", "queue_name"), "WORKER_QUEUE_URL or WORKER_QUEUE_NAME (--queue): required"),
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    named = arguments[0] if arguments and arguments[0] in _PARSERS else None
    args = build_parser(only=named).parse_args(arguments)
    if args.command == "healthcheck":
        return healthcheck(args)
    try:
        settings = load_settings(
            config_file=getattr(args, "config", None),
            overrides=_overrides(args),
            required=_REQUIRED.get(args.command, ()),
        )
        if args.command == "publish":
            args.events = _events(args)
        _configure_logging(settings)
        return asyncio.run(_COMMANDS[args.command](settings, args))
    except ConfigurationError as exc:
        for problem in exc.problems:
            _say(f"worker: configuration error: {problem}")
        return EXIT_CONFIGURATION
    except StartupError as exc:
        _say(f"worker: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
