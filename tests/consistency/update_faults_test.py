"""Fault injection into the daily `update`: grid, features, labels and state switch together.

Before the tables were one generation (`churn.storage.derived`), `update` replaced the day
files of three folders one at a time and its state file last: a kill in between left new
feature days beside old grid days and an old state. The seeded root's world goes on one
day into the inbox and is ingested (once per target), so the update under test recomputes
the newest days of every table and carries the others; the reader is the area `tables` as a
step sees it (every file of the current generation, read verified). The in-process sharded
path (three shards, merged then published once) is the same command with smaller shards.
`merge-update 3` (the Indexed Job's one publisher) runs over the three pods' shard folders:
its shard folders are removed only after the publish, and a merge killed after the publish
is finished by its rerun (the MANIFEST names the plan it merged).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import threading
from pathlib import Path
from typing import Callable

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import (
    StepResult,
    step_batch_score,
    step_daily,
    step_features,
    step_generate_next,
    step_ingest_inbox,
    step_labels,
    step_merge_update,
    step_prepare,
    step_update,
)

from churn.storage import faults

from tests.consistency import faultsuite


@pytest.fixture(scope="module")
def inboxed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded root with one new day of its world waiting in the inbox (`generate --next-days 1`)."""
    root = faultsuite.seed(tmp_path_factory.mktemp("inboxed") / "root")
    result = step_generate_next(faultsuite.settings_for(root), 1)
    assert result.exit_code == 0, result.message
    return root


def _then(root: Path, dest: Path, step: Callable[[Settings], StepResult]) -> Path:
    """A copy of `root` at `dest` after `step` ran on it."""
    shutil.copytree(root, dest, symlinks=True)
    result = step(faultsuite.settings_for(dest))
    assert result.exit_code == 0, result.message
    return dest


