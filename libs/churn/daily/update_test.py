"""The incremental update equals a from-scratch rebuild, value for value, after daily batches.

The world, the inbox, ingest and update run for real on a small data root; the rebuild is the
seed's own functions (prepare, compute_features, build_labels) on all raw data at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.daily import inbox, update, world
from churn.daily.testing import assert_equal_to_rebuild, seed_raw, small_settings
from churn.storage.paths import DataPaths
from churn.storage.tables import atomic_write_parquet, read_parquet


def test_world_is_deterministic_and_independent_of_batching(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        s = small_settings(root)
        seed_raw(s, DataPaths.from_root(root))
    sa, sb = small_settings(a), small_settings(b)
    world.next_days(sa.generator, DataPaths.from_root(a), 3)
    for _ in range(3):
        world.next_days(sb.generator, DataPaths.from_root(b), 1)
    [batch_a] = inbox.pending(DataPaths.from_root(a))
    ev_a = read_parquet(batch_a / "events.parquet")
    ev_b = pd.concat([read_parquet(p / "events.parquet") for p in inbox.pending(DataPaths.from_root(b))],
                     ignore_index=True)
    pd.testing.assert_frame_equal(ev_a, ev_b)
    assert ev_a["event_id"].is_unique and ev_a["event_id"].min() > 0
    days = set(pd.to_datetime(ev_a["event_time"]).dt.date)
    start = dt.date.fromisoformat(sa.generator.start_date) + dt.timedelta(days=sa.generator.days)
    assert days == {start + dt.timedelta(days=i) for i in range(3)}


def test_shift_lowers_activity(tmp_path: Path) -> None:
    rates = {}
    for shifted in (False, True):
        root = tmp_path / str(shifted)
        s = small_settings(root, users=2000)
        paths = DataPaths.from_root(root)
        seed_raw(s, paths)
        first = dt.date.fromisoformat(s.generator.start_date) + dt.timedelta(days=s.generator.days)
        res = world.next_days(s.generator, paths, 5, shift_from=first if shifted else None)
        rates[shifted] = res.events
    assert rates[True] < 0.8 * rates[False], rates


def test_update_equals_rebuild_after_daily_batches_with_a_late_event(tmp_path: Path) -> None:
    s = small_settings(tmp_path)
    paths = DataPaths.from_root(tmp_path)
    seed_raw(s, paths)
    first = update.run_update(s, paths)
    assert first.mode == "full"
    assert_equal_to_rebuild(s, paths)

    for i in range(4):
        batch = world.next_days(s.generator, paths, 1)
        if i == 2:  # a late event: a login of user 1 ten days ago, shipped in today's batch
            events = read_parquet(Path(batch.folder) / "events.parquet")
            late = events.iloc[:1].copy()
            late["event_id"] = 10**12  # the exporting system's own id
            late["user_id"] = 1
            late["event_type"] = pd.Categorical(["login"], categories=events["event_type"].cat.categories)
            late["event_time"] = pd.Timestamp(batch.first_day - dt.timedelta(days=10)) + pd.Timedelta(hours=5)
            atomic_write_parquet(pd.concat([events, late], ignore_index=True), Path(batch.folder) / "events.parquet")
        outcomes = inbox.ingest_inbox(s, paths)
        assert [o.ok for o in outcomes] == [True]
        res = update.run_update(s, paths)
        assert res.mode == "incremental", res
        assert res.newest_day == batch.last_day.isoformat()
        if i == 2:
            assert res.first_recomputed == (batch.first_day - dt.timedelta(days=10)).isoformat()
        else:
            assert res.first_recomputed == batch.first_day.isoformat()
        assert_equal_to_rebuild(s, paths)

    again = update.run_update(s, paths)
    assert again.mode == "none" and "no new data" in again.reason


def test_overlapping_batch_is_idempotent_and_gap_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = small_settings(tmp_path)
    paths = DataPaths.from_root(tmp_path)
    seed_raw(s, paths)
    update.run_update(s, paths)
    batch = world.next_days(s.generator, paths, 1)
    copy = Path(str(batch.folder) + "-again")
    import shutil

    shutil.copytree(batch.folder, copy)
    outcomes = inbox.ingest_inbox(s, paths)
    assert [o.ok for o in outcomes] == [True, True]
    assert outcomes[1].new_events == 0 and outcomes[1].duplicate_events == batch.events
    update.run_update(s, paths)
    # skip two days: the third is accepted with a warning naming the two missing ones
    state, users = world.load_world(s.generator, paths)
    skipped = dataclasses.replace(state, next_day=state.next_day + dt.timedelta(days=2))
    _, users, events, _ = world.advance(s.generator, skipped, users, 1)
    world.publish_batch(paths.inbox / "after-gap", world.raw_users(users), events)
    [out] = inbox.ingest_inbox(s, paths)
    missing = [(state.next_day + dt.timedelta(days=i)).isoformat() for i in range(2)]
    assert out.ok and all(m in out.warnings[0] for m in missing), out.warnings
    res = update.run_update(s, paths)
    assert res.missing_days == missing
    assert_equal_to_rebuild(s, paths)


def test_failing_validation_changes_nothing(tmp_path: Path) -> None:
    s = small_settings(tmp_path)
    paths = DataPaths.from_root(tmp_path)
    seed_raw(s, paths)
    update.run_update(s, paths)
    def raw_state() -> dict[Path, int]:  # the data and its manifest (not the last ingest's report)
        return {p: p.stat().st_mtime_ns for p in paths.raw.rglob("*") if p.is_file() and p.name != "ingest_report.json"}

    before = raw_state()
    assert before
    batch = world.next_days(s.generator, paths, 1)
    events = read_parquet(Path(batch.folder) / "events.parquet")
    events.loc[0, "user_id"] = 10**9  # an unknown user
    atomic_write_parquet(events, Path(batch.folder) / "events.parquet")
    outcomes = inbox.ingest_inbox(s, paths)
    assert [o.ok for o in outcomes] == [False]
    assert raw_state() == before
    assert (paths.inbox / "rejected" / Path(batch.folder).name).is_dir()
    assert update.run_update(s, paths).mode == "none"


def test_update_and_its_pieces_allocate_arrow_buffers_from_malloc(monkeypatch: pytest.MonkeyPatch) -> None:
    """`system_memory_pool`: pyarrow's default pool (mimalloc) kept the pages of every freed
    table resident, a quarter of a worker's peak at 100,000 users (#16); the update's process
    and its pieces' workers allocate from malloc, and the default pool is back afterwards."""
    import pyarrow as pa

    default = pa.default_memory_pool().backend_name
    seen: list[str] = []

    def record(*_: object) -> str:
        seen.append(pa.default_memory_pool().backend_name)
        return "done"

    monkeypatch.setattr(update, "_run_update", record)
    monkeypatch.setattr(update, "_piece_tables", record)
    assert update.run_update(None, None) == "done"  # type: ignore[arg-type]
    assert update._piece(None) == "done"  # type: ignore[arg-type]
    assert seen == ["system", "system"]
    assert pa.default_memory_pool().backend_name == default

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(update, "_run_update", fail)
    with pytest.raises(OSError, match="disk full"):
        update.run_update(None, None)  # type: ignore[arg-type]
    assert pa.default_memory_pool().backend_name == default, "restored after a failure too"
