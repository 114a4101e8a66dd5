"""The README and the shipped configuration stay true to the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from worker.config import Settings, env_name, load_settings
from worker.lambda_.environments import EnvironmentMetrics
from worker.metrics import Metrics

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


class TestExamples:
    """The README shows each file of docs/examples/ as it is, where tests build or run it."""

    SHOWN = re.findall(
        r"^<!-- (docs/examples/\S+) -->\n```\w*\n(.*?)^```$", README, re.MULTILINE | re.DOTALL
    )

    def test_each_shown_file_is_the_file(self) -> None:
        assert self.SHOWN
        for path, text in self.SHOWN:
            assert text == (ROOT / path).read_text(encoding="utf-8"), path

    def test_every_example_is_shown(self) -> None:
        examples = ROOT / "docs" / "examples"
        files = {str(p.relative_to(ROOT)) for p in examples.iterdir() if p.is_file()}
        assert {path for path, _ in self.SHOWN} == files


class TestShippedConfiguration:
    """The example configuration file loads."""

    def test_example_config_file_loads(self) -> None:
        settings = load_settings(config_file=ROOT / "config" / "worker.toml")
        assert settings.queue_name == "orders"
        assert settings.concurrency == 20


class TestMetricReference:
    """The README's metric table lists exactly the metrics the worker exports."""

    def test_every_metric_is_documented(self) -> None:
        registry = CollectorRegistry()
        Metrics(registry, queue="q")
        EnvironmentMetrics(registry, queue="q")  # lambda handlers' execution environments
        suffix = {"counter": "_total", "info": "_info"}
        exported = {
            family.name + suffix.get(family.type, "")
            for family in registry.collect()
            if family.name.startswith("worker_")
        }
        documented = set(re.findall(r"^\| `(worker_[a-z_]+)` \|", README, flags=re.MULTILINE))
        assert documented == exported


def _exported_series() -> set[str]:
    """Every series name the worker's metrics produce (with _total, _bucket, ... suffixes)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, queue="q")
    metrics.sqs_call("ReceiveMessage", "success", 0.1, 1)
    metrics.handler_duration.labels("q", "success").observe(1)
    metrics.entry_failure("DeleteMessageBatch", "ReceiptHandleIsInvalid")
    metrics.settle_failures.labels("q", "delete").inc()
    metrics.set_depth("q", "source", {})
    for name in (
        "worker_messages_in_flight",
        "worker_handlers_running",
        "worker_messages_waiting",
        "worker_concurrency_limit",
        "worker_handlers_abandoned",
        "worker_pollers_running",
    ):
        metrics.watch(name, lambda: 0)
    return {sample.name for family in registry.collect() for sample in family.samples}


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(
        (ROOT / "config" / "grafana" / "sqs-worker-dashboard.json").read_text(encoding="utf-8")
    )
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


class TestShippedDashboardsAndAlerts:
    """The dashboard and the alert rules use only metrics the worker exports."""

    def _names_in(self, text: str) -> set[str]:
        return set(re.findall(r"\b(worker_[a-z_]+|process_[a-z_]+)\b", text))

    def test_dashboard_uses_only_exported_metrics(self) -> None:
        expressions = _dashboard_expressions()
        assert expressions
        used = set().union(*(self._names_in(expr) for expr in expressions))
        assert used - _exported_series() == set()

    def test_failure_panels_show_zero_on_a_healthy_worker(self) -> None:
        # A counter series exists only once a label set is used: a panel of failures that never
        # happened says "No data", which reads like a broken scrape. Either the worker makes the
        # series at start (the label values are known), or the query falls back to 0.
        registry = CollectorRegistry()
        Metrics(registry, queue="q")
        at_start = {sample.name for family in registry.collect() for sample in family.samples}
        for expr in _dashboard_expressions():
            failures = [
                name
                for name in re.findall(r"\bworker_[a-z_]+_total\b", expr)
                if "fail" in name or 'result!="success"' in expr
            ]
            for name in failures:
                assert name in at_start or ("or on () " in expr and "vector(0)" in expr), expr

    def test_alerts_use_only_exported_metrics(self) -> None:
        used = self._names_in((ROOT / "config" / "alerts.yml").read_text(encoding="utf-8"))
        assert used
        assert used - _exported_series() == set()
