"""The chart rendered once per session with each value set of ``helm/ci/``."""

from __future__ import annotations

import pytest

from tests.deploy.chart import Helm, Rendering, value_sets


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm()


@pytest.fixture(scope="session")
def renderings(helm: Helm) -> dict[str, Rendering]:
    """Every value set's rendering, by the value set's name."""
    return {values.stem: helm.render(values) for values in value_sets()}


@pytest.fixture(params=[values.stem for values in value_sets()])
def rendering(request: pytest.FixtureRequest, renderings: dict[str, Rendering]) -> Rendering:
    """Each value set's rendering in turn: a promise every rendering keeps."""
    name: str = request.param
    return renderings[name]
