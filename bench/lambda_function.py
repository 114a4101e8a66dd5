"""The Lambda function of scenarios F10 and F100: a no-op that reports the messages it was given.

The worker runs it in its execution environments under awslambdaric, as Lambda runs a deployed
function. It imports nothing of the worker's, only :mod:`bench.probe` (the standard library's
modules), so that an environment holds what a minimal Python function holds. Each batch's ids
are appended to the file the worker's probe follows (:func:`bench.probe.append_ids`).
"""

from __future__ import annotations

from typing import Any

from bench.probe import append_ids


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Report the batch's message ids; none failed."""
    append_ids(record["messageId"] for record in event["Records"])
    return {"batchItemFailures": []}
