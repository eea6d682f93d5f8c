"""Fault injection into the model steps: `training-set`, `train`, `promote` and `rollback`.

One seeded root for all four (bootstrapped once). After the bootstrap its training set is
rebuilt from fewer users (`training.max_train_rows`), so the `train` under test learns other
models than the seeded run; `training-set` under test samples yet another number of rows;
`promote` moves production to the bootstrap run's other model (forced); `rollback --to`
moves it back after a forced promotion (an explicit target: a plain rollback rerun after one
that took effect would roll back one step further, by design).

What a reader sees:
- training-set: the verified bytes of `labels/training_set.parquet`;
- train: the last complete run (`steps.last_complete_run`: the record, or the previous run a
  running record keeps), each of its versions complete (the model file's and the portable
  scorer's sha256 equal the card's) and by content (cards without ids, times and digests of
  the pickles): the old run's or the new one's, never a record naming a missing version;
- promote / rollback: the production alias's version.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import (
    StepResult,
    data_paths,
    last_complete_run,
    step_promote,
    step_rollback,
    step_train,
    step_training_set,
)
from churn.registry.registry import ModelRegistry

from tests.consistency import faultsuite

SEEDED_TRAIN_ROWS, TRAINING_SET_ROWS = 3_000, 2_000
# train: every commit point, and this many of its 22 other points (the files of a version
# being assembled; a train is ~2 s here, so all 26 points took 317 s: all 52 consistent)
TRAIN_SAMPLE = 4
def _rows(settings: Settings, rows: int) -> Settings:
    return dataclasses.replace(settings, training=dataclasses.replace(settings.training, max_train_rows=rows))


def _seeded_runs(root: Path) -> list[str]:
    record = last_complete_run(data_paths(faultsuite.settings_for(root)))
    assert record is not None
    return list(record["versions"])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")
    rebuilt = step_training_set(_rows(faultsuite.settings_for(root), SEEDED_TRAIN_ROWS))
    assert rebuilt.exit_code == 0, rebuilt.message
    return root


def _run_suite(seeded: Path, tmp_path: Path, name: str, run: Callable[[Settings], StepResult],
               readers: dict[str, Callable[[Path, Path | None], Any]], sample: int = 40) -> faultsuite.Counts:
    counts = faultsuite.run_suite(faultsuite.Command(name, run, readers=readers), seeded, tmp_path, sample=sample)
    assert counts.consistent == counts.injections > 0
    return counts


def test_training_set_shows_the_old_or_the_new_file(seeded: Path, tmp_path: Path) -> None:
    counts = _run_suite(seeded, tmp_path, "training-set",
                        lambda s: step_training_set(_rows(s, TRAINING_SET_ROWS)), {"training_set": faultsuite.training_set_state})
    assert counts.commit_points >= 1


def test_train_shows_the_old_or_the_new_complete_run(seeded: Path, tmp_path: Path) -> None:
    counts = _run_suite(seeded, tmp_path, "train", step_train, {"training": faultsuite.training_state}, sample=TRAIN_SAMPLE)
    assert counts.commit_points >= 4  # the running record, each version's folder, the complete record


def test_promote_shows_the_old_or_the_new_production_model(seeded: Path, tmp_path: Path) -> None:
    production = ModelRegistry(seeded).get_alias()
    other = next(v for v in _seeded_runs(seeded) if v != production)
    counts = _run_suite(seeded, tmp_path, "promote",
                        lambda s: step_promote(s, version=other, force=True, reason="fault suite"),
                        {"production": faultsuite.production_state})
    assert counts.commit_points >= 3  # the pending line, the alias, the committed line


def test_rollback_shows_the_old_or_the_new_production_model(seeded: Path, tmp_path: Path) -> None:
    import shutil

    production = ModelRegistry(seeded).get_alias()
    other = next(v for v in _seeded_runs(seeded) if v != production)
    moved = tmp_path / "moved"
    shutil.copytree(seeded, moved, symlinks=True)
    promoted = step_promote(faultsuite.settings_for(moved), version=other, force=True, reason="before a rollback")
    assert promoted.exit_code == 0, promoted.message
    assert production is not None
    counts = _run_suite(moved, tmp_path, "rollback",
                        lambda s: step_rollback(s, to_version=production, reason="fault suite"),
                        {"production": faultsuite.production_state})
    assert counts.commit_points >= 3
