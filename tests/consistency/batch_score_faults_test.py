"""Fault injection into `batch-score`: scores, top-K and summary of a day published together.

Before generations, a kill between the writes left scores of the new model beside the top-K
and the summary of the old one. After the bootstrap, the seeded root's production alias
is moved to the run's other model, so the run under test (the newest day rescored, with a
top-K of 10) differs from the seeded outputs in every file: the risks and ranks, the top-K,
the summary's model version.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import StepResult, step_batch_score, step_promote
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
