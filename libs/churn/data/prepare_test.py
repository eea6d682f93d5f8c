"""Tests for churn.data.prepare: grid shape, sums equal raw counts, cleaning is counted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config.settings import GeneratorSettings, Settings
from churn.data.generate import generate, write_raw
from churn.data.prepare import GRID_COLUMNS, _user_rows, data_period, prepare_frames, run_prepare
from churn.storage.files import read_json
from churn.storage.tables import read_parquet
from churn.storage.paths import DataPaths

SETTINGS = Settings(generator=GeneratorSettings(n_users=250, days=50, seed=11, late_signup_share=0.2))


@pytest.fixture(scope="module")
def raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(SETTINGS.generator)


def test_grid_shape_and_order(raw: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    users, events = raw
    grid, report = prepare_frames(users, events)
    assert list(grid.columns) == list(GRID_COLUMNS)
    start = pd.Timestamp("2025-01-01")
    first = users["signup_date"].clip(lower=start)
    expected_rows = int(((start + pd.Timedelta(days=49) - first).dt.days + 1).clip(lower=0).sum())
    assert len(grid) == expected_rows == report.grid_rows
    assert grid["user_id"].is_monotonic_increasing
    assert not grid.duplicated(["user_id", "as_of_date"]).any()
    # each user's rows start at max(signup, data start) and end at the data end
    span = grid.groupby("user_id")["as_of_date"].agg(["min", "max"])
    pd.testing.assert_series_equal(span["min"], first.set_axis(users["user_id"]).rename("min"), check_dtype=False,
                                   check_index_type=False)
    assert (span["max"] == start + pd.Timedelta(days=49)).all()
    assert (grid["days_since_signup"] >= 0).all()
    assert "engagement_score" not in grid.columns


def test_daily_sums_equal_raw_counts(raw: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    users, events = raw
    grid, _ = prepare_frames(users, events)
    t = events["event_type"].astype(str)
    assert grid["events"].sum() == len(events)
    for col, etype in [("logins", "login"), ("enrolls", "course_enroll"), ("quiz_attempts", "quiz_attempt"),
                       ("payment_success", "payment_success"), ("payment_failed", "payment_failed"),
                       ("tickets", "support_ticket")]:
        assert grid[col].sum() == (t == etype).sum(), col
    assert np.isclose(grid["watch_minutes"].astype(np.float64).sum(), events["watch_minutes"].astype(np.float64).sum(), rtol=1e-6)
    assert np.isclose(grid["quiz_score_sum"].astype(np.float64).sum(), events["quiz_score"].astype(np.float64).sum(), rtol=1e-6)
    # per user-day, against a straightforward groupby
    day = events["event_time"].dt.floor("D")
    per_day = events.groupby([events["user_id"], day]).size()
    active = grid[grid["active"] == 1].set_index(["user_id", "as_of_date"])["events"]
    assert len(active) == len(per_day)
    assert (active.sort_index().to_numpy() == per_day.sort_index().to_numpy()).all()


def test_duplicates_orphans_and_bad_rows_are_dropped_and_counted(raw: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    users, events = raw
    dup_users = pd.concat([users, users.iloc[:3]], ignore_index=True)
    orphan = events.iloc[:5].assign(user_id=10_000, event_id=np.arange(10**7, 10**7 + 5))
    late = events.iloc[5:7].assign(event_time=pd.Timestamp("2026-01-01"), event_id=[10**8, 10**8 + 1])
    dirty = pd.concat([events, events.iloc[:4], orphan, late], ignore_index=True)
    grid, report = prepare_frames(dup_users, dirty, period=data_period(events))  # late = outside it
    assert report.dropped["users_duplicate"] == 3
    assert report.dropped["events_duplicate"] == 4
    assert report.dropped["events_orphan"] == 5
    assert report.dropped["events_outside_period"] == 2
    assert report.events_out == len(events) and grid["events"].sum() == len(events)
    clean_grid, _ = prepare_frames(users, events)
    pd.testing.assert_frame_equal(grid, clean_grid)
    _, own = prepare_frames(users, dirty.iloc[len(events) + 4:])  # the period is the data's own
    assert own.data_start == "2025-01-01" and own.data_end == "2026-01-01"


def test_user_rows_of_a_contiguous_id_range_equal_the_binary_search() -> None:
    """The update's pieces hold contiguous ids: their rows by offset, as the search gives them
    (ids below, inside and above the range, missing ones as -1, and a range with a gap)."""
    events = np.array([-1, 0, 3, 4, 7, 9, 10, 11, 500, -(2**62)], dtype=np.int64)
    for known in (np.arange(4, 11, dtype=np.int64), np.array([4, 5, 6, 8, 9, 10], dtype=np.int64),
                  np.array([7], dtype=np.int64)):
        search = np.clip(np.searchsorted(known, events), 0, len(known) - 1)
        found = known[search] == events
        got = _user_rows(known, events)
        assert (known[got] == events).tolist() == found.tolist()
        assert got[found].tolist() == search[found].tolist() and got.min() >= 0 and got.max() < len(known)


def test_run_prepare_writes_grid(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    small = dataclasses.replace(SETTINGS, generator=dataclasses.replace(SETTINGS.generator, n_users=40))
    write_raw(small.generator, paths)
    report = run_prepare(small, paths)
    grid = read_parquet(paths.user_days)
    assert len(grid) == report.grid_rows
    assert read_json(paths.prepare_report)["data_end"] == "2025-02-19"
    assert grid["as_of_date"].dtype == np.dtype("datetime64[us]")
