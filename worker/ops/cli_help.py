"""How each subcommand's ``--help`` reads: what it does, each flag's variable and default, examples.

A flag that sets a setting names its ``WORKER_*`` variable and takes its default from the
settings model itself, so that the help cannot drift from what the worker does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from worker.config import Settings, env_name


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal; the examples (the epilog) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _shown(value: Any) -> str:
    value = getattr(value, "value", value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def setting(text: str, field: str, *, default: str | None = None) -> str:
    """Help for a flag that sets ``field``: its variable, and the model's default (or ``default``
    where the default is described in words)."""
    if default is None:
        value = Settings.model_fields[field].default
        default = "none" if value is None else _shown(value)
    return f"{text} ({env_name(field)}; default: {default})".replace("%", "%%")


def option(text: str, default: Any = None) -> str:
    """Help for a flag that only this command reads: no variable, its default."""
    shown = "none" if default is None else _shown(default)
    return f"{text} (default: {shown})".replace("%", "%%")


def command(
    commands: Any,
    name: str,
    *,
    summary: str,
    description: str,
    examples: Sequence[str],
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` says what it does and shows how it is used."""
    return commands.add_parser(  # type: ignore[no-any-return]
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {example}" for example in examples),
        formatter_class=HelpFormatter,
    )
