"""Fault injection into `generate`: raw users and events become visible together.

The raw store commits a batch by replacing `raw/manifest.json` last (`churn.raw.store`): a
reader that goes through it (every step does) sees the users and the event parts of one
batch. Before the store, a kill left new events beside the old users, and validation passed
them. The run under test generates another world (seed 7, 60 users, 20 days) over the
seeded root, so the state it publishes differs in every file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from churn.raw.store import raw_files
from churn.storage.paths import DataPaths

from tests.consistency import faultsuite


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")


_generate_another_world = faultsuite.another_world
no_unlisted_raw_file = faultsuite.no_unlisted_raw_file


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
