"""Each step on a really full disk (1/2): the bootstrap's steps, on a private tmpfs.

generate, labels (the training set), train, promote, batch-score, drift-check, ingest,
validate and update; the method and the checks are `fulldisk`'s (its docstring). The other
commands (prepare, features, training-set, rollback, score-distribution, the merges,
ingest-inbox, daily): `full_disk_cycle_test.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from churn.pipeline.steps import step_generate_next, step_ingest_inbox
from churn.raw.store import read_events, read_manifest
from churn.storage.paths import DataPaths

from tests.consistency import faultsuite, fulldisk
from tests.consistency.fulldisk import RAW_CHECKS, Step, config


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seeded root, and those of the steps that need new raw data first (made once,
    outside the tmpfs): validate over another world (not validated yet), update after one
    new day was ingested."""
    seeded = fulldisk.seed(tmp_path_factory)
    work = tmp_path_factory.mktemp("changed")
    return {"seeded": seeded,
            "another-world": fulldisk.changed(seeded, work / "another-world", faultsuite.another_world),
            "ingested": fulldisk.changed(seeded, work / "ingested", lambda s: step_generate_next(s, 1),
                                         step_ingest_inbox)}


@pytest.fixture(scope="module")
def events_file(roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """New events of the seeded users on the newest day (their ids moved past every stored id)."""
    paths = DataPaths.from_root(roots["seeded"])
    newest = read_manifest(paths).dates[-1]
    events = read_events(paths, dates=[newest])
    events["event_id"] += 10**12
    path = tmp_path_factory.mktemp("export") / "events.csv"
    events.to_csv(path, index=False)
    return path


def _steps(events_file: Path) -> dict[str, Step]:
    """Each run changes what its readers see (another world, fewer training rows, a top-K of
    10, a 7-day recent window, another model in production)."""
    return {
        "generate": Step(("generate",), ("raw",), config(generator="n_users: 60, days: 20, seed: 7"),
                         after=RAW_CHECKS),
        "labels": Step(("labels",), ("training_set",), config("training: {max_train_rows: 2000}\n")),
        "train": Step(("train",), ("training",)),
        "promote": Step(("promote", "--version", "{other}", "--force", "--reason", "full disk"), ("production",)),
        "batch-score": Step(("batch-score", "--top-k", "10"), ("predictions",)),
        "drift-check": Step(("drift-check",), ("drift",), config("monitoring: {recent_days: 7}\n")),
        "ingest": Step(("ingest", "--events", str(events_file)), ("raw",), after=RAW_CHECKS),
        "validate": Step(("validate",), ("validation",), root="another-world"),
        "update": Step(("update",), ("derived",), root="ingested"),
    }


@pytest.mark.parametrize("step", ["generate", "labels", "train", "promote", "batch-score", "drift-check",
                                  "ingest", "validate", "update"])
def test_a_full_disk_fails_cleanly_and_the_rerun_recovers(step: str, roots: dict[str, Path], events_file: Path,
                                                          tmp_path: Path) -> None:
    fulldisk.check(step, _steps(events_file)[step], roots, tmp_path)
