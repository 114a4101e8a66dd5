"""The README and the shipped configuration stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from worker.config import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


class TestReadme:
    """Every setting is in the configuration table, and nothing else is."""

    def test_every_setting_is_documented(self) -> None:
        documented = set(re.findall(r"^\| `(WORKER_[A-Z_]+)` \|", README, flags=re.MULTILINE))
        assert documented == {env_name(name) for name in Settings.model_fields}

    def test_documented_defaults_match(self) -> None:
        rows = dict(re.findall(r"^\| `(WORKER_[A-Z_]+)` \| `([^`]+)` \|", README, re.MULTILINE))
        for name, field in Settings.model_fields.items():
            shown = rows.get(env_name(name))
            if shown is None or field.default is None:  # a default described in words
                continue
            default = field.default
            value = getattr(default, "value", default)
            if isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            assert shown == str(value), name


class TestShippedConfiguration:
    """The example configuration file loads."""

    def test_example_config_file_loads(self) -> None:
        settings = load_settings(config_file=ROOT / "config" / "worker.toml")
        assert settings.queue_name == "orders"
        assert settings.concurrency == 20
