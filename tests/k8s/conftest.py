"""Fixtures: the manifest streams rendered by k8s/render.py (see k8s_stream)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.k8s.k8s_stream import ALL_COMPONENTS, FAKE_API_DIGEST, FAKE_ML_DIGEST, REGISTRY, load, render_text


@pytest.fixture(scope="session")
def default_docs() -> list[dict]:
    return load(render_text("--registry", REGISTRY))


@pytest.fixture(scope="session")
def full_docs() -> list[dict]:
    """With every component: the Indexed Job and the RWO variant are checked too."""
    return load(render_text("--registry", REGISTRY, *(f"--component={c}" for c in ALL_COMPONENTS)))


@pytest.fixture(params=["default", "all-components"])
def docs(request: pytest.FixtureRequest, default_docs: list[dict], full_docs: list[dict]) -> list[dict]:
    return default_docs if request.param == "default" else full_docs


@pytest.fixture(scope="session")
def built() -> tuple[str, Path, Path]:
    """The stream that `bazel build //k8s:render` made, with the digest files it used.
    Outside Bazel (no CHURN_K8S_* variables), the same thing made here with render.py."""
    if "CHURN_K8S_RENDERED" in os.environ:
        return (Path(os.environ["CHURN_K8S_RENDERED"]).read_text(),
                Path(os.environ["CHURN_K8S_API_DIGEST"]), Path(os.environ["CHURN_K8S_ML_DIGEST"]))
    return render_text(), FAKE_API_DIGEST, FAKE_ML_DIGEST
