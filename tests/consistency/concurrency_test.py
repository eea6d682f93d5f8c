"""Several writers at once, in separate processes: promotions and rollbacks of one registry.

The processes start together; then a reader must find the production alias explained by an
unbroken chain of committed history lines (the registry journal, docs/consistency.md),
nothing pending, and no temp file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from churn.pipeline.steps import bootstrap
from churn.pipeline.testing import TINY_YAML, tiny_settings
from churn.registry.registry import ModelRegistry
from churn.storage.filelock import FileLock
from churn.storage.files import is_temp_name
from churn.storage.paths import DataPaths

MAIN = Path(os.environ.get("TEST_SRCDIR", "."), os.environ.get("TEST_WORKSPACE", "_main"), "apps/ml_jobs/main.py")
USERS, DAYS = 150, 90


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeded") / "root"
    results = bootstrap(tiny_settings(root, users=USERS, days=DAYS))
    assert [r.exit_code for r in results] == [0] * len(results), [(r.name, r.message) for r in results]
    return root


def _run_all(config: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    return _collect(commands, _start(config, commands))


def _start(config: Path, commands: list[list[str]]) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return [subprocess.Popen([sys.executable, str(MAIN), "--config", str(config), *argv], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in commands]


def _wait_until_open(procs: list[subprocess.Popen], path: Path, timeout_s: float = 300) -> None:
    """Until every process has `path` open (a lock it is waiting for: FileLock opens the file
    before its first flock()); bounded, and fails if one exits first."""
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} process(es) never opened {path}"
        for p in list(pending):
            assert p.poll() is None, f"pid {p.pid} exited ({p.returncode}) before waiting for {path}"
            with contextlib.suppress(OSError):
                if any(os.path.realpath(f"/proc/{p.pid}/fd/{fd}") == str(path.resolve())
                       for fd in os.listdir(f"/proc/{p.pid}/fd")):
                    pending.remove(p)
        time.sleep(0.05)


def _collect(commands: list[list[str]], procs: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    out = []
    for argv, p in zip(commands, procs):
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(argv, p.returncode, stdout, stderr))
    return out


def test_concurrent_promotions_and_rollbacks_keep_one_explained_chain(seeded: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(seeded, root, symlinks=True)
    config = tmp_path / "config.yaml"
    config.write_text(TINY_YAML.format(root=root, users=USERS, days=DAYS))
    registry = ModelRegistry(root)
    a = registry.get_alias()
    record = json.loads((root / "registry" / "last_training_run.json").read_text())
    b = next(v for v in record["versions"] if v != a)
    # one change after the seed's, so every rollback below has a previous version to go to
    (setup,) = _run_all(config, [["promote", "--version", b, "--force", "--reason", "setup"]])
    assert setup.returncode == 0, setup.stderr
    before = len(registry.effective_changes())
    commands = [["promote", "--version", v, "--force", "--reason", f"p{i}"] for i, v in enumerate([b, a, b, a, b, a])]
    commands += [["rollback", "--reason", "r1"], ["rollback", "--reason", "r2"]]
    results = _run_all(config, commands)
    assert [r.returncode for r in results] == [0] * len(commands), [r.stderr[-500:] for r in results]
    history = registry.history()
    assert not [e for e in history if e.get("state") == "pending"], history
    changes = registry.effective_changes()
    for prev, nxt in zip(changes, changes[1:]):
        assert nxt["from"] == prev["to"], (prev, nxt)
    assert registry.explain_alias() == changes[-1]
    promoted = sum("PROMOTED" in r.stdout and "NOT PROMOTED" not in r.stdout for r in results[:6])
    rolled = sum(1 for r in results[6:] if "production:" in r.stdout)
    assert len(changes) - before == promoted + rolled
    assert registry.get_alias() in (a, b)
    assert not [p for p in root.rglob("*") if is_temp_name(p.name)]


def test_concurrent_retrains_and_a_promote_leave_a_consistent_registry(seeded: Path, tmp_path: Path) -> None:
    """Two `train` and a plain `promote` at once: the trains take turns (`locks/train.lock`),
    the promote either promotes a complete run's best or is refused in one line (a train is
    running); then every version is complete, the run record is complete and names its own
    versions, the history explains the alias, and no temp is left."""
    root = tmp_path / "root"
    shutil.copytree(seeded, root, symlinks=True)
    config = tmp_path / "config.yaml"
    config.write_text(TINY_YAML.format(root=root, users=USERS, days=DAYS))
    registry = ModelRegistry(root)
    before = set(registry.versions())
    commands = [["train"], ["train"], ["promote", "--reason", "during the retrains"]]
    lock_path = DataPaths.from_root(root).locks / "train.lock"
    # held here until both trains wait for it: two trains of 0.5 s started together did not
    # always meet (their start-up took longer than a train), so neither waited
    with FileLock(lock_path):
        procs = _start(config, commands)
        _wait_until_open(procs[:2], lock_path)
    results = _collect(commands, procs)
    trains, promote = results[:2], results[2]
    assert [r.returncode for r in trains] == [0, 0], [r.stderr[-800:] for r in trains]
    assert promote.returncode in (0, 1), promote.stderr[-800:]
    if promote.returncode == 1:  # refused cleanly: one error line, no traceback
        assert "did not finish" in promote.stderr and "Traceback" not in promote.stderr, promote.stderr[-800:]
    record = json.loads((root / "registry" / "last_training_run.json").read_text())
    assert record["status"] == "complete" and record["best"] in record["versions"], record
    new = set(registry.versions()) - before
    assert len(new) == 4 and set(record["versions"]) <= new, (new, record["versions"])
    for version in registry.versions():  # each version complete: its model file verifies against its card
        registry.load(version)
    # both waited for the lock this test held, and said who held it; then they took turns
    waited = [r for r in trains if "train.lock: waiting for the lock" in r.stderr
              and f"held by pid {os.getpid()}" in r.stderr]
    assert len(waited) == 2, [r.stderr[-800:] for r in trains]
    registry.reconcile()
    assert registry.explain_alias() is not None
    assert not [e for e in registry.history() if e.get("state") == "pending"]
    assert not [p for p in root.rglob("*") if is_temp_name(p.name)]
