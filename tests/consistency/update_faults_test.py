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
import shutil
from pathlib import Path

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import StepResult, step_generate_next, step_ingest_inbox, step_merge_update, step_update

from tests.consistency import faultsuite


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")
    settings = faultsuite.settings_for(root)
    for step in (lambda: step_generate_next(settings, 1), lambda: step_ingest_inbox(settings)):
        result = step()
        assert result.exit_code == 0, result.message
    return root


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
    """`update` with 70 users a shard: the tiny root's 200 users in 3 shards, in one process."""
    return step_update(dataclasses.replace(settings, sharding=dataclasses.replace(settings.sharding, shard_users=70)))


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
