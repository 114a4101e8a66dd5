"""The chart's files agree with the project's, and its values are documented."""

from __future__ import annotations

import yaml

from tests.deploy import helm_values
from tests.deploy.chart import CHART, ROOT
from worker import __version__


class TestCopies:
    """What the chart ships from the project is the project's."""

    def test_files_alerts_is_config_alerts(self) -> None:
        copy, original = CHART / "files" / "alerts.yml", ROOT / "config" / "alerts.yml"
        assert copy.read_bytes() == original.read_bytes(), (
            "helm/files/alerts.yml differs: cp config/alerts.yml helm/files/alerts.yml"
        )

    def test_app_version_is_the_worker_version(self) -> None:
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
        assert chart["appVersion"] == __version__


class TestValuesDocumentation:
    """Every value is described with a ``# --`` comment, and helm/README.md's table is the one
    generated from them."""

    def test_every_value_has_a_description(self) -> None:
        _, undocumented = helm_values.chart_values()
        assert undocumented == [], "values.yaml: values without a `# --` comment"

    def test_the_values_table_is_generated_from_values_yaml(self) -> None:
        documented, _ = helm_values.chart_values()
        readme = helm_values.README.read_text(encoding="utf-8")
        assert helm_values.table_in(readme) == helm_values.table(documented), (
            "helm/README.md's values table is not the one values.yaml gives: run make helm-docs"
        )

    def test_a_described_map_is_one_row_and_an_undescribed_one_is_walked(self) -> None:
        text = (
            "# -- A map, one row\n"
            "map:\n"
            "  inner: 1\n"
            "plain:\n"
            "  # -- A value\n"
            "  # on two lines\n"
            "  # @default -- in words\n"
            "  described: null\n"
            "  undescribed: 2\n"
        )
        plain = {"described": {"type": ["integer", "null"]}, "undescribed": {"type": "integer"}}
        schema = {"properties": {"map": {"type": "object"}, "plain": {"properties": plain}}}
        documented, undocumented = helm_values.values(text, schema)
        assert documented == [
            helm_values.Value("map", "object", "see values.yaml", "A map, one row"),
            helm_values.Value("plain.described", "int or null", "in words", "A value on two lines"),
        ]
        assert undocumented == ["plain.undescribed"]
