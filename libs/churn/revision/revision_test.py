"""The build revision: from .git to the status file (workspace_status.sh), to the module."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import _build as stamped  # the stamp = 1 variant of churn.revision._build

import churn.revision

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def status(workspace: Path) -> dict[str, str]:
    """Runs tools/oci/workspace_status.sh in `workspace` as Bazel does (cwd = the workspace)."""
    script = Path(os.environ["WORKSPACE_STATUS"]).resolve()
    out = subprocess.run(["sh", str(script)], cwd=workspace, capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def fake_git(workspace: Path, head: str, refs: dict[str, str] | None = None, packed: str = "") -> Path:
    git = workspace / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for ref, commit in (refs or {}).items():
        (git / ref).write_text(commit + "\n")
    if packed:
        (git / "packed-refs").write_text("# pack-refs with: peeled fully-peeled sorted\n" + packed)
    (git / "config").write_text('[remote "origin"]\n\turl = https://user:secret@example.org/churn.git\n')
    return workspace


def test_status_reads_a_branch_ref(tmp_path: Path) -> None:
    got = status(fake_git(tmp_path, "ref: refs/heads/main", {"refs/heads/main": COMMIT}))
    assert got["STABLE_GIT_COMMIT"] == COMMIT
    assert got["STABLE_GIT_REMOTE_URL"] == "https://example.org/churn.git"  # credentials removed


def test_status_reads_a_packed_ref(tmp_path: Path) -> None:
    packed = f"{OTHER} refs/heads/other\n{COMMIT} refs/heads/main\n"
    assert status(fake_git(tmp_path, "ref: refs/heads/main", packed=packed))["STABLE_GIT_COMMIT"] == COMMIT


def test_status_reads_a_detached_head(tmp_path: Path) -> None:
    assert status(fake_git(tmp_path, COMMIT))["STABLE_GIT_COMMIT"] == COMMIT


def test_status_without_git_prints_no_commit(tmp_path: Path) -> None:
    assert "STABLE_GIT_COMMIT" not in status(tmp_path)


def module_text(status_text: str, tmp_path: Path) -> str:
    status_file = tmp_path / "stable-status.txt"
    status_file.write_text(status_text)
    script = Path(os.environ["WRITE_STAMP"]).resolve()
    return subprocess.run(["sh", str(script), str(status_file)], capture_output=True, text=True, check=True).stdout


def test_stamp_module_carries_the_commit(tmp_path: Path) -> None:
    text = module_text(f"BUILD_HOST h\nSTABLE_GIT_COMMIT {COMMIT}\nSTABLE_GIT_REMOTE_URL u\n", tmp_path)
    namespace: dict[str, str] = {}
    exec(text, namespace)  # the generated module is plain Python: run it as the import would
    assert namespace["REVISION"] == COMMIT


def test_stamp_module_without_a_commit_says_unstamped(tmp_path: Path) -> None:
    for text in ("", "BUILD_HOST h\n", "STABLE_GIT_COMMIT not-a-commit\n"):
        namespace: dict[str, str] = {}
        exec(module_text(text, tmp_path), namespace)
        assert namespace["REVISION"] == churn.revision.UNSTAMPED


def test_the_stamped_build_has_a_commit_or_no_git() -> None:
    # Built with stamp = 1 from this workspace's real status: a commit, unless built from a tree
    # without .git (a source archive), where workspace_status.sh prints none.
    assert re.fullmatch(r"[0-9a-f]{40}", stamped.REVISION) or stamped.REVISION == churn.revision.UNSTAMPED


def test_tests_are_unstamped_builds() -> None:
    # `bazel test` does not pass --stamp (only `bazel run` does, .bazelrc): cache-friendly.
    assert churn.revision.code_revision() == churn.revision.UNSTAMPED
