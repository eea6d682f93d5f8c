"""Several writers at once, in separate processes: promotions, retrains, merges into one area.

Each test starts its processes together (they wait on a shared start time), then checks what
a reader finds: the production alias explained by an unbroken chain of committed history
lines, every area a complete generation, a finished training record, no lost file, no temp
file.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import faultkit as fk
from churn.registry.registry import ModelRegistry
from churn.storage.generations import current, publish
from churn.storage.paths import DataPaths

MAIN = Path(os.environ.get("TEST_SRCDIR", "."), os.environ.get("TEST_WORKSPACE", "_main"), "apps/ml_jobs/main.py")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    return fk.seed_root(fk.load_cli(), tmp_path_factory.mktemp("seeded") / "root")


def _start_all(config: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, str(MAIN), "--config", str(config), *argv], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in commands]
    out = []
    for argv, p in zip(commands, procs):
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(argv, p.returncode, stdout, stderr))
    return out


def _check_history_chain(root: Path) -> list[dict]:
    """Committed alias changes form one chain (each 'from' is the previous 'to'), nothing
    pending, and the last one is what the alias says."""
    registry = ModelRegistry(root)
    history = registry.history()
    assert not [e for e in history if e.get("state") == "pending"], history
    changes = registry.effective_changes()
    for prev, nxt in zip(changes, changes[1:]):
        assert nxt["from"] == prev["to"], (prev, nxt)
    assert registry.explain_alias() == changes[-1]
    return changes


def test_concurrent_promotions_and_rollbacks_keep_one_explained_chain(seeded, tmp_path):
    root = tmp_path / "root"
    fk.copy_root(seeded, root)
    config = fk.write_config(root)
    registry = ModelRegistry(root)
    a, b = registry.get_alias(), fk.other_version(root)
    # one change after the seed's, so every rollback below has a previous version to go to
    assert fk.run_cli(fk.load_cli(), config, ["promote", "--version", b, "--force", "--reason", "setup"]).code == 0
    before = len(registry.effective_changes())
    commands = [["promote", "--version", v, "--force", "--reason", f"p{i}"] for i, v in enumerate([b, a, b, a, b, a])]
    commands += [["rollback", "--reason", "r1"], ["rollback", "--reason", "r2"]]
    results = _start_all(config, commands)
    assert [r.returncode for r in results] == [0] * len(commands), [r.stderr[-500:] for r in results]
    changes = _check_history_chain(root)
    promoted = sum("PROMOTED" in r.stdout and "NOT PROMOTED" not in r.stdout for r in results[:6])
    rolled = sum(1 for r in results[6:] if "production:" in r.stdout)
    assert len(changes) - before == promoted + rolled
    assert registry.get_alias() in (a, b)
    assert not fk.temp_entries(root)


def _check_training_record(root: Path, results: list[subprocess.CompletedProcess], before: set[str]) -> dict:
    """last_training_run.json is complete and names exactly the models of ONE of the runs
    (each run prints its versions), its best among them, all loadable."""
    registry = ModelRegistry(root)
    record = fk.read_json(root / "registry" / "last_training_run.json")
    assert record["status"] == "complete", record
    new = set(registry.versions()) - before
    assert set(record["versions"]) <= new and record["best"] in record["versions"], (record, new)
    assert len(new) == 2 * len(results), (new, "every run registered its two models")
    owners = [r for r in results if all(v in r.stdout for v in record["versions"])]
    assert len(owners) == 1, ("the record is one run's", record["versions"], [r.stdout[-400:] for r in results])
    for version in record["versions"]:
        registry.load(version)
    return record


def test_concurrent_retrains_and_scoring_leave_complete_state(seeded, tmp_path):
    """Two retrains on a new day (each: update, training set, train, promote) with scoring and
    monitoring at once: complete generations, features and labels built from the current
    processed/, one explained history chain, one run's training record."""
    root = tmp_path / "root"
    fk.copy_root(seeded, root)
    config = fk.write_config(root)
    cli = fk.load_cli()
    for argv in (["generate", "--next-days", "1"], ["ingest-inbox"]):  # so both retrains have an update to do
        assert fk.run_cli(cli, config, argv).code == 0, argv
    before = set(ModelRegistry(root).versions())
    results = _start_all(config, [["retrain"], ["retrain"], ["batch-score"], ["drift-check"], ["score-distribution"]])
    assert [r.returncode for r in results] == [0] * 5, [(r.args, [l for l in r.stderr.splitlines() if "error" in l])
                                                       for r in results]
    for area in ("processed", "features", "labels", "monitoring/drift", "monitoring/score_distribution"):
        gen = current(root, area)
        assert gen is not None and gen.verify() == [], area
    processed = current(root, "processed")
    for area in ("features", "labels"):  # not stale: built from the processed/ that is current
        assert current(root, area).inputs["processed"]["digest"] == processed.digest, area
    _check_history_chain(root)
    _check_training_record(root, results[:2], before)
    assert not fk.temp_entries(root)


def test_two_trains_at_once_leave_one_runs_record_and_a_plain_promote_uses_it(seeded, tmp_path):
    root = tmp_path / "root"
    fk.copy_root(seeded, root)
    config = fk.write_config(root)
    before = set(ModelRegistry(root).versions())
    results = _start_all(config, [["train"], ["train"]])
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-800:] for r in results]
    record = _check_training_record(root, results, before)
    (promote,) = _start_all(config, [["promote", "--force", "--reason", "after two trains"]])
    assert promote.returncode == 0, promote.stderr[-800:]
    assert ModelRegistry(root).get_alias() == record["best"]
    _check_history_chain(root)
    assert not fk.temp_entries(root)


def _publish_one(root: str, index: int, start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    with publish(DataPaths.from_root(root), "predictions/2025-01-01", step=f"w{index}", merge=True) as pub:
        (pub.dir / f"part-{index:02d}.txt").write_text(str(index))


def test_concurrent_merges_into_one_area_lose_no_file(tmp_path):
    root = tmp_path / "root"
    start_at = time.time() + 1.0
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_publish_one, args=(str(root), i, start_at)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    gen = current(root, "predictions/2025-01-01")
    assert gen is not None and sorted(gen.files) == [f"part-{i:02d}.txt" for i in range(8)]
    assert gen.verify() == [] and not fk.temp_entries(root)
