"""The chart's values with their ``# --`` descriptions, and the table of them in helm/README.md.

helm-docs' convention, without its Go binary: a ``# --`` comment documents the key below it (a
documented map is one row, its keys are not listed), ``# @default --`` says the default in words.
The type column shows what values.schema.json admits.

    python -m tests.deploy.helm_values          # print the table
    python -m tests.deploy.helm_values --write  # write it into helm/README.md (make helm-docs)
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from tests.deploy.chart import CHART

README = CHART / "README.md"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z][\w.-]*):")
WORDS = {"integer": "int", "boolean": "bool", "array": "list"}  # the others keep JSON's names
ENUM_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}


@dataclass(frozen=True)
class Value:
    key: str
    type: str
    default: str
    description: str


def comments(text: str) -> dict[str, list[str]]:
    """Each key's dotted path, with the comment lines right above it."""
    found: dict[str, list[str]] = {}
    path: list[tuple[int, str]] = []
    block: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            block.append(line.strip())
            continue
        if match := KEY.match(line):
            indent = len(match["indent"])
            while path and path[-1][0] >= indent:
                path.pop()
            path.append((indent, match["key"]))
            found[".".join(key for _, key in path)] = block
        block = []  # a blank line, a list item or a key ends a comment
    return found


def type_of(schema: dict[str, Any]) -> str:
    """The types values.schema.json admits, in helm-docs' words (int, bool, list, ...)."""
    admitted = schema.get("type") or [ENUM_TYPES[type(v)] for v in schema.get("enum", [])]
    names = [admitted] if isinstance(admitted, str) else list(dict.fromkeys(admitted))
    return " or ".join(WORDS.get(name, name) for name in names)


def shown(value: object) -> str:
    if isinstance(value, dict) and value:
        return "see values.yaml"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def described(block: list[str]) -> tuple[str, str | None] | None:
    """The description in a comment block, and its ``@default`` in words; None if it has none."""
    starts = [i for i, line in enumerate(block) if line.startswith("# --")]
    if not starts:
        return None
    lines = [line.lstrip("#").strip() for line in block[starts[0] :]]
    default = [line.split("--", 1)[1].strip() for line in lines if line.startswith("@default --")]
    text = " ".join(line for line in lines if not line.startswith("@default --"))
    return text.removeprefix("-- "), (default[0] if default else None)


def values(text: str, schema: dict[str, Any]) -> tuple[list[Value], list[str]]:
    """The documented values, and the keys with no description of their own or above them."""
    notes = comments(text)
    documented: list[Value] = []
    undocumented: list[str] = []

    def walk(mapping: dict[str, Any], prefix: str, properties: dict[str, Any]) -> None:
        for key, value in mapping.items():
            path = prefix + key
            if key not in properties:
                raise ValueError(f"values.schema.json has no {path}")
            if description := described(notes.get(path, [])):
                text, default = description
                row = Value(path, type_of(properties[key]), default or shown(value), text)
                documented.append(row)
            elif isinstance(value, dict) and value:
                walk(value, path + ".", properties[key].get("properties", {}))
            else:
                undocumented.append(path)

    walk(yaml.safe_load(text), "", schema["properties"])
    return documented, undocumented


def chart_values() -> tuple[list[Value], list[str]]:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    return values((CHART / "values.yaml").read_text(encoding="utf-8"), schema)


def table(documented: list[Value]) -> str:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for v in documented:
        cells = (f"`{v.key}`", v.type, v.default, v.description)
        rows.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    return "\n".join(rows)


def _split(readme: str) -> tuple[str, str, str]:
    """``readme`` before its values table, the table, and after it."""
    before, start, rest = readme.partition(START)
    current, end, after = rest.partition(END)
    if not (start and end):
        raise ValueError(f"helm/README.md has no {START} ... {END} markers")
    return before, current.strip("\n"), after


def table_in(readme: str) -> str:
    return _split(readme)[1]


def with_table(readme: str, documented: list[Value]) -> str:
    """``readme`` with the table for ``documented`` between its markers."""
    before, _, after = _split(readme)
    return f"{before}{START}\n{table(documented)}\n{END}{after}"


def main(argv: list[str]) -> int:
    if argv not in ([], ["--write"]):
        print(__doc__, file=sys.stderr)
        return 2
    documented, undocumented = chart_values()
    if undocumented:
        print("values without a `# --` comment:", *undocumented, sep="\n  ", file=sys.stderr)
        return 1
    if argv == ["--write"]:
        readme = README.read_text(encoding="utf-8")
        README.write_text(with_table(readme, documented), encoding="utf-8")
    else:
        print(table(documented))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
