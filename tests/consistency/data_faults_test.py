"""Fault injection into `validate`, `ingest` (a file of one's own) and `score-distribution`.

One root bootstrapped once; each command starts from a copy changed so that its run changes
what its readers see:
- validate: another world generated over it (not validated yet): the run turns the verdict
  (`churn.raw.verdict`) from "not validated" to "validated" with a new report. Before, the
  stamp was removed first and written after the report, so a kill or a full disk in between
  left no verdict at all, and two files that could disagree;
- ingest: a CSV of new events of the seeded users on the newest day: the raw store's state
  and the verdict (the batch records `validated` in the manifest, its commit point; a stamp
  written after the commit was lost by a kill in between, and the rerun, finding nothing
  new, left the raw data unvalidated for good). `raw/ingest_report.json` is the last
  attempt's log (also of a rejected one), not a state: the batch's counts are in the manifest;
- score-distribution: the day rescored by the other model first, so the report changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import (
    StepResult,
    step_batch_score,
    step_ingest,
    step_promote,
    step_score_distribution,
    step_validate,
)
from churn.raw.store import read_events, read_manifest
from churn.registry.registry import ModelRegistry
from churn.storage.paths import DataPaths

from tests.consistency import faultsuite


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")


def _copy(seeded: Path, dest: Path, change: Callable[[Settings], StepResult]) -> Path:
    shutil.copytree(seeded, dest, symlinks=True)
    result = change(faultsuite.settings_for(dest))
    assert result.exit_code == 0, result.message
    return dest


def _suite(seeded: Path, work: Path, name: str, run: Callable[[Settings], StepResult],
           readers: dict[str, Callable[[Path, Path | None], Any]], **kw: Any) -> faultsuite.Counts:
    counts = faultsuite.run_suite(faultsuite.Command(name, run, readers=readers, **kw), seeded, work)
    assert counts.consistent == counts.injections > 0
    return counts


def test_validate_shows_the_old_or_the_new_verdict(seeded: Path, tmp_path: Path) -> None:
    changed = _copy(seeded, tmp_path / "changed", faultsuite.another_world)
    assert faultsuite.validation_state(changed)["validated"] is False
    counts = _suite(changed, tmp_path / "work", "validate", step_validate,
                    {"validation": faultsuite.validation_state})
    assert counts.commit_points >= 1  # the report


def test_ingest_shows_the_old_or_the_new_raw_data_and_verdict(seeded: Path, tmp_path: Path) -> None:
    paths = DataPaths.from_root(seeded)
    events = read_events(paths, dates=[read_manifest(paths).dates[-1]])
    events["event_id"] += 10**12  # new events of the stored users on the newest day
    export = tmp_path / "events.csv"
    events.to_csv(export, index=False)
    (tmp_path / "work").mkdir()
    counts = _suite(seeded, tmp_path / "work", "ingest", lambda s: step_ingest(s, events=str(export)),
                    {"raw": faultsuite.raw_and_verdict}, after_rerun=faultsuite.no_unlisted_raw_file)
    assert counts.commit_points >= 2  # the part file, the manifest


def test_score_distribution_shows_the_old_or_the_new_report(seeded: Path, tmp_path: Path) -> None:
    record = json.loads((seeded / "registry" / "last_training_run.json").read_text())
    other = next(v for v in record["versions"] if v != ModelRegistry(seeded).get_alias())

    def rescore(settings: Settings) -> StepResult:
        promoted = step_promote(settings, version=other, force=True, reason="another model")
        return promoted if promoted.exit_code else step_batch_score(settings)

    changed = _copy(seeded, tmp_path / "changed", rescore)
    counts = _suite(changed, tmp_path / "work", "score-distribution", step_score_distribution,
                    {"score_distribution": faultsuite.score_distribution_state})
    assert counts.commit_points >= 1
