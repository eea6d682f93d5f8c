"""Fault injection into `bootstrap`'s own record: a crash at each write of `bootstrap.json`.

`bootstrap` writes `bootstrap.json` (status, the steps done) before its first step, after
each step and once complete: 11 writes, each replacing the file by one rename. A crash at
the rename of write k (the bootstrap Job's pod killed there) leaves the record of write k-1
(none for the first) beside the outputs of every step up to the one just finished; the next
`bootstrap` (the Job's retry) must skip exactly the steps that record names, rerun the
others (the one just finished again: its outputs are replaced atomically) and end complete,
with the state of a clean bootstrap and no temp entry. A crash at the record's write point
(before its temp exists) leaves the same record without the temp, so the renames are the
points that matter; the steps' own points are covered by their targets.

Each injection is a whole bootstrap (the run up to the crash, then the rerun), so the world
is smaller than the other targets' (`USERS` x `DAYS`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import bootstrap, bootstrap_record_path, bootstrap_steps, last_complete_run
from churn.pipeline.testing import tiny_settings
from churn.registry.registry import ModelRegistry
from churn.storage import faults
from churn.storage.files import read_json
from churn.storage.paths import DataPaths

from tests.consistency import faultsuite

USERS, DAYS = 100, 80
# compared with the clean bootstrap by content (the other outputs name model versions, whose
# ids carry their registration time: checked by name and completeness instead)
COMPARED = ("raw", "derived", "training_set", "training")


def _settings(root: Path) -> Settings:
    return tiny_settings(root, users=USERS, days=DAYS)


def _state(root: Path) -> dict[str, Any]:
    """What readers see: the compared areas by content; the production alias (the last complete
    run's best); the files of the predictions, drift and score-distribution outputs (each read
    verified: a torn one fails here)."""
    state: dict[str, Any] = {name: faultsuite.STATE_READERS[name](root, None) for name in COMPARED}
    # the update's state records the raw batches it read: a world generated again (the rerun
    # of an interrupted generate) is another batch of the same content
    state["derived"].pop("update_state.json")
    # likewise the cards' digests of the training set and the holdout (those files record the
    # tables generation they were sampled from, `built_from`: another id, the same rows)
    state["training"]["models"] = [_without_file_digests(card) for card in state["training"]["models"]]
    record = last_complete_run(DataPaths.from_root(root))
    production = ModelRegistry(root).get_alias()
    state["production_is_the_best"] = production is not None and record is not None and production == record["best"]
    for name in ("predictions", "drift", "score_distribution"):
        seen = faultsuite.STATE_READERS[name](root, None)
        state[name] = sorted(seen) if name != "predictions" else {day: sorted(files) for day, files in seen.items()}
    return state


def _without_file_digests(card: str) -> str:
    doc = json.loads(card)
    doc.pop("files_sha256", None)
    doc.get("training_data", {}).pop("digest", None)
    return json.dumps(doc, sort_keys=True)


def _differs(seen: Any, expected: Any) -> Any:
    """The keys whose values differ (a readable assertion message)."""
    if isinstance(seen, dict) and isinstance(expected, dict):
        return sorted(k for k in {*seen, *expected} if seen.get(k) != expected.get(k))
    return (seen, expected)


def test_a_crash_at_each_write_of_the_bootstrap_record_is_finished_by_the_next_bootstrap(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    names = [name for name, _ in bootstrap_steps(_settings(tmp_path))]
    clean = tmp_path / "clean"
    recorder = faults.Recorder()
    with faults.injecting(recorder):
        results = bootstrap(_settings(clean))
    assert [r.exit_code for r in results] == [0] * len(names), [(r.name, r.message) for r in results]
    record_path = bootstrap_record_path(clean)
    writes = [i for i, (op, path) in enumerate(recorder.ops, 1) if path == record_path and op == "rename"]
    assert len(writes) == len(names) + 2, writes  # before the first step, after each step, complete
    expected = _state(clean)
    assert expected["production_is_the_best"] and all(expected.values()), expected
    consistent = 0
    for k, at in enumerate(writes):
        root = tmp_path / f"crash-{k}"
        fail = faults.FailAt(at, "crash")
        with faults.injecting(fail), pytest.raises(faults.SimulatedCrash):
            bootstrap(_settings(root))
        assert fail.fired == ("rename", bootstrap_record_path(root)), fail.fired
        where = (k, at, len(recorder.ops))
        # the record left is the previous write's: the steps finished before the one that just ran
        done = names[:max(0, k - 1)]
        record = read_json(bootstrap_record_path(root)) if bootstrap_record_path(root).is_file() else None
        if k == 0:
            assert record is None, (*where, record)
        else:
            assert record is not None and record["status"] == "running" and record["done"] == done, (*where, record)
        faultsuite.explain(root)
        rerun = bootstrap(_settings(root))  # the Job's retry
        assert [r.exit_code for r in rerun] == [0] * len(names), (*where, [(r.name, r.message) for r in rerun])
        skipped = [r.name for r in rerun if r.message.endswith("done before the interruption, skipped")]
        assert skipped == done, (*where, skipped)
        final = read_json(bootstrap_record_path(root))
        assert final["status"] == "complete" and final["done"] == names, (*where, final)
        state = _state(root)
        assert state == expected, (*where, {name: _differs(state[name], expected[name]) for name in state
                                            if state[name] != expected[name]})
        faultsuite.explain(root)
        assert not faultsuite.temps(root), (*where, faultsuite.temps(root))
        again = bootstrap(_settings(root))  # complete now: a no-op
        assert len(again) == 1 and again[0].exit_code == 0 and "already bootstrapped" in again[0].message, where
        consistent += 1
    print(f"fault injection bootstrap (bootstrap.json): {len(recorder.ops)} points of the whole bootstrap, "
          f"{len(writes)} record writes, {len(writes)} crashes injected (one at each write's rename), "
          f"{consistent} consistent ({USERS} users, {DAYS} days), {time.perf_counter() - t0:.0f} s")
    assert consistent == len(writes)
