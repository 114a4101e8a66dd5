"""The docs and the shipped configuration stay true to the code, and to each other.

The docs are ``README.md`` (the front page) and the pages of ``docs/``: every example they show
is a file of ``docs/examples/`` as it is, every other snippet is a command listing or output of
a kind the rule below allows, and every relative link reaches a file and a heading.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from worker.config import Settings, env_name, load_settings
from worker.lambda_.environments import EnvironmentMetrics
from worker.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# Pages whose links are checked too: the chart's, which the docs link to and which links back.
LINKED_PAGES = [*PAGES, ROOT / "helm" / "README.md"]
CONFIGURATION = (DOCS / "configuration.md").read_text(encoding="utf-8")
OBSERVABILITY = (DOCS / "observability.md").read_text(encoding="utf-8")

EXAMPLE_MARK = re.compile(r"^<!-- (docs/examples/\S+) -->$")
# Fenced blocks that need not be files: commands to type with what they print (`console`), and
# program output or a layout sketch (`text`). Code of any other language is an example file.
UNMARKED_LANGUAGES = {"console", "text"}


def _page(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


class TestConfigurationTable:
    """Every setting is in the configuration table of docs/configuration.md, and nothing else is."""

    def test_every_setting_is_documented(self) -> None:
        documented = set(
            re.findall(r"^\| `(WORKER_[A-Z_]+)` \|", CONFIGURATION, flags=re.MULTILINE)
        )
        assert documented == {env_name(name) for name in Settings.model_fields}

    def test_documented_defaults_match(self) -> None:
        rows = dict(
            re.findall(r"^\| `(WORKER_[A-Z_]+)` \| `([^`]+)` \|", CONFIGURATION, re.MULTILINE)
        )
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


def _fenced_blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """Each fenced block of a page: its line number, language, the line before it and its text."""
    lines = _page(path).splitlines()
    blocks = []
    start: int | None = None
    for number, line in enumerate(lines):
        if not line.startswith("```"):
            continue
        if start is None:
            start = number
        else:
            before = lines[start - 1] if start else ""
            text = "".join(f"{body}\n" for body in lines[start + 1 : number])
            blocks.append((start + 1, lines[start][3:].strip(), before, text))
            start = None
    assert start is None, f"{_name(path)}:{start}: a fenced block is not closed"
    return blocks


def _shown_examples() -> list[tuple[Path, str, str]]:
    """Each marked block of the docs: its page, the example file it names, and its text."""
    shown = []
    for page in PAGES:
        for _, _, before, text in _fenced_blocks(page):
            match = EXAMPLE_MARK.match(before)
            if match:
                shown.append((page, match.group(1), text))
    return shown


class TestExamples:
    """The docs show each file of docs/examples/ as it is, where tests build or run it."""

    def test_each_shown_file_is_the_file(self) -> None:
        shown = _shown_examples()
        assert shown
        for page, path, text in shown:
            assert text == (ROOT / path).read_text(encoding="utf-8"), (_name(page), path)

    def test_every_example_is_shown(self) -> None:
        examples = DOCS / "examples"
        files = {_name(p) for p in examples.iterdir() if p.is_file()}
        assert {path for _, path, _ in _shown_examples()} == files


class TestSnippets:
    """Every snippet of code in the docs is an example file that a test runs or builds.

    A fenced block says its language. Python, shell scripts, Dockerfiles, YAML and the like are
    example files, marked ``<!-- docs/examples/NAME -->`` on the line above (``TestExamples``
    checks they are the files); only ``console`` listings (commands to type, with what they
    print) and ``text`` (output, a layout) may stand unmarked.
    """

    @pytest.mark.parametrize("page", PAGES, ids=_name)
    def test_code_is_an_example_file(self, page: Path) -> None:
        for line, language, before, _ in _fenced_blocks(page):
            where = f"{_name(page)}:{line}"
            assert language, f"{where}: a fenced block without a language"
            if language not in UNMARKED_LANGUAGES:
                assert EXAMPLE_MARK.match(before), f"{where}: {language} that is not an example"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```$", "", _page(path), flags=re.MULTILINE | re.DOTALL)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        slug = _slug(heading)
        suffix = 0
        while (anchor := f"{slug}-{suffix}" if suffix else slug) in anchors:
            suffix += 1
        anchors.add(anchor)
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```$", "", _page(path), flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"\]\(([^)\s]+)\)", text)


class TestLinks:
    """Every relative link of the docs reaches a file of the repository, and a heading there."""

    def test_slugs_are_githubs(self) -> None:
        assert _slug("`message` handlers (the default)") == "message-handlers-the-default"
        assert _slug("The emulators, and where they are not SQS") == (
            "the-emulators-and-where-they-are-not-sqs"
        )
        assert _slug("Sizing the timeouts together") == "sizing-the-timeouts-together"

    def test_the_map_is_found(self) -> None:
        linked = set(_links(ROOT / "README.md"))
        assert {f"docs/{page.name}" for page in PAGES[1:]} <= linked

    @pytest.mark.parametrize("page", LINKED_PAGES, ids=_name)
    def test_links_resolve(self, page: Path) -> None:
        for link in [link for link in _links(page) if not re.match(r"[a-z]+:", link)]:
            target, _, anchor = link.partition("#")
            resolved = (page.parent / target).resolve() if target else page
            assert resolved.is_relative_to(ROOT), f"{_name(page)}: {link} leaves the repository"
            assert resolved.exists(), f"{_name(page)}: {link}: no such file"
            if anchor:
                assert resolved.suffix == ".md", f"{_name(page)}: {link}: an anchor in a non-page"
                assert anchor in _anchors(resolved), f"{_name(page)}: {link}: no such heading"


class TestShippedConfiguration:
    """The example configuration file loads."""

    def test_example_config_file_loads(self) -> None:
        settings = load_settings(config_file=ROOT / "config" / "worker.toml")
        assert settings.queue_name == "orders"
        assert settings.concurrency == 20


class TestMetricReference:
    """The metric tables of docs/observability.md list exactly the metrics the worker exports."""

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
        documented = set(
            re.findall(r"^\| `(worker_[a-z_]+)` \|", OBSERVABILITY, flags=re.MULTILINE)
        )
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
