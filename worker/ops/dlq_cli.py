"""``worker dlq stats | peek | redrive | moves | purge``: the operator's side of the DLQ.

Output is for people on a terminal (aligned columns, a progress line that rewrites itself) and
for scripts otherwise (``--json``, structured log lines instead of a progress line).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

import botocore.exceptions
import structlog

from worker.config import Settings
from worker.consume.sqs import describe_failure, error_code
from worker.errors import ConfigurationError, StartupError
from worker.ops import dlq

log = structlog.get_logger("worker.ops.dlq")
_SHAPES_SHOWN = 5  # the most common body shapes a text summary lists

EXIT_INTERRUPTED = 128 + signal.SIGINT
_PROGRESS_LOG_SECONDS = 5.0


def _age(seconds: float | None, estimate: bool = False) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = (
        f"{days}d {hours}h"
        if days
        else f"{hours}h {minutes:02d}m"
        if hours
        else f"{minutes}m {secs:02d}s"
    )
    return f"≥{text}" if estimate else text


async def _stats(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    pair, rows = await dlq.stats(settings)
    max_receives = pair.source.redrive.max_receive_count if pair.source.redrive else None
    if args.json:
        document = {
            "max_receive_count": max_receives,
            "queues": [vars(row) for row in rows],
        }
        out.write(json.dumps(document, indent=2) + "\n")
        return 0
    width = max(len(row.name) for row in rows)
    out.write(f"{'queue':<{width}}  role    visible  in flight  delayed  oldest\n")
    for row in rows:
        out.write(
            f"{row.name:<{width}}  {row.role:<6} {row.visible:>8} {row.in_flight:>10} "
            f"{row.delayed:>8}  {_age(row.oldest_age_seconds, row.oldest_is_estimate)}\n"
        )
    out.write(
        f"\nmaxReceiveCount {max_receives}: a message moves to the DLQ on its receive after that.\n"
    )
    return 0


async def _peek(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if args.limit < 1:
        raise ConfigurationError(["--limit: must be at least 1"])
    pair, peeked, depth = await dlq.peek(settings, limit=args.limit)
    limit = None if args.full else 200
    groups = dlq.group(peeked)
    if args.json:
        document = {
            "dlq": pair.dlq_name,
            "visible": depth,
            "peeked": len(peeked),
            "groups": [
                {
                    "shape": g.shape,
                    "count": len(g.messages),
                    "messages": [m.as_json(body_limit=limit) for m in g.messages],
                }
                for g in groups
            ],
        }
        out.write(json.dumps(document, indent=2) + "\n")
        return 0
    out.write(
        f"DLQ {pair.dlq_name}: {len(peeked)} of about {depth} messages peeked "
        "(released at once; nothing consumed)\n"
    )
    for g in groups:
        first = g.messages[0]
        sent = first.sent_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if first.sent_at else "?"
        out.write(f"\n{len(g.messages):>5} x {g.shape}\n")
        out.write(
            f"        e.g. {first.message_id}  sent {sent}  received {first.receive_count}x"
            + (f"  group {first.group_id}" if first.group_id else "")
            + "\n"
        )
        if first.attributes:
            out.write(f"        attributes {json.dumps(first.attributes, sort_keys=True)}\n")
        body = dlq.truncate(first.body, None if args.full else 120).replace("\n", "\\n")
        out.write(f"        body {body}\n")
    return 0


def figures(result: dlq.RedriveResult, *, dry_run: bool = False) -> str:
    """What a redrive has done so far, in figures that add up to what it has seen."""
    if result.native_task is not None or not result.seen:
        return f"{result.moved} moved"  # SQS's move task counts only what it moved
    done = (
        f"{result.matched} would move"
        if dry_run
        else f"{result.moved} moved, {result.failed} failed"
    )
    return f"{result.seen} seen: {done}, {result.skipped} skipped"


class ProgressLine:
    """Count, rate and what remains: one rewritten line on a terminal, a log line otherwise."""

    def __init__(self, stream: TextIO, *, dry_run: bool = False) -> None:
        self._stream = stream
        self._dry_run = dry_run
        self._interactive = stream.isatty()
        self._started = time.monotonic()
        self._logged = 0.0
        self._shown = False

    def __call__(self, result: dlq.RedriveResult, remaining: int | None) -> None:
        elapsed = max(1e-6, time.monotonic() - self._started)
        rate = (result.seen or result.moved) / elapsed
        left = "" if remaining is None else f", ~{remaining} left"
        eta = f", ~{_age(remaining / rate)} to go" if remaining and rate > 0 else ""
        if self._interactive:
            line = figures(result, dry_run=self._dry_run)
            self._stream.write(f"\r{line}; {rate:.1f}/s{left}{eta}   ")
            self._stream.flush()
            self._shown = True
        elif time.monotonic() - self._logged >= _PROGRESS_LOG_SECONDS:
            self._logged = time.monotonic()
            log.info(
                "dlq.redrive_progress",
                seen=result.seen,
                moved=result.moved,
                failed=result.failed,
                skipped=result.skipped,
                matched=result.matched,
                per_second=round(rate, 2),
                remaining=remaining,
            )

    def end(self) -> None:
        if self._shown:
            self._stream.write("\n")


def _install_stop(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    state = {"signals": 0}

    def on_signal(number: int) -> None:
        state["signals"] += 1
        if state["signals"] > 1:
            os._exit(128 + number)
        log.info("dlq.stopping", signal=signal.Signals(number).name)
        stop()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)


def _plan(args: argparse.Namespace) -> dlq.RedrivePlan:
    problems = []
    criteria = None
    if args.filter:
        from worker.handlers.filtering import FilterCriteria, FilterError  # noqa: PLC0415

        try:
            criteria = FilterCriteria.from_pattern(args.filter)
        except FilterError as exc:
            problems.append(f"--filter: {exc}")
    if args.max is not None and args.max < 1:
        problems.append("--max: must be at least 1")
    # float() takes "nan" and "inf" too; neither paces anything (int() of either raises).
    if args.rate is not None and not 0 < args.rate < math.inf:
        problems.append("--rate: must be a finite number more than 0")
    if not 1 <= args.hold <= 43_200:
        problems.append("--hold: must be between 1 and 43200 seconds")
    if problems:
        raise ConfigurationError(problems)
    return dlq.RedrivePlan(
        destination=args.to,
        max_messages=args.max,
        rate=args.rate,
        criteria=criteria,
        dry_run=args.dry_run,
        hold_seconds=args.hold,
        manual=args.manual,
    )


async def _redrive(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    plan = _plan(args)
    progress = ProgressLine(sys.stderr, dry_run=plan.dry_run)
    stop = asyncio.Event()
    _install_stop(stop.set)
    try:
        result = await dlq.run_redrive(
            settings, plan, progress=progress, stop=stop, wait=not args.no_wait
        )
    finally:
        progress.end()
    if args.json:
        # asdict would rebuild the Counter of shapes from its items, counting the pairs.
        document = {**dataclasses.asdict(result), "shapes": dict(result.shapes)}
        document["dry_run"] = plan.dry_run
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        out.write(_summary(result, plan) + "\n")
    if result.interrupted:
        return EXIT_INTERRUPTED
    unreached = result.unreached and not plan.dry_run  # a dry run says so, and moved nothing
    return 1 if result.failed or result.delete_failed or unreached else 0


def _summary(result: dlq.RedriveResult, plan: dlq.RedrivePlan) -> str:
    if result.native_task:
        return _native_summary(result)
    lines = []
    if plan.dry_run:
        lines.append(f"dry run: {result.matched} of {result.seen} messages would be moved")
    else:
        lines.append(f"moved {result.moved} of {result.seen} messages in {result.seconds:.1f} s")
    if result.skipped:
        lines.append(f"{result.skipped} did not match the filter and stay in the DLQ")
    if result.failed:
        lines.append(f"{result.failed} could not be sent and stay in the DLQ")
    if result.delete_failed:
        lines.append(
            f"{result.delete_failed} were sent but could not be deleted from the DLQ "
            "(they are now in both queues)"
        )
    if result.unreached:
        lines.append(
            f"about {result.unreached} messages were not reached: FIFO order lets no receive "
            "pass a message that stays in the DLQ, and one of their group did (ten skipped by "
            "the filter in a row, refused by the destination, or only counted by a dry run)"
        )
    if result.interrupted:
        lines.append("stopped before the end; nothing in hand was lost")
    if result.outlasted_hold:
        lines.append(
            f"the run outlasted --hold ({plan.hold_seconds} s): messages came back before it "
            "ended; each was counted once, but some may not have been received at all: "
            "run again with a longer --hold for a complete pass"
        )
    shown = result.shapes.most_common(_SHAPES_SHOWN)
    lines.extend(f"  {count:>5} x {shape}" for shape, count in shown)
    rest = len(result.shapes) - len(shown)
    if rest:
        others = result.matched - sum(count for _, count in shown)
        lines.append(f"  and {rest} more shapes ({others} messages): --json lists every one")
    return "\n".join(lines)


def _native_summary(result: dlq.RedriveResult) -> str:
    task, moved, status = result.native_task, result.moved, result.native_status
    if result.interrupted:
        # Ctrl-C stops our waiting, not SQS's task: say where it is and how to end it.
        return (
            f"stopped following SQS move task {task} ({moved} messages moved so far); "
            "the task goes on in SQS: see it with `worker dlq moves`, "
            f"cancel it with `worker dlq moves --cancel {task}`"
        )
    if status is None:
        return f"started SQS move task {task}; follow it with `worker dlq moves`"
    if status == "COMPLETED":
        return f"SQS move task {task} completed: moved {moved} messages"
    if status == "CANCELLED":
        return f"SQS move task {task} was cancelled after moving {moved} messages"
    return f"SQS move task {task} ended ({status}) after moving {moved} messages"


async def _moves(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from worker.consume.sqs import open_sqs  # noqa: PLC0415

    async with open_sqs(settings) as client:
        pair = await dlq.find_pair(client, settings)
        try:
            if args.cancel:
                moved = await dlq.cancel_move_task(client, args.cancel)
                if args.json:
                    out.write(json.dumps({"cancelled": args.cancel, "moved": moved}) + "\n")
                else:
                    out.write(f"cancelled {args.cancel} after {moved} messages\n")
                return 0
            tasks = await dlq.list_move_tasks(client, pair.dlq_arn)
        except dlq.MoveTasksUnsupportedError as exc:
            raise StartupError(f"this endpoint has no message move tasks ({exc})") from None
    if args.json:
        out.write(json.dumps({"dlq": pair.dlq_name, "tasks": tasks}, indent=2, default=str) + "\n")
        return 0
    if not tasks:
        out.write(f"no move tasks for {pair.dlq_name}\n")
    for task in tasks:
        started = task.get("StartedTimestamp")
        when = (
            datetime.fromtimestamp(int(started) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
            if started
            else "?"
        )
        moved = task.get("ApproximateNumberOfMessagesMoved", 0)
        total = task.get("ApproximateNumberOfMessagesToMove", "?")
        out.write(
            f"{task.get('Status', '?'):<10} {when}  moved {moved} of {total}  "
            f"{task.get('TaskHandle', '')}\n"
        )
    return 0


async def _purge(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if not args.yes:
        pair, rows = await dlq.stats(settings, sample=0)
        raise ConfigurationError(
            [f"refusing to delete the {rows[1].visible} messages of {pair.dlq_name} without --yes"]
        )
    pair, count = await dlq.purge(settings)
    if args.json:
        out.write(json.dumps({"dlq": pair.dlq_name, "purged": count}) + "\n")
    else:
        out.write(f"purged {pair.dlq_name} ({count} messages)\n")
    return 0


_VERBS = {"stats": _stats, "peek": _peek, "redrive": _redrive, "moves": _moves, "purge": _purge}


# Error codes that come with a hint of what to do, keyed by the code's last part.
_HINTS = {
    "PurgeQueueInProgress": "SQS purges a queue at most once every 60 seconds; try again later",
    "AccessDenied": "the credentials in use lack this permission",
    "AccessDeniedException": "the credentials in use lack this permission",
    "403": "the credentials in use lack this permission",
}


def explain(exc: botocore.exceptions.ClientError | botocore.exceptions.BotoCoreError) -> str:
    """One line for an AWS call that failed: the call, what SQS said, and what to do."""
    line = describe_failure(exc)
    if not isinstance(exc, botocore.exceptions.ClientError):
        return line
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    hint = _HINTS.get(error_code(exc).rsplit(".", 1)[-1]) or _HINTS.get(str(status))
    return f"{exc.operation_name}: {line}" + (f" ({hint})" if hint else "")


async def run(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``worker dlq <verb>``; an AWS call that fails is one line (exit 1), not a traceback."""
    try:
        return await _VERBS[args.dlq_command](settings, args, out or sys.stdout)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise StartupError(f"dlq {args.dlq_command}: {explain(exc)}") from None
