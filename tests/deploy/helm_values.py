"""The chart's values with their ``# --`` descriptions.

helm-docs' convention, without its Go binary: a ``# --`` comment documents the key below it (a
documented map is one value, its keys are not listed), ``# @default --`` says the default in
words. The type is what values.schema.json admits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tests.deploy.chart import CHART

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
