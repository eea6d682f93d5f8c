"""Fault injection into `drift-check`: its JSON and HTML report are published together.

Before generations, a kill between the two writes left a new JSON beside the old HTML. The
seeded root holds two drift generations (the bootstrap's report, then an earlier day's one
added), so the run under test carries a report (a link point) and prunes a generation (a
removal point); it checks a recent window of 7 days instead of 14, so the report it rewrites
differs from the seeded one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import StepResult, step_drift_check
from churn.storage import generations
from churn.storage.files import atomic_write_bytes
from churn.storage.paths import DRIFT_AREA

from tests.consistency import faultsuite


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")
    report = next((root / DRIFT_AREA).glob("*.json"))
    with generations.publish(root, DRIFT_AREA, carry=True) as out:
        atomic_write_bytes(out / "2000-01-01.json", report.read_bytes())  # an earlier day's report
    return root


def _drift_check_7_days(settings: Settings) -> StepResult:
    return step_drift_check(dataclasses.replace(
        settings, monitoring=dataclasses.replace(settings.monitoring, recent_days=7)))


def test_drift_check_shows_the_old_or_the_new_report_after_a_fault_at_each_point(seeded: Path, tmp_path: Path) -> None:
    command = faultsuite.Command("drift-check", _drift_check_7_days, (DRIFT_AREA,), ok_exits=(0, 2))
    counts = faultsuite.run_suite(command, seeded, tmp_path)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points >= 2  # the generation's rename and the pointer's switch
    assert {"link", "remove"} <= set(counts.ops), counts.ops
