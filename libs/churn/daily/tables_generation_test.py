"""One update = one generation of the tables: unchanged days carried as hard links, not
hashed again; a root from before generations read and migrated; a bound reader kept on its
state; a publish over a state that moved meanwhile refused (docs/consistency.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from churn.daily import inbox, update, world
from churn.daily.testing import assert_equal_to_rebuild, seed_raw, small_settings
from churn.errors import DataError
from churn.storage import derived, generations
from churn.storage.daytables import day_files
from churn.storage.files import load_manifest
from churn.storage.paths import TABLES_AREA, DataPaths


def _next_day(settings, paths: DataPaths) -> None:
    world.next_days(settings.generator, paths, 1)
    assert [o.ok for o in inbox.ingest_inbox(settings, paths)] == [True]


def test_an_update_publishes_one_generation_carrying_the_other_days_as_hard_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = small_settings(tmp_path)
    paths = DataPaths.from_root(tmp_path)
    seed_raw(s, paths)
    update.run_update(s, paths)
    before = paths.tables
    assert before is not None and (tmp_path / TABLES_AREA).is_symlink()
    _next_day(s, paths)
    bound = paths.bound()  # a reader that started before the update
    hashed: list[str] = []
    real = generations._digest_and_sync
    monkeypatch.setattr(generations, "_digest_and_sync", lambda p: hashed.append(p.name) or real(p))
    res = update.run_update(s, paths)
    after = paths.tables
    assert after is not None and after != before and bound.tables == before
    # hashed: the recomputed day files, the users snapshot and the state; every other file linked
    recomputed = res.grid_days + res.feature_days + res.label_days
    assert len(hashed) == recomputed + 2, (len(hashed), recomputed)
    old, new = load_manifest(before / "MANIFEST")["files"], load_manifest(after / "MANIFEST")["files"]
    carried = [rel for rel in new if rel in old and os.stat(before / rel).st_ino == os.stat(after / rel).st_ino]
    assert len(carried) == len(new) - recomputed - 2 > 50  # 45 days of 3 tables, 3 recomputed
    assert all(new[rel] == old[rel] for rel in carried)
    assert load_manifest(after / "MANIFEST")["inputs"]["base"] == before.name
    assert update.run_update(s, paths).mode == "none"  # the state published with the tables
    assert_equal_to_rebuild(s, paths)
    # the reader bound before the update still reads its complete state
    assert set(day_files(bound.features_file)) == set(day_files(before / "features.parquet"))


def test_a_root_from_before_generations_is_read_and_migrated(tmp_path: Path) -> None:
    s = small_settings(tmp_path)
    paths = DataPaths.from_root(tmp_path)
    seed_raw(s, paths)
    update.run_update(s, paths)
    gen = paths.tables
    assert gen is not None
    legacy = paths.legacy_tables()
    for name, dst in legacy.items():  # the layout an older version left
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(gen / name), dst)
    (tmp_path / TABLES_AREA).unlink()
    shutil.rmtree(generations.store_dir(tmp_path, TABLES_AREA))
    assert paths.tables is None and paths.features_file == tmp_path / "features" / "features.parquet"
    assert update.run_update(s, paths).mode == "none"  # the old state is read as it is
    _next_day(s, paths)
    assert update.run_update(s, paths).mode == "incremental"
    assert paths.tables is not None and all(p.exists() for p in legacy.values())  # kept one publish
    assert_equal_to_rebuild(s, paths)
    _next_day(s, paths)
    assert update.run_update(s, paths).mode == "incremental"
    assert not any(p.exists() for p in legacy.values())
    assert_equal_to_rebuild(s, paths)


def test_a_publish_over_a_state_that_moved_is_refused(tmp_path: Path) -> None:
    s = small_settings(tmp_path)
    paths = DataPaths.from_root(tmp_path)
    seed_raw(s, paths)
    update.run_update(s, paths)
    stale = paths.bound()
    _next_day(s, paths)
    update.run_update(s, paths)
    current = paths.tables
    with pytest.raises(DataError, match="another update published"):
        with derived.publish_tables(stale, {}, {"labels": []}):
            pass
    assert paths.tables == current and not list(generations.store_dir(tmp_path, TABLES_AREA).glob(".tmp-*"))
