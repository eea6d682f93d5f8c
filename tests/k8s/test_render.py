"""k8s/render.py and k8s/apply.py: digests stamped as given, clear errors, atomic output,
and what apply sends to kubectl (a stub kubectl records it: there is no cluster here)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.k8s import k8s_policy as policy
from tests.k8s.k8s_stream import FAKE_API_DIGEST, FAKE_ML_DIGEST, REGISTRY, load, render_text, run_tool

DIGEST_ARGS = ["--api-digest-file", str(FAKE_API_DIGEST), "--ml-digest-file", str(FAKE_ML_DIGEST)]


def images(docs: list[dict]) -> dict[str, str]:
    return {w: c["image"] for w, _, c in policy.containers(docs)}


def test_built_stream_carries_the_given_digests(built: tuple[str, Path, Path]) -> None:
    stream, api_file, ml_file = built
    api, ml = api_file.read_text().strip(), ml_file.read_text().strip()
    registry = os.environ.get("CHURN_K8S_REGISTRY", "localhost:5000")
    found = images(load(stream))
    assert found["Deployment/churn-api[api]"] == f"{registry}/churn-api@{api}"
    assert {i for w, i in found.items() if w != "Deployment/churn-api[api]"} == {f"{registry}/churn-ml@{ml}"}


@pytest.mark.parametrize("components", [[], ["indexed-batch-score", "daily-simulator", "rwo-single-node"]])
def test_images_only_by_digest_in_the_text(components: list[str]) -> None:
    """Read in the text, not the parsed pods: no image line anywhere has a tag."""
    text = render_text("--registry", REGISTRY, *(f"--component={c}" for c in components))
    refs = re.findall(r"image:\s*(\S+)", text)
    assert len(refs) >= 5   # api, bootstrap, daily, drift-check, retrain
    assert all(re.fullmatch(r"[^:@]+(:\d+)?/[^:@]+@sha256:[0-9a-f]{64}", r) for r in refs), refs


def test_registry_option_changes_only_the_registry() -> None:
    a = images(load(render_text("--registry", "one.test:5000")))
    b = images(load(render_text("--registry", "two.test/team/")))   # trailing slash tolerated
    assert a.keys() == b.keys()
    for where in a:
        assert a[where].replace("one.test:5000/", "two.test/team/") == b[where]


@pytest.mark.parametrize("content", ["", "sha256:abc", "sha512:" + "a" * 128, "sha256:" + "A" * 64, "latest"])
def test_bad_digest_file_is_named(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "broken.digest"
    bad.write_text(content)
    proc = run_tool("render.py", "--api-digest-file", str(FAKE_API_DIGEST), "--ml-digest-file", str(bad))
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"digest file {bad}" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_digest_file_is_named(tmp_path: Path) -> None:
    proc = run_tool("render.py", "--api-digest-file", str(tmp_path / "nope"), "--ml-digest-file", str(FAKE_ML_DIGEST))
    assert proc.returncode == 1 and f"cannot read digest file {tmp_path / 'nope'}" in proc.stderr


@pytest.mark.parametrize("registry", ["http://localhost:5000", "localhost:5000/churn:1.0", "a b"])
def test_bad_registry_is_rejected(registry: str) -> None:
    proc = run_tool("render.py", *DIGEST_ARGS, "--registry", registry)
    assert proc.returncode == 1 and "invalid --registry" in proc.stderr


def test_no_kustomize_nor_kubectl_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_tool("render.py", *DIGEST_ARGS, env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 1
    assert "neither `kustomize` nor `kubectl` was found on PATH" in proc.stderr


def test_output_file_is_written_whole(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "churn-mlops.yaml"
    proc = run_tool("render.py", *DIGEST_ARGS, "--registry", REGISTRY, "--output", str(out))
    assert proc.returncode == 0 and proc.stdout == ""
    assert out.read_text() == render_text("--registry", REGISTRY)
    assert sorted(p.name for p in out.parent.iterdir()) == ["churn-mlops.yaml"]   # no temp file left


def test_relative_output_is_written_where_the_user_ran_bazel_run(tmp_path: Path) -> None:
    caller = tmp_path / "caller"
    caller.mkdir()
    env = {**os.environ, "BUILD_WORKING_DIRECTORY": str(caller)}
    proc = run_tool("render.py", *DIGEST_ARGS, "--registry", REGISTRY, "--output", "out/churn.yaml", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (caller / "out" / "churn.yaml").read_text() == render_text("--registry", REGISTRY)
    assert not Path("out/churn.yaml").exists()  # not in the tool's own (runfiles) directory


def test_failed_render_leaves_an_existing_output_alone(tmp_path: Path) -> None:
    out = tmp_path / "churn-mlops.yaml"
    out.write_text("previous\n")
    proc = run_tool("render.py", "--api-digest-file", "/nonexistent", "--ml-digest-file", str(FAKE_ML_DIGEST),
                    "--output", str(out))
    assert proc.returncode == 1 and out.read_text() == "previous\n"


def test_apply_dry_run_prints_the_stream_and_calls_no_kubectl(tmp_path: Path) -> None:
    log = tmp_path / "kubectl.log"
    env = stub_kubectl(tmp_path, log, existing=[])
    proc = run_tool("apply.py", *DIGEST_ARGS, "--registry", REGISTRY, "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == render_text("--registry", REGISTRY)
    assert not log.exists() or "apply" not in log.read_text()


def test_apply_sends_the_stream_server_side_and_skips_existing_jobs(tmp_path: Path) -> None:
    log = tmp_path / "kubectl.log"
    env = stub_kubectl(tmp_path, log, existing=["churn-bootstrap"])
    proc = run_tool("apply.py", *DIGEST_ARGS, "--registry", REGISTRY, "--component", "indexed-batch-score", env=env)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().split("\n=====\n")
    assert "get job churn-bootstrap -n churn-mlops --ignore-not-found -o name\n" in calls
    assert "get job churn-batch-score-indexed -n churn-mlops --ignore-not-found -o name\n" in calls
    apply_call = next(c for c in calls if c.startswith("apply"))
    assert apply_call.splitlines()[0] == "apply --server-side --field-manager=churn-mlops -f -"
    sent = load(apply_call.split("\n", 1)[1])
    expected = [d for d in load(render_text("--registry", REGISTRY, "--component", "indexed-batch-score"))
                if (d["kind"], d["metadata"]["name"]) != ("Job", "churn-bootstrap")]
    assert sent == expected
    assert "skip   Job/churn-bootstrap" in proc.stderr
    assert "apply  Deployment/churn-api -n churn-mlops" in proc.stderr
    assert "apply  Job/churn-batch-score-indexed -n churn-mlops" in proc.stderr


def test_apply_reports_a_failing_kubectl(tmp_path: Path) -> None:
    env = stub_kubectl(tmp_path, tmp_path / "kubectl.log", existing=[], apply_exit=3)
    proc = run_tool("apply.py", *DIGEST_ARGS, env=env)
    assert proc.returncode == 3 and "kubectl apply failed (exit 3)" in proc.stderr


def stub_kubectl(tmp_path: Path, log: Path, existing: list[str], apply_exit: int = 0) -> dict[str, str]:
    """A `kubectl` first on PATH: `kustomize` goes to the real tool, anything else is
    recorded (arguments, then stdin) and answered as a cluster holding `existing` Jobs."""
    real = shutil.which("kubectl")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "kubectl"
    stub.write_text(f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
if args[:1] == ["kustomize"]:
    os.execv({real!r}, [{real!r}, *args])
with open({str(log)!r}, "a") as f:
    f.write(("\\n=====\\n" if f.tell() else "") + " ".join(args) + "\\n")
    if args[:1] == ["apply"]:
        f.write(sys.stdin.read())
if args[:2] == ["get", "job"] and args[2] in {existing!r}:
    print("job.batch/" + args[2])
sys.exit({apply_exit} if args[:1] == ["apply"] else 0)
""")
    stub.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
