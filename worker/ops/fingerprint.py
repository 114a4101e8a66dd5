"""The shape of a message body, so that a thousand copies of one failure read as one line.

Two bodies have the same fingerprint when they are JSON of the same structure (the same keys,
recursively, with values of the same type) or, when they are not JSON, text of the same kind.
Values themselves are left out: ``{"order_id": "o-1"}`` and ``{"order_id": "o-2"}`` share a shape.
"""

from __future__ import annotations

import json
from typing import Any

_MAX_DEPTH = 4  # deeper structure is summarised, so that a shape stays one readable line
_MAX_KEYS = 12


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "str"


def _object(value: dict[str, Any], depth: int) -> str:
    if depth >= _MAX_DEPTH:
        return "{…}"
    keys = sorted(value)
    parts = [f"{key}: {_shape(value[key], depth + 1)}" for key in keys[:_MAX_KEYS]]
    if len(keys) > _MAX_KEYS:
        parts.append(f"… {len(keys) - _MAX_KEYS} more")
    return "{" + ", ".join(parts) + "}"


def _array(value: list[Any], depth: int) -> str:
    if not value:
        return "[]"
    if depth >= _MAX_DEPTH:
        return "[…]"
    kinds = sorted({_shape(item, depth + 1) for item in value})
    return "[" + " | ".join(kinds[:3]) + (" | …" if len(kinds) > 3 else "") + "]"


def _shape(value: Any, depth: int) -> str:
    if isinstance(value, dict):
        return _object(value, depth)
    if isinstance(value, list):
        return _array(value, depth)
    return _scalar(value)


def fingerprint(body: str) -> str:
    """A one-line description of the body's shape."""
    stripped = body.strip()
    if not stripped:
        return "empty"
    if stripped[:1] in "{[":
        try:
            return _shape(json.loads(stripped), 0)
        except (ValueError, RecursionError):
            return "invalid JSON"
    try:
        return f"JSON {_shape(json.loads(stripped), 0)}"
    except (ValueError, RecursionError):
        return "text"
