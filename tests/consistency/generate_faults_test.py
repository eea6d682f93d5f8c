"""Fault injection into `generate`: raw users and events become visible together.

The raw store commits a batch by replacing `raw/manifest.json` last (`churn.raw.store`): a
reader that goes through it (every step does) sees the users and the event parts of one
batch. Before the store, a kill left new events beside the old users, and validation passed
them. The run under test generates another world (seed 7, 60 users, 20 days) over the
seeded root, so the state it publishes differs in every file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from churn.config.settings import Settings
from churn.pipeline.steps import StepResult, step_generate
from churn.raw.store import raw_files, read_manifest
from churn.storage.paths import DataPaths

from tests.consistency import faultsuite


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")


def _generate_another_world(settings: Settings) -> StepResult:
    return step_generate(dataclasses.replace(
        settings, generator=dataclasses.replace(settings.generator, seed=7, n_users=60, days=20)))


def no_unlisted_raw_file(root: Path) -> None:
    """A crashed batch's part files are removed by the next writer; what is left beside the
    listed files is only what the manifest keeps for readers in flight (the state before)."""
    paths = DataPaths.from_root(root)
    allowed = set(raw_files(paths)) | {paths.raw / f for f in read_manifest(paths).kept}
    stray = [f for sub in ("users", "events") for f in (paths.raw / sub).rglob("*") if f.is_file() and f not in allowed]
    assert not stray, stray


def test_a_reader_in_flight_keeps_the_files_of_the_state_it_read(seeded: Path, tmp_path: Path) -> None:
    """It read the manifest just before a generate switched it: its files are still there."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(seeded, root, symlinks=True)
    paths = DataPaths.from_root(root)
    before = raw_files(paths)
    _generate_another_world(faultsuite.settings_for(root))
    assert all(f.is_file() for f in before)  # kept for the reader that listed them
    _generate_another_world(faultsuite.settings_for(root))
    assert not any(f.is_file() for f in before)  # removed by the next batch's commit


def test_generate_shows_the_old_or_the_new_raw_data_after_a_fault_at_each_point(seeded: Path, tmp_path: Path) -> None:
    command = faultsuite.Command("generate", _generate_another_world, readers={"raw": faultsuite.raw_state},
                                 after_rerun=no_unlisted_raw_file)
    counts = faultsuite.run_suite(command, seeded, tmp_path)
    assert counts.consistent == counts.injections > 0
    assert counts.commit_points >= 20  # a rename per day file, the users file, the manifest