@pytest.fixture(scope="module")
def seeded(inboxed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """After `ingest-inbox`: the raw data has a day the tables do not have yet."""
    return _then(inboxed, tmp_path_factory.mktemp("seeded") / "root", step_ingest_inbox)


PODS = 3


@pytest.fixture(scope="module")
def sharded(seeded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded root after the three pods of an Indexed Job (`update --shard I/3`)."""
    root = tmp_path_factory.mktemp("sharded") / "root"
    shutil.copytree(seeded, root, symlinks=True)
    for i in range(PODS):
        result = step_update(faultsuite.settings_for(root), (i, PODS))
        assert result.exit_code == 0 and "written" in result.detail["reason"], result.message
    return root


def _merge_update(settings: Settings) -> StepResult:
    return step_merge_update(settings, PODS)


def _no_shard_folder(root: Path) -> None:
    assert not (root / "shards" / "update").exists(), "the merged shards are removed by the merge or its rerun"


def _in_three_shards(settings: Settings) -> StepResult:
    """`update` with 70 users a shard: the tiny root's 200 users in 3 shards, in one process.

    `workers: 1`: every storage operation of the step is its own process's, whatever the
    workers (they only read), so the injection points are the same; 2 workers passed this
    suite too but spawned 2 interpreters for each of its ~40 runs (310 s against 24-60 s at a
    load of 7). A failure mid-pool with 2 workers: `//libs/churn/daily:shards_test`."""
    sharding = dataclasses.replace(settings.sharding, shard_users=70, workers=1)
    return step_update(dataclasses.replace(settings, sharding=sharding))


def test_update_shows_the_old_or_the_new_tables_after_a_fault_at_each_point(seeded: Path, tmp_path: Path) -> None:
    counts = faultsuite.run_suite(faultsuite.Command("update", step_update, ("tables",)), seeded, tmp_path)
    assert counts.consistent == counts.injections > 0
    # visible to readers: the generation renamed into place, the pointer (the day files, the
    # users snapshot, the state and the MANIFEST are renamed inside the generation being written)
    assert counts.commit_points == 2


def test_an_update_in_shards_in_one_process_publishes_once(seeded: Path, tmp_path: Path) -> None:
    command = faultsuite.Command("update (3 shards in one process)", _in_three_shards, ("tables",))
    # both commit points and 8 others (most are the carry's links: the same code as above)
    counts = faultsuite.run_suite(command, seeded, tmp_path, sample=8)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points == 2


def test_merge_update_shows_the_old_or_the_new_tables_after_a_fault_at_each_point(sharded: Path,
                                                                                   tmp_path: Path) -> None:
    command = faultsuite.Command("merge-update", _merge_update, ("tables",), after_rerun=_no_shard_folder)
    counts = faultsuite.run_suite(command, sharded, tmp_path, sample=8)  # as above: the links are sampled
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points == 2


# prepare, features, labels (the step-by-step path): each publishes its table into a new
# generation of `tables`, carrying the others; their other points (day files, links) are the
# publish code update's test samples, so only their commit points are injected (CI time).
TABLE_SAMPLE = 0


def test_prepare_shows_the_old_or_the_new_tables_and_report(seeded: Path, tmp_path: Path) -> None:
    """The grid recomputed with the new day (the features and labels carried); the prepare
    report is its own file, replaced after the publish."""
    command = faultsuite.Command("prepare", step_prepare, ("tables",),
                                 readers={"prepare_report": faultsuite.prepare_report_state})
    counts = faultsuite.run_suite(command, seeded, tmp_path, sample=TABLE_SAMPLE)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points == 3  # the generation, the pointer, the report


@pytest.fixture(scope="module")
def prepared(seeded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _then(seeded, tmp_path_factory.mktemp("prepared") / "root", step_prepare)


def test_features_shows_the_old_or_the_new_tables(prepared: Path, tmp_path: Path) -> None:
    """The features of the grid prepare wrote (with the new day)."""
    counts = faultsuite.run_suite(faultsuite.Command("features", step_features, ("tables",)), prepared, tmp_path,
                                  sample=TABLE_SAMPLE)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points == 2


def test_labels_shows_the_old_or_the_new_tables_and_training_set(prepared: Path, tmp_path: Path) -> None:
    """The labels, then the training set built from them (its own file, replaced after the
    publish): each old or new."""
    featured = _then(prepared, tmp_path / "featured", step_features)
    command = faultsuite.Command("labels", step_labels, ("tables",),
                                 readers={"training_set": faultsuite.training_set_state})
    (tmp_path / "work").mkdir()
    counts = faultsuite.run_suite(command, featured, tmp_path / "work", sample=TABLE_SAMPLE)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points == 3  # the generation, the pointer, the training set


def test_ingest_inbox_shows_the_old_or_the_new_raw_data_and_inbox(inboxed: Path, tmp_path: Path) -> None:
    """The waiting batch: the raw store's state with its verdict (one commit, the manifest),
    then the folder moved to `inbox/done/` (a crash in between: the rerun finds the batch
    stored, adds nothing and moves it)."""
    command = faultsuite.Command("ingest-inbox", step_ingest_inbox,
                                 readers={"raw": faultsuite.raw_and_verdict, "inbox": faultsuite.inbox_state},
                                 after_rerun=faultsuite.no_unlisted_raw_file)
    counts = faultsuite.run_suite(command, inboxed, tmp_path)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points >= 3  # the part file, the manifest, the batch folder's move


def _daily(settings: Settings) -> StepResult:
    """`ml_jobs daily`: its first failing step's result, else the last one's."""
    results = step_daily(settings)
    return next((r for r in results if r.exit_code != 0), results[-1])


# daily: every commit point of its four steps (a crash between two steps is what this target
# adds), and this many of its other points (most are update's carry links, covered above)
DAILY_SAMPLE = 2


def test_daily_shows_each_area_old_or_new_and_its_rerun_finishes_the_cycle(inboxed: Path, tmp_path: Path) -> None:
    """ingest-inbox -> update -> batch-score -> score-distribution, each committing on its
    own: after a fault anywhere each area is old or new, and the rerun of `daily` reaches the
    clean run's state of every area."""
    command = faultsuite.Command("daily", _daily, ("tables",), readers={
        "raw": faultsuite.raw_and_verdict, "inbox": faultsuite.inbox_state,
        "predictions": faultsuite.predictions_state, "score_distribution": faultsuite.score_distribution_state},
        after_rerun=faultsuite.no_unlisted_raw_file)
    counts = faultsuite.run_suite(command, inboxed, tmp_path, sample=DAILY_SAMPLE)
    assert counts.consistent == counts.injections > 0


# daily --shard I/3: the pod under faults is the last of the three at the update barrier and
# the only one to reach the scores' merge, so it runs every global step (merge-update,
# merge-shards, score-distribution, the merge record) and its points are the same in every run
POD = 2
POD_SAMPLE = 2  # of its other points (most are merge-update's carry links, sampled above)
POD_WAIT_S = 120  # sharding.wait_seconds for the pod: a broken barrier fails, it does not hang


@pytest.fixture(scope="module")
def pods_waiting(seeded: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The seeded root as pods 0 and 1 leave it at the update barrier: the inbox ingested (by
    the first pod to take the cycle lock) and their update shards written; and the new day."""
    root = tmp_path_factory.mktemp("pods") / "root"
    shutil.copytree(seeded, root, symlinks=True)
    for i in range(PODS):
        if i != POD:
            result = step_update(faultsuite.settings_for(root), (i, PODS))
            assert result.exit_code == 0 and "written" in result.detail["reason"], result.message
    return root, result.detail["newest_day"]


def merged_predictions_state(root: Path, seeded: Path | None = None) -> dict[str, dict[str, str]]:
    """`predictions_state` without the shards' own files: what a reader of a day's results
    reads (the merged scores, top-K and summary). Each pod's shard files are published into the
    day's area when that pod finishes scoring (the merge's input: a state between old and new
    by design; a day with only those has no results yet); they are still read, verified, by `view`."""
    merged = {day: {name: sha for name, sha in files.items() if ".shard-" not in name}
              for day, files in faultsuite.predictions_state(root, seeded).items()}
    return {day: files for day, files in merged.items() if files}


def _last_pod(newest: str) -> Callable[[Settings], StepResult]:
    """`daily --shard 2/3` (the pod's own code, `indexed_daily.step_daily_shard`) in this
    thread, and pods 0 and 1 scoring their shards in another (`batch-score --shard I/3` as of
    the new day: what they run after the update barrier), started at the pod's first storage
    point under predictions/<newest> (its own shard, after its merge-update): the pod waits for
    them at the scores' barrier and merges. Only the pod's points are counted and failed (the
    hook passes the other thread's through), so a crash kills the pod alone and the others'
    work is done, as in the Indexed Job, whose retry of the pod is the rerun."""
    def run(settings: Settings) -> StepResult:
        settings = dataclasses.replace(settings, sharding=dataclasses.replace(settings.sharding,
                                                                              wait_seconds=POD_WAIT_S))
        outer = faults._injector
        pod = threading.get_ident()
        others: list[threading.Thread] = []
        failures: list[str] = []
        day = Path(settings.paths.root) / "predictions" / newest

        def score_others() -> None:
            for i in range(PODS):
                if i != POD:
                    result = step_batch_score(settings, as_of=dt.date.fromisoformat(newest), shard=(i, PODS))
                    if result.exit_code:
                        failures.append(result.message)

        def hook(op: str, path: Path) -> None:
            if threading.get_ident() != pod:
                return
            dead = isinstance(outer, faults.FailAt) and outer.fired is not None
            if not others and not dead and path.is_relative_to(day):
                others.append(threading.Thread(target=score_others, daemon=True))
                others[0].start()
            if outer is not None:
                outer(op, path)

        try:
            with faults.injecting(hook):
                try:
                    results = step_daily(settings, shard=(POD, PODS))
                finally:
                    for thread in others:
                        thread.join(timeout=POD_WAIT_S)
        finally:
            assert not failures, failures
        return next((r for r in results if r.exit_code != 0), results[-1])
    return run


def test_a_daily_pod_shows_each_area_old_or_new_and_its_retry_finishes_the_cycle(pods_waiting: tuple[Path, str],
                                                                                 tmp_path: Path) -> None:
    """Pod 2 of 3 (`daily --shard 2/3`) after pods 0 and 1 reached the update barrier: a crash
    or an ENOSPC at its points, then its retry; the tables, the day's merged predictions and
    the score distribution each old or new, and no update shard folder left."""
    root, newest = pods_waiting
    command = faultsuite.Command(f"daily --shard {POD}/{PODS}", _last_pod(newest), ("tables",), readers={
        "predictions": merged_predictions_state, "score_distribution": faultsuite.score_distribution_state},
        after_rerun=_no_shard_folder)
    counts = faultsuite.run_suite(command, root, tmp_path, sample=POD_SAMPLE)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points >= 4  # the tables' generation and pointer, the day's predictions, the distribution
