"""Each step on a really full disk (2/2): the step-by-step and daily commands, on a private tmpfs.

prepare, features, training-set, rollback, score-distribution, merge-update (after the pods'
`update --shard I/3`), merge-shards (after `batch-score --shard I/3`), ingest-inbox and the
whole `daily` cycle; the method and the checks are `fulldisk`'s (its docstring). A target of
its own beside `full_disk_test.py` (one seeded root each), so that Bazel runs them apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import (
    StepResult,
    step_batch_score,
    step_generate_next,
    step_ingest_inbox,
    step_prepare,
    step_promote,
    step_update,
)

from tests.consistency import fulldisk
from tests.consistency.fulldisk import RAW_CHECKS, Step, config

PODS = 3  # the Indexed Jobs' pods whose outputs the merges merge


def _other_in_production(settings: Settings) -> StepResult:
    """The seeded run's other model promoted (forced), so scores and their distribution change."""
    return step_promote(settings, version=fulldisk.other_version(Path(settings.paths.root)), force=True,
                        reason="another model")


def _pods(step: str) -> Callable[[Settings], StepResult]:
    """The three pods of an Indexed Job, one after the other: `update` or `batch-score --shard I/3`."""
    def run(settings: Settings) -> StepResult:
        for i in range(PODS):
            result = (step_update(settings, (i, PODS)) if step == "update"
                      else step_batch_score(settings, shard=(i, PODS)))
            if result.exit_code:
                return result
        return result
    return run


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seeded root and its changed copies (made once, outside the tmpfs): a new day in the
    inbox; that day ingested (the tables behind the raw data); then prepared, or updated by
    the three pods; another model in production, then the newest day rescored by it, or
    scored by the three pods."""
    seeded = fulldisk.seed(tmp_path_factory)
    work = tmp_path_factory.mktemp("changed")
    inboxed = fulldisk.changed(seeded, work / "inboxed", lambda s: step_generate_next(s, 1))
    ingested = fulldisk.changed(inboxed, work / "ingested", step_ingest_inbox)
    other = fulldisk.changed(seeded, work / "other", _other_in_production)
    return {"seeded": seeded, "inboxed": inboxed, "ingested": ingested, "other": other,
            "prepared": fulldisk.changed(ingested, work / "prepared", step_prepare),
            "update-pods": fulldisk.changed(ingested, work / "update-pods", _pods("update")),
            "rescored": fulldisk.changed(other, work / "rescored", step_batch_score),
            "score-pods": fulldisk.changed(other, work / "score-pods", _pods("batch-score"))}


STEPS = {
    "prepare": Step(("prepare",), ("derived", "prepare_report"), root="ingested"),
    "features": Step(("features",), ("derived",), root="prepared"),
    "training-set": Step(("training-set",), ("training_set",), config("training: {max_train_rows: 2000}\n")),
    "rollback": Step(("rollback", "--to", "{production}", "--reason", "full disk"), ("production",), root="other"),
    "score-distribution": Step(("score-distribution",), ("score_distribution",), root="rescored"),
    "merge-update": Step(("merge-update", str(PODS)), ("derived",), root="update-pods", absent=("shards/update",)),
    "merge-shards": Step(("merge-shards", str(PODS)), ("predictions",), root="score-pods"),
    "ingest-inbox": Step(("ingest-inbox",), ("raw", "validation", "inbox"), root="inboxed", after=RAW_CHECKS),
    # its four steps commit one after the other: a full disk in one leaves the earlier ones'
    "daily": Step(("daily",), ("raw", "validation", "inbox", "derived", "predictions", "score_distribution"),
                  root="inboxed", parts=True, after=RAW_CHECKS),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_full_disk_fails_cleanly_and_the_rerun_recovers(step: str, roots: dict[str, Path], tmp_path: Path) -> None:
    fulldisk.check(step, STEPS[step], roots, tmp_path)
