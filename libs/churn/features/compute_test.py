"""Tests for churn.features.compute: schema columns, exact windows, point-in-time, no leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config.settings import GeneratorSettings, Settings
from churn.data.generate import generate, write_raw
from churn.data.prepare import prepare_frames, run_prepare
from churn.features.compute import (
    _on_days,
    compute_features,
    feature_columns,
    features_by_day,
    features_as_of,
    history_days,
    latest_date,
    run_features,
)
from churn.errors import DataError
from churn.features.schema import feature_names, feature_specs
from churn.storage.daytables import day_order
from churn.storage.paths import DataPaths
from churn.storage.tables import read_parquet

SETTINGS = Settings(generator=GeneratorSettings(n_users=300, days=90, seed=5, late_signup_share=0.2))
START = pd.Timestamp("2025-01-01")


@pytest.fixture(scope="module")
def raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(SETTINGS.generator)


@pytest.fixture(scope="module")
def grid(raw: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return prepare_frames(*raw)[0]


@pytest.fixture(scope="module")
def features(grid: pd.DataFrame) -> pd.DataFrame:
    return compute_features(grid, (7, 14, 30))


def test_columns_are_exactly_the_schema(features: pd.DataFrame) -> None:
    assert list(features.columns) == ["user_id", "as_of_date"] + feature_names(feature_specs((7, 14, 30)))
    assert list(features.columns) == feature_columns((7, 14, 30))
    assert "engagement_score" not in features.columns
    assert not features.duplicated(["user_id", "as_of_date"]).any()


def test_no_truncated_windows_and_only_signed_up_users(features: pd.DataFrame, raw: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    assert features["as_of_date"].min() == START + pd.Timedelta(days=history_days((7, 14, 30)) - 1)
    signup = features["user_id"].map(raw[0].set_index("user_id")["signup_date"])
    assert (features["as_of_date"] >= signup).all()
    assert (features["days_since_signup"] >= 0).all()
    assert history_days((7, 14)) == 30  # the 30-day payment rate needs 30 days
    assert compute_features(_first_days(raw, 20), (7,)).empty


def _first_days(raw: tuple[pd.DataFrame, pd.DataFrame], n: int) -> pd.DataFrame:
    grid = prepare_frames(*raw)[0]
    return grid[grid["day_index"] < n]


def test_window_sums_match_a_direct_computation(features: pd.DataFrame, grid: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    sample = features.iloc[rng.choice(len(features), size=60, replace=False)]
    g = grid.set_index(["user_id", "as_of_date"]).sort_index()
    for row in sample.itertuples(index=False):
        hist = g.loc[row.user_id]
        for w in (7, 14, 30):
            win = hist.loc[row.as_of_date - pd.Timedelta(days=w - 1): row.as_of_date]
            assert getattr(row, f"active_days_{w}d") == win["active"].sum()
            assert getattr(row, f"events_{w}d") == win["events"].sum()
            assert getattr(row, f"logins_{w}d") == win["logins"].sum()
            assert getattr(row, f"quiz_attempts_{w}d") == win["quiz_attempts"].sum()
            assert np.isclose(getattr(row, f"watch_minutes_{w}d"), win["watch_minutes"].astype(float).sum(), rtol=1e-5)
            attempts = win["quiz_attempts"].sum()
            mean = getattr(row, f"quiz_mean_{w}d")
            if attempts == 0:
                assert np.isnan(mean)  # unknown, never 0
            else:
                assert np.isclose(mean, win["quiz_score_sum"].astype(float).sum() / attempts, rtol=1e-5)
        win30 = hist.loc[row.as_of_date - pd.Timedelta(days=29): row.as_of_date]
        paid = win30["payment_success"].sum() + win30["payment_failed"].sum()
        rate = row.payment_failure_rate_30d
        assert np.isnan(rate) if paid == 0 else np.isclose(rate, win30["payment_failed"].sum() / paid)
        active_days = hist.loc[: row.as_of_date].query("active == 1").index
        dsla = row.days_since_last_active
        assert np.isnan(dsla) if len(active_days) == 0 else dsla == (row.as_of_date - active_days.max()).days


def test_missing_is_nan_not_zero(features: pd.DataFrame) -> None:
    no_quiz = features["quiz_attempts_7d"] == 0
    assert no_quiz.any() and features.loc[no_quiz, "quiz_mean_7d"].isna().all()
    assert features.loc[~no_quiz, "quiz_mean_7d"].notna().all()
    free = features["is_paid"] == 0
    assert features.loc[free, "payment_failure_rate_30d"].isna().all()
    assert features["days_since_last_active"].isna().any()  # late signups who never logged in yet


def test_point_in_time_features_ignore_the_future(raw: tuple[pd.DataFrame, pd.DataFrame], features: pd.DataFrame) -> None:
    users, events = raw
    cut = START + pd.Timedelta(days=55)
    truncated = events[events["event_time"] < cut + pd.Timedelta(days=1)]
    grid_t, report = prepare_frames(users, truncated)
    assert report.data_end == cut.date().isoformat()
    past = compute_features(grid_t, (7, 14, 30))
    full = features[features["as_of_date"] <= cut].reset_index(drop=True)
    assert len(past) > 0 and past["as_of_date"].max() == cut
    pd.testing.assert_frame_equal(past, full)


def test_features_as_of_one_date(grid: pd.DataFrame, features: pd.DataFrame) -> None:
    last = latest_date(grid)
    assert last == (START + pd.Timedelta(days=89)).date()
    one = features_as_of(grid, last)
    expected = features[features["as_of_date"] == pd.Timestamp(last)].reset_index(drop=True)
    pd.testing.assert_frame_equal(one, expected)
    mid = features_as_of(grid, "2025-02-15")
    pd.testing.assert_frame_equal(mid, features[features["as_of_date"] == "2025-02-15"].reset_index(drop=True))
    assert features_as_of(grid, "2025-01-10").empty  # too early for a 30-day window


def test_as_of_dates_filter_and_unsorted_input(grid: pd.DataFrame, features: pd.DataFrame) -> None:
    shuffled = grid.sample(frac=1.0, random_state=1)
    dates = ["2025-03-01", "2025-03-20"]
    got = compute_features(shuffled, (7, 14, 30), as_of_dates=dates)
    expected = features[features["as_of_date"].isin(pd.to_datetime(dates))].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)


def test_rows_by_day_are_the_same_rows_in_day_file_order(grid: pd.DataFrame, features: pd.DataFrame) -> None:
    """`by_day`: what the update's day files take, the same values, ordered (day, user)."""
    got = compute_features(grid, (7, 14, 30), by_day=True)
    expected = features.sort_values(["as_of_date", "user_id"], kind="stable").reset_index(drop=True)
    assert not got["user_id"].is_monotonic_increasing
    pd.testing.assert_frame_equal(got, expected)


