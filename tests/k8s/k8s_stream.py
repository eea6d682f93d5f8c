"""Helpers of the k8s tests: run k8s/render.py and k8s/apply.py, load the stream.
The fake digests of testdata/ stand for the images (not needed to check manifests)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).absolute().parent     # not resolved: under Bazel, runfiles
K8S = HERE.parents[1] / "k8s"
FAKE_API_DIGEST = HERE / "testdata" / "api.digest"
FAKE_ML_DIGEST = HERE / "testdata" / "ml.digest"
REGISTRY = "registry.test:5000/churn"


def _render_module():
    """k8s/render.py as a module (a script, not a package): its COMPONENTS are the one list."""
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ALL_COMPONENTS: tuple[str, ...] = _render_module().COMPONENTS


def run_tool(tool: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a k8s tool as a script, with this test's import path (it imports churn.invocation)."""
    env = dict(os.environ if env is None else env, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, str(K8S / tool), *args], capture_output=True, text=True,
                          check=False, env=env)


def render_text(*extra: str, api: Path = FAKE_API_DIGEST, ml: Path = FAKE_ML_DIGEST) -> str:
    proc = run_tool("render.py", "--api-digest-file", str(api), "--ml-digest-file", str(ml), *extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def load(stream: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(stream) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def churn_config(docs: list[dict]) -> dict:
    """The churn config ConfigMap (name hashed by kustomize; other ConfigMaps, e.g. a dashboard, aside)."""
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"
                     and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "config"]
    return config_map
