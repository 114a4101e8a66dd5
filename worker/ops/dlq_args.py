"""The ``worker dlq`` command line: its verbs and options, apart from what carries them out.

Every command of the worker is defined when its parser is built, ``worker run`` included; what
carries out the DLQ's verbs (:mod:`worker.ops.dlq_cli`, :mod:`worker.ops.dlq`) is imported only
when one of them runs, so that a worker starting to consume does not load it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from worker.ops.cli_help import command, option


def add_commands(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``worker dlq ...`` to the top-level subcommands."""
    parser = command(
        commands,
        "dlq",
        summary="inspect, redrive and purge the dead-letter queue",
        description="The operator's side of the DLQ, found from the queue's RedrivePolicy "
        "(--queue names the source queue, not the DLQ).",
        examples=[
            "worker dlq stats --queue orders",
            "worker dlq peek --queue orders",
            "worker dlq redrive --queue orders --dry-run",
        ],
    )
    verbs = parser.add_subparsers(dest="dlq_command", required=True, metavar="DLQ_COMMAND")

    stats = command(
        verbs,
        "stats",
        summary="depth of the queue and its DLQ, age of the oldest",
        description="Visible, in flight and delayed messages of the queue and its DLQ, the age "
        "of the DLQ's oldest message (estimated from a peek of ten) and maxReceiveCount.",
        examples=["worker dlq stats --queue orders", "worker dlq stats --queue orders --json"],
    )
    common(stats)
    stats.add_argument("--json", action="store_true", help=option("print JSON", False))

    peek = command(
        verbs,
        "peek",
        summary="show DLQ messages without consuming them",
        description="Receive DLQ messages and release them at once (nothing is consumed), "
        "grouped by the shape of their bodies, SNS envelopes unwrapped.",
        examples=["worker dlq peek --queue orders", "worker dlq peek --queue orders --full --json"],
    )
    common(peek)
    peek.add_argument("--limit", type=int, default=50, help=option("messages to read", 50))
    peek.add_argument("--json", action="store_true", help=option("print JSON, one document", False))
    peek.add_argument("--full", action="store_true", help=option("do not truncate bodies", False))

    redrive = command(
        verbs,
        "redrive",
        summary="move DLQ messages back to the queue",
        description="Move DLQ messages back to the queue (or --to another): with SQS's own move "
        "task where it can, message by message otherwise (sent first, deleted from the DLQ "
        "after), filtered, limited or counted only. Ctrl-C finishes the batch in hand.",
        examples=[
            "worker dlq redrive --queue orders",
            'worker dlq redrive --queue orders --filter \'{"body": {"type": ["order"]}}\'',
            "worker dlq redrive --queue orders --max 100 --rate 10 --json",
        ],
    )
    common(redrive)
    redrive.add_argument(
        "--to", metavar="QUEUE", help=option("destination URL or name", "the queue")
    )
    redrive.add_argument("--max", type=int, metavar="N", help=option("move at most N messages"))
    redrive.add_argument(
        "--rate", type=float, metavar="PER_SECOND", help=option("messages per second")
    )
    redrive.add_argument(
        "--filter",
        metavar="PATTERN",
        help=option(
            'a Lambda filter pattern (JSON), e.g. \'{"body": {"type": ["order"]}}\'; the body '
            "is the published payload, SNS envelope unwrapped"
        ),
    )
    redrive.add_argument(
        "--dry-run", action="store_true", help=option("count what would move", False)
    )
    redrive.add_argument(
        "--manual",
        action="store_true",
        help=option("move message by message even where SQS could", False),
    )
    redrive.add_argument(
        "--hold",
        type=int,
        default=60,
        metavar="SECONDS",
        help=option("visibility of messages being moved", 60),
    )
    redrive.add_argument(
        "--no-wait",
        action="store_true",
        help=option("start SQS's move task and return at once", False),
    )
    redrive.add_argument(
        "--json", action="store_true", help=option("print the result as JSON", False)
    )

    moves = command(
        verbs,
        "moves",
        summary="list SQS's move tasks of the DLQ, or cancel one",
        description="List the message move tasks SQS runs or ran on the DLQ (a redrive started "
        "with --no-wait, or interrupted), or cancel one.",
        examples=[
            "worker dlq moves --queue orders",
            "worker dlq moves --queue orders --cancel TASK_HANDLE",
        ],
    )
    common(moves)
    moves.add_argument("--cancel", metavar="TASK_HANDLE", help=option("cancel this move task"))
    moves.add_argument("--json", action="store_true", help=option("print JSON", False))

    purge = command(
        verbs,
        "purge",
        summary="delete every message in the DLQ",
        description="Delete every message in the DLQ; refused without --yes, which says how "
        "many would go.",
        examples=["worker dlq purge --queue orders --yes"],
    )
    common(purge)
    purge.add_argument("--yes", action="store_true", help=option("yes, delete them all", False))
    purge.add_argument("--json", action="store_true", help=option("print JSON", False))