@pytest.mark.parametrize("rows", [1, 700, 10**9])
def test_features_by_day_are_the_rows_by_day_in_frames_of_whole_days(grid: pd.DataFrame, rows: int) -> None:
    """What the update's workers write as they compute (#16): the same rows and values as
    `compute_features(by_day=True)`, cut only between days, about `rows` rows a frame."""
    expected = compute_features(grid, (7, 14, 30), by_day=True)
    frames = list(features_by_day(grid, (7, 14, 30), rows))
    expected_frames = {1: expected["as_of_date"].nunique(), 10**9: 1}
    if rows in expected_frames:
        assert len(frames) == expected_frames[rows]
    else:
        assert 1 < len(frames) < expected_frames[1]
    days = [set(f["as_of_date"]) for f in frames]
    assert all(not (a & b) for a, b in zip(days[:-1], days[1:])), "a day in two frames"
    # a frame ends at the first day that starts `rows` past its start (a day: <= 300 users)
    assert all(rows <= len(f) < rows + 300 for f in frames[:-1])
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), expected)
    empty = list(features_by_day(grid, (7, 14, 30), rows, as_of_dates=["2024-01-01"]))
    assert len(empty) == 1 and empty[0].empty and list(empty[0].columns) == list(expected.columns)


def test_window_sums_are_cast_to_their_columns_as_they_are_made(grid: pd.DataFrame) -> None:
    """Memory beyond the output: the 64-bit window sums are kept only for the ratios (8 arrays),
    each count's sum becomes its 32-bit column at once. Holding all 30 sums until the casts was
    320 bytes per output row (270 MB of a 12,500-user piece of the update's workers, #16)."""
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = compute_features(grid, (7, 14, 30))
        held, peak = (m - base for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert (peak - held) / len(out) < 200, f"{(peak - held) / len(out):.0f} bytes per row beyond the output"


def test_rejects_a_sparse_grid(grid: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="not contiguous"):
        compute_features(grid[grid["day_index"] != 40], (7,))
    with pytest.raises(DataError, match="missing columns"):
        compute_features(grid.drop(columns=["active"]), (7,))


def test_run_features_writes_parquet(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    small = Settings(generator=GeneratorSettings(n_users=30, days=45, seed=2))
    write_raw(small.generator, paths)
    run_prepare(small, paths)
    out = run_features(small, paths)
    back = read_parquet(paths.features_file)
    assert list(back.columns) == feature_columns(small.features.windows_days)
    assert len(back) == len(out) == 30 * (45 - 29)
    # one file per as-of day: read back in day order, the same rows and values
    pd.testing.assert_frame_equal(back, out.sort_values(["as_of_date", "user_id"], kind="stable").reset_index(drop=True))
    assert len(list(paths.features_file.glob("*.parquet"))) == 45 - 29


@pytest.mark.parametrize("span", [1, 120, 40_000])  # 40,000 days: wider than the 16-bit keys
def test_day_order_is_the_stable_sort_of_the_days(span: int) -> None:
    rng = np.random.default_rng(span)
    days = rng.integers(0, span, size=5_000).astype(np.int64) + 20_000
    assert np.array_equal(day_order(days), np.argsort(days, kind="stable"))
    assert len(day_order(days[:0])) == 0


def test_on_days_is_isin_of_the_wanted_days() -> None:
    rng = np.random.default_rng(3)
    dates = np.datetime64("2025-01-01", "D") + rng.integers(-10, 200, size=5_000).astype("timedelta64[D]")
    for wanted in (dates[:0], dates[:1], np.unique(dates[:300]), np.datetime64("2024-06-01", "D") + np.arange(3)):
        assert np.array_equal(_on_days(dates, wanted), np.isin(dates, wanted))


def test_frame_matrix_is_the_columns_as_float64_across_row_blocks() -> None:
    """`frame_matrix` fills its matrix in blocks of rows: every value lands where the column
    written whole would put it (rows beyond one block, NaN, nullable ints, category strings)."""
    from churn.features import matrix
    from churn.features.schema import FeatureSpec

    n = 3 * matrix._BLOCK_ROWS + 17
    rng = np.random.default_rng(11)
    quiz = rng.random(n).astype(np.float32)
    quiz[::7] = np.nan
    nullable = pd.array(rng.integers(0, 9, n), dtype="Int64")
    nullable[::5] = pd.NA
    frame = pd.DataFrame({"events": rng.integers(0, 50, n).astype(np.int32), "quiz": quiz, "n": nullable,
                          "paid": rng.integers(0, 2, n).astype(np.int8),
                          "country": pd.Categorical(rng.choice(["DE", "FR", "XX"], n))})
    specs = [FeatureSpec("events", "numeric"), FeatureSpec("quiz", "numeric", nullable=True),
             FeatureSpec("n", "numeric", nullable=True), FeatureSpec("paid", "numeric"),
             FeatureSpec("country", "categorical", categories=("FR", "DE"))]
    got = matrix.frame_matrix(frame, specs)
    country = pd.Index(["FR", "DE"]).get_indexer(frame["country"].astype(object))
    want = np.column_stack([frame["events"].to_numpy(np.float64), quiz.astype(np.float64),
                            frame["n"].to_numpy(np.float64, na_value=np.nan), frame["paid"].to_numpy(np.float64),
                            np.where(country < 0, np.nan, country)])
    assert got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
