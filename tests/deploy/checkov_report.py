"""checkov's JSON report on config/cloudformation, summed up: each finding and each skip with its
reason, and a verdict. A failed check, a parsing error, a skip without a reason, or fewer
templates scanned than expected (one checkov could not parse) fails.

    python -m tests.deploy.checkov_report REPORT EXPECTED_TEMPLATES
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COUNTS = ("passed", "failed", "skipped", "parsing_errors")
NO_REASON = ("", "No comment provided")


def summary(report: Any, expected: int) -> tuple[list[str], bool]:
    """The report's lines, and whether it passes."""
    parts = report if isinstance(report, list) else [report]
    counts = dict.fromkeys(COUNTS, 0)
    files: set[str] = set()
    lines: list[str] = []
    unexplained = 0
    for part in parts:
        for key in COUNTS:
            counts[key] += part.get("summary", {}).get(key, 0)
        results = part.get("results", {})
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            for result in results.get(kind, []):
                files.add(result["file_path"])
                where = (
                    f"{result['check_id']} {result['file_path'].lstrip('/')}:"
                    f"{result['file_line_range'][0]} {result['resource']}"
                )
                if kind == "failed_checks":
                    lines.append(f"  FAILED  {where}: {result['check_name']}")
                elif kind == "skipped_checks":
                    reason = (result["check_result"].get("suppress_comment") or "").strip()
                    if reason in NO_REASON:
                        unexplained += 1
                        reason = "NO REASON GIVEN (add a comment to the skip)"
                    lines.append(f"  skipped {where}: {reason}")
    lines.append(
        f"checkov: {len(files)} templates, "
        + ", ".join(f"{key.replace('_', ' ')} {counts[key]}" for key in COUNTS)
    )
    passes = not (counts["failed"] or counts["parsing_errors"] or unexplained)
    return lines, passes and len(files) >= expected


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        report = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"checkov: no readable JSON report ({exc})")
        return 1
    lines, passes = summary(report, int(argv[1]))
    print(*lines, sep="\n")
    return 0 if passes else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
