"""Where the worker's time goes: a summary of ``py-spy record --format raw`` output.

``python -m bench --scenario A --profile DIR`` records the worker with py-spy (``--gil``: only
samples of the thread holding the GIL, i.e. running Python code); ``python -m bench.spy
DIR/A-*.txt`` prints the share of samples in each function (inclusive: anywhere on the stack)
and at the top of the stack (self), and the share by package (the package of the innermost
frame).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def _package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/worker/" in path:
        return "worker"
    if "/bench/" in path:
        return "bench"
    if "/lib/python3" in path:
        return "stdlib:" + path.rsplit("/", 1)[-1].removesuffix(".py")
    return path


def _name(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, frame
    path = match["file"]
    short = "/".join(path.split("/")[-2:])
    return f"{match['function']} ({short})", _package(path)


def summarise(paths: list[Path], top: int, within: str | None = None) -> str:
    """The report, as text."""
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_name(frame) for frame in stack.split(";")]
            if not frames or (within and not any(within in name for name, _ in frames)):
                continue
            total += count
            for name in {name for name, _ in frames}:
                inclusive[name] += count
            self_time[frames[-1][0]] += count
            packages[frames[-1][1]] += count
    lines = [f"{total} samples"]
    for title, counter in (
        ("inclusive", inclusive),
        ("self", self_time),
        ("self, by package", packages),
    ):
        lines.append(f"\n{title}:")
        lines.extend(f"{100 * n / total:6.1f}%  {name}" for name, n in counter.most_common(top))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the summary of the given files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--within", help="only stacks through this function, e.g. 'run_forever' (not start-up)"
    )
    args = parser.parse_args(argv)
    print(summarise(args.files, args.top, args.within))


if __name__ == "__main__":
    main()
