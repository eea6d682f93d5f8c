"""A sharded update writes the same day files as an unsharded one, row for row.

Three data roots get the same seed and the same daily batches (a late event among them): one
updated in one piece, one shard by shard in one process (`sharding.shard_users` below the
number of users), one as the pods of an Indexed Job (`update --shard I/N` each, then
`merge-update N`). Every day file of the grid, the features and the labels must be equal
(values, dtypes and row order), and equal to a rebuild from all raw data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.config.settings import Settings
from churn.daily import inbox, shards, update, world
from churn.data.prepare import run_prepare
from churn.features.compute import run_features
from churn.labels.build import run_labels
from churn.storage.derived import features_digest_now
from churn.daily.testing import assert_equal_to_rebuild, seed_raw, small_settings
from churn.errors import DataError
from churn.storage.files import StorageFullError
from churn.sampling.users import shard_of
from churn.storage.daytables import day_files
from churn.storage.paths import DataPaths
from churn.storage.tables import atomic_write_parquet, read_parquet

N_JOB = 3


def with_shard_users(settings: Settings, shard_users: int) -> Settings:
    return dataclasses.replace(settings, sharding=dataclasses.replace(settings.sharding, shard_users=shard_users))


def folders(paths: DataPaths) -> dict[str, Path]:
    return {"grid": paths.user_days, "features": paths.features_file, "labels": paths.labels_file}


def assert_same_day_files(a: DataPaths, b: DataPaths) -> None:
    for name in folders(a):
        fa, fb = day_files(folders(a)[name]), day_files(folders(b)[name])
        assert list(fa) == list(fb), f"{name}: days {list(fa)[:3]}... vs {list(fb)[:3]}..."
        for day in fa:
            pd.testing.assert_frame_equal(read_parquet(fa[day]), read_parquet(fb[day]), obj=f"{name} {day}")


def day_file_bytes(paths: DataPaths) -> dict[str, dict[dt.date, str]]:
    """{table: {day: sha256 of its day file}}: what a MANIFEST, and so a recorded digest, holds."""
    return {name: {d: hashlib.sha256(p.read_bytes()).hexdigest() for d, p in day_files(f).items()}
            for name, f in folders(paths).items()}


def job_update(settings: Settings, paths: DataPaths, n: int = N_JOB) -> update.UpdateResult:
    """The Indexed Job: every pod computes its shard, then the merge."""
    for i in range(n):
        res = update.run_update(settings, paths, shard=(i, n))
        assert f"shard {i}/{n} written" in res.reason
    return update.merge_update(settings, paths, n)


def test_sharded_updates_equal_unsharded_row_for_row(tmp_path: Path) -> None:
    base = small_settings(tmp_path / "one")
    roots = {"one": tmp_path / "one", "loop": tmp_path / "loop", "job": tmp_path / "job"}
    seed_raw(base, DataPaths.from_root(roots["one"]))
    for name in ("loop", "job"):
        shutil.copytree(roots["one"], roots[name])
    settings = {name: dataclasses.replace(base, paths=dataclasses.replace(base.paths, root=str(root)))
                for name, root in roots.items()}
    settings["loop"] = with_shard_users(settings["loop"], 70)  # 300 users -> 5 shards
    paths = {name: DataPaths.from_root(root) for name, root in roots.items()}

    def update_all() -> None:
        one = update.run_update(settings["one"], paths["one"])
        loop = update.run_update(settings["loop"], paths["loop"])
        job = job_update(settings["job"], paths["job"])
        assert (loop.mode, loop.first_recomputed, loop.feature_rows) == (one.mode, one.first_recomputed, one.feature_rows)
        assert (job.mode, job.first_recomputed, job.feature_rows) == (one.mode, one.first_recomputed, one.feature_rows)
        assert not (paths["loop"].root / "shards" / "update").exists(), "a merged run leaves no shard files"
        assert not (paths["job"].root / "shards" / "update").exists()

    update_all()
    for name in ("loop", "job"):
        assert_same_day_files(paths["one"], paths[name])
    for i in range(3):
        for name in roots:
            batch = world.next_days(settings[name].generator, paths[name], 1)
            if i == 1:  # a login of user 1 ten days ago in today's batch: recompute from then
                events = read_parquet(Path(batch.folder) / "events.parquet")
                late = events.iloc[:1].copy()
                late["event_id"], late["user_id"] = 10**12, 1
                late["event_time"] = pd.Timestamp(batch.first_day - dt.timedelta(days=10)) + pd.Timedelta(hours=5)
                atomic_write_parquet(pd.concat([events, late], ignore_index=True), Path(batch.folder) / "events.parquet")
            assert [o.ok for o in inbox.ingest_inbox(settings[name], paths[name])] == [True]
        update_all()
        for name in ("loop", "job"):
            assert_same_day_files(paths["one"], paths[name])
    assert_equal_to_rebuild(settings["job"], paths["job"])


def test_every_writer_of_day_files_gives_the_same_bytes_for_the_same_rows(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """One encoding of day files (`daytables.DayFiles`): an update in 5 pieces (computed on 2
    worker processes, and in the step's own process: `sharding.workers` 1), the merge of 3
    pods' shards, and `features`, `labels` and `prepare` recomputing every day from the same
    data write byte-identical day files, so the features digest the scores record stays put
    (before, `features` and `labels` wrote pandas' `to_parquet`: other bytes for the same
    rows, and every score was flagged stale); rows that change give other bytes. The workers
    hand their pieces over in record batches of whole days (`PIECE_BATCH_ROWS`, here about 3
    days of a piece), each written by its own `write_arrow`."""
    monkeypatch.setattr(update, "PIECE_BATCH_ROWS", 150)
    real, batches = shards.DayFiles.write_arrow, []

    def recorded(self: shards.DayFiles, name: str, table: pa.Table) -> None:
        batches.append(name)
        real(self, name, table)

    monkeypatch.setattr(shards.DayFiles, "write_arrow", recorded)
    base = with_shard_users(small_settings(tmp_path / "loop"), 70)  # 300 users -> 5 pieces
    assert base.sharding.workers == 2, "the default: the pieces on worker processes"
    roots = {"loop": tmp_path / "loop", "inline": tmp_path / "inline", "job": tmp_path / "job"}
    seed_raw(base, DataPaths.from_root(roots["loop"]))
    for name in ("inline", "job"):
        shutil.copytree(roots["loop"], roots[name])
    s = {name: dataclasses.replace(base, paths=dataclasses.replace(base.paths, root=str(root)))
         for name, root in roots.items()}
    s["inline"] = dataclasses.replace(s["inline"], sharding=dataclasses.replace(base.sharding, workers=1))
    paths = {name: DataPaths.from_root(root) for name, root in roots.items()}
    for name, elsewhere in (("loop", True), ("inline", False)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="churn.daily.update"):
            update.run_update(s[name], paths[name])
        where = [m.group(1) for r in caplog.records
                 if (m := re.search(r"piece \d/5 in .*s \(computed in .*s (in this process|by worker process \d+)\)",
                                    r.getMessage()))]
        assert len(where) == 5, [r.getMessage() for r in caplog.records]
        # which of the 2 workers takes which piece is the pool's choice (a worker still starting)
        assert all(w.startswith("by worker") == elsewhere for w in where), (name, where)
    assert batches.count("features") >= 5 * 4, (len(batches), "the workers' pieces in batches of a few days")
    job_update(s["job"], paths["job"])
    written = day_file_bytes(paths["loop"])
    assert day_file_bytes(paths["inline"]) == written, "the pieces computed on 2 workers and in this process differ"
    assert day_file_bytes(paths["job"]) == written, "the merge of the pods' shards wrote other bytes"
    newest = next(reversed(day_files(paths["loop"].user_days).values()))
    assert pq.ParquetFile(newest).metadata.num_row_groups == 5, "a row group per piece of users"
    digest = features_digest_now(paths["loop"], None)

    run_features(s["loop"], paths["loop"])
    run_labels(s["loop"], paths["loop"])
    assert day_file_bytes(paths["loop"]) == written, "features/labels rerun on unchanged rows wrote other bytes"
    assert features_digest_now(paths["loop"], None) == digest
    run_prepare(s["loop"], paths["loop"])
    assert day_file_bytes(paths["loop"])["grid"] == written["grid"], "prepare wrote other grid bytes"

    windows = dataclasses.replace(s["loop"].features, windows_days=(7, 14))  # other rows
    run_features(dataclasses.replace(s["loop"], features=windows), paths["loop"])
    assert features_digest_now(paths["loop"], None) != digest


def test_the_merge_streams_many_row_groups_of_several_shards_into_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`merge-update` streams (`shards.merge_tables`): each day file is written one row group
    (a piece of users' ids) at a time, from a cursor over each pod's shard read in batches.
    Here 300 users and more (signups) in 15 pieces or more, 4 interleaving hash shards and
    batches of 7 rows, so ranges span batches and batches end inside ranges: the bytes must be
    the in-process update's, seed and an incremental day, and no write may hold more than one
    row group's rows."""
    base = with_shard_users(small_settings(tmp_path / "loop"), 20)  # 300 users -> 15 pieces
    roots = {"loop": tmp_path / "loop", "job": tmp_path / "job"}
    seed_raw(base, DataPaths.from_root(roots["loop"]))
    shutil.copytree(roots["loop"], roots["job"])
    s = {name: dataclasses.replace(base, paths=dataclasses.replace(base.paths, root=str(root)))
         for name, root in roots.items()}
    paths = {name: DataPaths.from_root(root) for name, root in roots.items()}
    monkeypatch.setattr(shards, "MERGE_BATCH_ROWS", 7)
    real, writes = shards.DayFiles.write_arrow, []

    def recorded(self: shards.DayFiles, name: str, table: pa.Table) -> None:
        writes.append(table.num_rows)
        real(self, name, table)

    monkeypatch.setattr(shards.DayFiles, "write_arrow", recorded)
    for step in range(2):
        if step:
            for name in roots:
                world.next_days(s[name].generator, paths[name], 1)
                assert [o.ok for o in inbox.ingest_inbox(s[name], paths[name])] == [True]
        update.run_update(s["loop"], paths["loop"])  # its 2 workers' pieces come by write_arrow too
        writes.clear()
        job = job_update(s["job"], paths["job"], 4)
        assert day_file_bytes(paths["job"]) == day_file_bytes(paths["loop"]), f"step {step}: other bytes"
        newest = next(reversed(day_files(paths["job"].user_days).values()))
        assert pq.ParquetFile(newest).metadata.num_row_groups >= 15, "many row group ranges"
        assert max(writes) <= 20 and sum(writes) >= job.feature_rows, "one row group's rows per write"
    assert_equal_to_rebuild(s["job"], paths["job"])


def test_a_shard_holds_only_its_users_and_the_merge_refuses_a_missing_or_stale_shard(tmp_path: Path) -> None:
    s = small_settings(tmp_path)
    paths = DataPaths.from_root(tmp_path)
    seed_raw(s, paths)
    update.run_update(s, paths, shard=(0, 2))
    assert not paths.features_file.exists(), "a shard writes nothing into the areas"
    shard_grid = read_parquet(shards.table_file(shards.shard_dir(paths, (0, 2)), "user_days"))
    assert set(shard_of(shard_grid["user_id"].to_numpy(), 2)) == {0}
    with pytest.raises(DataError, match=r"shard 1/2 has not completed \(run `ml_jobs update --shard 1/2`\)"):
        update.merge_update(s, paths, 2)

    update.run_update(s, paths, shard=(1, 2))
    # a retried pod: the shard it wrote for this plan is kept as it is (another pod may be
    # merging it right now, and a rewrite would recreate a merged run's folder)
    marker = shards.shard_dir(paths, (1, 2)) / shards.MARKER
    written = marker.stat()
    again = update.run_update(s, paths, shard=(1, 2))
    assert "already written for this plan" in again.reason and again.feature_rows > 0
    assert (marker.stat().st_ino, marker.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    # new raw data after the shards ran: the merge would mix two updates
    batch = world.next_days(s.generator, paths, 1)
    assert [o.ok for o in inbox.ingest_inbox(s, paths)] == [True]
    with pytest.raises(DataError, match=r"shard 0/2 ran another update \(.*newest: .* vs " + batch.last_day.isoformat()):
        update.merge_update(s, paths, 2)
    for i in range(2):
        assert f"shard {i}/2 written" in update.run_update(s, paths, shard=(i, 2)).reason  # another plan: recomputed
    res = update.merge_update(s, paths, 2)
    assert res.mode == "full" and res.newest_day == batch.last_day.isoformat()
    assert_equal_to_rebuild(s, paths)


def test_an_in_process_run_that_fails_leaves_the_areas_and_no_shard_files(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A piece failing mid-run (here: the disk full at the third piece's write, with the
    first two pieces' rows in the open day files) leaves the day files of the last complete
    update and removes its temps and partitions, which would otherwise keep the disk full;
    the rerun completes."""
    import errno


    s = with_shard_users(small_settings(tmp_path), 70)  # 300 users -> 5 shards
    paths = DataPaths.from_root(tmp_path)
    seed_raw(s, paths)
    update.run_update(s, paths)
    before = {name: {d: read_parquet(p) for d, p in day_files(f).items()} for name, f in folders(paths).items()}
    world.next_days(s.generator, paths, 1)
    assert [o.ok for o in inbox.ingest_inbox(s, paths)] == [True]
    # the pieces come from 2 workers as Arrow files, one `write_arrow` per table, user_days first
    real, calls = shards.DayFiles.write_arrow, []

    def full_disk(self: shards.DayFiles, name: str, table: object) -> None:
        calls.append(name) if name == "user_days" else None
        if len(calls) == 3:  # the first two pieces' rows are in the open day files already
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, table)

    monkeypatch.setattr(shards.DayFiles, "write_arrow", full_disk)
    with pytest.raises(StorageFullError, match="no space left on device .*nothing was replaced"):
        update.run_update(s, paths)
    assert len(calls) == 3
    assert not (paths.root / "shards" / "update").exists(), "partitions removed"
    for name, f in folders(paths).items():
        assert list(day_files(f)) == list(before[name])
        assert not [p.name for p in f.iterdir() if p.name.startswith(".tmp")], f"{name}: temps of the failed run left"
        for d, p in day_files(f).items():
            pd.testing.assert_frame_equal(read_parquet(p), before[name][d], obj=f"{name} {d}")
    monkeypatch.setattr(shards.DayFiles, "write_arrow", real)
    assert update.run_update(s, paths).mode == "incremental"
    assert_equal_to_rebuild(s, paths)
