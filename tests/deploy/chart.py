"""The Helm chart rendered by the pinned helm, one rendering per value set in ``helm/ci/``.

``python -m tests.deploy.chart DIR`` writes the renderings that ``.ci/check-helm`` hands to the
validators: ``DIR/all/<value set>.yaml``, and the same split into ``DIR/core/`` (the kinds
Kubernetes' OpenAPI schemas know) and ``DIR/crd/`` (KEDA's and the Prometheus operator's).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm"
BAD_VALUE_SETS = ROOT / ".ci" / "helm-bad-values"
RELEASE = "sqs-event-worker"
NAMESPACE = "sqs-worker"
# A current version; .ci/check-helm validates the renderings against the chart's floor too.
KUBE_VERSION = "1.31.0"
CRD_KINDS = frozenset({"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"})

Manifest = dict[str, Any]


def value_sets(folder: Path = CHART / "ci") -> list[Path]:
    """The value sets in ``folder``; none is an error, not a vacuous pass."""
    found = sorted(folder.glob("*.yaml"))
    if not found:
        raise FileNotFoundError(f"no value sets in {folder.relative_to(ROOT)}")
    return found


@dataclass(frozen=True)
class Rendering:
    """The manifests ``helm template`` rendered from one value set."""

    name: str
    manifests: list[Manifest] = field(repr=False)

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def only(self, kind: str) -> Manifest:
        """The one manifest of ``kind``; an error when there are none or several."""
        (manifest,) = self.of_kind(kind)
        return manifest

    def has(self, kind: str) -> bool:
        return bool(self.of_kind(kind))


def renderings_with(kind: str, renderings: dict[str, Rendering]) -> list[Rendering]:
    """The renderings that have a ``kind``; none is an error: the promise would go untested."""
    chosen = [r for r in renderings.values() if r.has(kind)]
    assert chosen, f"no value set in helm/ci renders a {kind}"
    return chosen


class Helm:
    """The pinned helm binary (``.ci/tools.sh`` installs it under ``.tools/`` on first use)."""

    def __init__(self) -> None:
        found = subprocess.run(
            ["bash", "-c", "source .ci/tools.sh && helm_binary"],  # noqa: S607 -- bash from PATH
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode != 0:  # a tool that cannot be had is an error, never a skip
            raise RuntimeError(f"helm cannot be had:\n{found.stderr}")
        self.binary = found.stdout.strip()

    def template(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``helm template`` of the chart with ``args``, whether or not it succeeds."""
        return subprocess.run(  # noqa: S603 -- the pinned helm, our arguments
            [self.binary, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def render(self, values: Path, *args: str) -> Rendering:
        """The chart rendered with ``values`` (and ``args``, e.g. ``--set``); it must render."""
        done = self.template("--kube-version", KUBE_VERSION, "-f", str(values), *args)
        if done.returncode != 0:
            raise RuntimeError(f"helm template failed with {values.name} {args}:\n{done.stderr}")
        manifests = [m for m in yaml.safe_load_all(done.stdout) if m]
        return Rendering(values.stem, manifests)


def write_renderings(helm: Helm, out: Path) -> Counter[str]:
    """Render every value set into ``out/all``, ``out/core`` and ``out/crd``; count the kinds."""
    kinds: Counter[str] = Counter()
    for values in value_sets():
        rendering = helm.render(values)
        kinds.update(m["kind"] for m in rendering.manifests)
        parts = {
            "all": rendering.manifests,
            "core": [m for m in rendering.manifests if m["kind"] not in CRD_KINDS],
            "crd": [m for m in rendering.manifests if m["kind"] in CRD_KINDS],
        }
        for part, manifests in parts.items():
            if manifests:
                (out / part).mkdir(parents=True, exist_ok=True)
                text = yaml.safe_dump_all(manifests, sort_keys=False)
                (out / part / f"{rendering.name}.yaml").write_text(text, encoding="utf-8")
    return kinds


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.deploy.chart DIR", file=sys.stderr)
        return 2
    try:
        kinds = write_renderings(Helm(), Path(argv[0]))
    except (RuntimeError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print("rendered:", ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
