"""The parts of the Lambda runtime's environment that functions commonly read.

Functions and their libraries look at ``AWS_LAMBDA_FUNCTION_NAME`` and friends (loggers name the
service with it, metrics libraries tag with it), often when they are imported. Execution
environments (:mod:`worker.lambda_.environments`) start with these variables set; a Python
function called in the worker's own process (the embedding seam) gets them in the worker's
environment, where not already set, before it is called.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_LAMBDA_MAX_MEMORY_MB = 10_240
_FALLBACK_MEMORY_MB = 1024


@dataclass(frozen=True)
class FunctionIdentity:
    """Who the handler believes it is: the values its context and environment report."""

    function_name: str
    memory_limit_in_mb: int
    region: str
    account: str
    function_version: str = "$LATEST"
    partition: str = "aws"  # aws-cn, aws-us-gov...: the queue's

    @property
    def function_arn(self) -> str:
        """The ARN Lambda would have invoked."""
        return (
            f"arn:{self.partition}:lambda:{self.region}:{self.account}"
            f":function:{self.function_name}"
        )

    @property
    def log_group_name(self) -> str:
        """``/aws/lambda/<name>``, as on Lambda."""
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        """Shaped like Lambda's (``date/[version]instance``), with this host as the instance."""
        day = datetime.now(tz=UTC).strftime("%Y/%m/%d")
        return f"{day}/[{self.function_version}]{socket.gethostname()}"


def container_memory_mb(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The container's memory limit in MiB (cgroup v2, then v1), else the machine's memory.

    Capped at Lambda's 10,240 MB, since that is the range functions expect.
    """
    for limit_file in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        try:
            text = limit_file.read_text(encoding="ascii").strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 reports "unlimited" as a huge number
            return max(128, min(_LAMBDA_MAX_MEMORY_MB, int(text) // (1 << 20)))
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return _FALLBACK_MEMORY_MB
    return max(128, min(_LAMBDA_MAX_MEMORY_MB, physical // (1 << 20)))


def lambda_environment(
    identity: FunctionIdentity, *, handler: str | None, task_root: Path | None
) -> dict[str, str]:
    """The variables the Lambda runtime sets that functions read."""
    variables = {
        "AWS_LAMBDA_FUNCTION_NAME": identity.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": identity.function_version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(identity.memory_limit_in_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": identity.log_group_name,
        "AWS_LAMBDA_LOG_STREAM_NAME": identity.log_stream_name,
        "AWS_REGION": identity.region,
        "AWS_DEFAULT_REGION": identity.region,
        "LAMBDA_TASK_ROOT": str(task_root or Path.cwd()),
    }
    if handler:
        # Lambda's form is module.function, where ours is module:function.
        variables["_HANDLER"] = handler.replace(":", ".")
    return variables


def apply_environment(
    variables: Mapping[str, str], environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Set each variable that is not set already; returns the names it set."""
    target = os.environ if environ is None else environ
    added = []
    for name, value in variables.items():
        if name not in target:
            target[name] = value
            added.append(name)
    return added
