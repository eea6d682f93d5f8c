"""Fault injection into `batch-score`: scores, top-K and summary of a day published together.

Before generations, a kill between the writes left scores of the new model beside the top-K
and the summary of the old one. After the bootstrap, the seeded root's production alias
is moved to the run's other model, so the run under test (the newest day rescored, with a
top-K of 10) differs from the seeded outputs in every file: the risks and ranks, the top-K,
the summary's model version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import StepResult, step_batch_score, step_merge_shards, step_promote
from churn.registry.registry import ModelRegistry

from tests.consistency import faultsuite


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")
    record = json.loads((root / "registry" / "last_training_run.json").read_text())
    other = next(v for v in record["versions"] if v != ModelRegistry(root).get_alias())
    promoted = step_promote(faultsuite.settings_for(root), version=other, force=True, reason="another model")
    assert promoted.exit_code == 0, promoted.message
    return root


def _batch_score_top_10(settings: Settings) -> StepResult:
    return step_batch_score(settings, top_k=10)


def test_batch_score_shows_the_old_or_the_new_outputs_after_a_fault_at_each_point(seeded: Path, tmp_path: Path) -> None:
    (day,) = [p.name for p in (seeded / "predictions").iterdir() if not p.name.startswith(".")]
    command = faultsuite.Command("batch-score", _batch_score_top_10, (f"predictions/{day}",))
    counts = faultsuite.run_suite(command, seeded, tmp_path)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points >= 2  # the generation's rename and the pointer's switch (its files are renamed inside it)


SHARDS = 3


def _merge_shards(settings: Settings) -> StepResult:
    return step_merge_shards(settings, SHARDS)


def test_merge_shards_shows_the_old_or_the_new_outputs_after_a_fault_at_each_point(seeded: Path,
                                                                                   tmp_path: Path) -> None:
    """The three pods of an Indexed Job (`batch-score --shard I/3`, the other model) published
    their shards into the day's generation, beside the seeded run's full files; the merge
    publishes the full files of the shards' run (new ranks, top-K, summary) with the shards
    carried."""
    sharded = tmp_path / "sharded"
    shutil.copytree(seeded, sharded, symlinks=True)
    for i in range(SHARDS):
        result = step_batch_score(faultsuite.settings_for(sharded), shard=(i, SHARDS))
        assert result.exit_code == 0, result.message
    (day,) = [p.name for p in (sharded / "predictions").iterdir() if not p.name.startswith(".")]
    (tmp_path / "work").mkdir()
    # both commit points and 4 others (the carry's links and the writers are batch-score's code)
    counts = faultsuite.run_suite(faultsuite.Command("merge-shards", _merge_shards, (f"predictions/{day}",)),
                                  sharded, tmp_path / "work", sample=4)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points == 2  # the generation's rename and the pointer's switch
