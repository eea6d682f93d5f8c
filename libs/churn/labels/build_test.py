"""Tests for churn.labels.build: exact (t, t+W] horizon, already-churned exclusion, the join."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config.settings import GeneratorSettings, Settings
from churn.data.generate import generate, write_raw
from churn.data.prepare import prepare_frames, run_prepare
from churn.errors import DataError
from churn.features.compute import compute_features, run_features
from churn.labels.build import LABEL, build_labels, build_training_set, run_labels
from churn.storage.daytables import day_files
from churn.storage.paths import DataPaths

START = pd.Timestamp("2025-01-01")


def _grid(activity: dict[int, str]) -> pd.DataFrame:
    """Tiny dense grid: user -> string of 0/1 per day from the data start ('.' = not signed up yet)."""
    rows = []
    for uid, days in activity.items():
        for d, ch in enumerate(days):
            if ch != ".":
                rows.append({"user_id": uid, "as_of_date": START + pd.Timedelta(days=d), "day_index": d,
                             "active": int(ch)})
    return pd.DataFrame(rows).astype({"user_id": np.int32, "day_index": np.int16, "active": np.int8})


def _labels(df: pd.DataFrame) -> dict[tuple[int, int], int]:
    return {(int(r.user_id), (r.as_of_date - START).days): int(r.churn_label) for r in df.itertuples()}


def test_horizon_is_t_exclusive_to_t_plus_w_inclusive() -> None:
    # W = 3, 10 days (0..9): a label needs t + 3 <= 9, so t <= 6
    grid = _grid({1: "1010000100", 2: "1110000000"})
    got = _labels(build_labels(grid, 3))
    expected = {
        # user 1, active on days 0, 2, 7
        (1, 0): 0,  # (0, 3] holds day 2
        (1, 1): 0,  # day 2 = t + 1 is inside the horizon
        (1, 2): 1,  # (2, 5] silent; the active day t itself does not count
        (1, 3): 1,  # (3, 6] silent
        (1, 4): 0,  # day 7 = t + W is inside the horizon (inclusive)
        # (1, 5), (1, 6): silent over (t - 3, t] -> already churned, excluded
        # user 2, active on days 0..2
        (2, 0): 0,
        (2, 1): 0,
        (2, 2): 1,
        (2, 3): 1,
        (2, 4): 1,  # last day before three silent days are complete
    }
    assert got == expected


def test_already_churned_users_are_excluded() -> None:
    grid = _grid({1: "1100000000", 2: ".....00000", 3: "0000000000"})
    got = _labels(build_labels(grid, 3))
    # user 1: last active day 1; silent for 3 full days from t = 4 on -> excluded from t = 4
    assert got[(1, 1)] == 1 and got[(1, 2)] == 1 and got[(1, 3)] == 1
    assert all((1, t) not in got for t in range(4, 10))
    # user 2 signs up on day 5: no row before; a new user is not "already churned" before W days
    assert all((2, t) not in got for t in range(5))
    assert got[(2, 5)] == 1 and got[(2, 6)] == 1 and (2, 7) not in got
    # user 3 never active: only rows before 3 days of silence were observed
    assert sorted(t for (u, t) in got if u == 3) == [0, 1]


def test_unsorted_input_gives_same_labels() -> None:
    grid = _grid({1: "1000100001", 2: "0110011000"})
    a = build_labels(grid, 3)
    b = build_labels(grid.sample(frac=1.0, random_state=3), 3)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ValueError, match="window_days"):
        build_labels(grid, 0)


def test_generated_labels_and_training_set() -> None:
    settings = Settings(generator=GeneratorSettings(n_users=400, days=100, seed=9))
    users, events = generate(settings.generator)
    grid, _ = prepare_frames(users, events)
    labels = build_labels(grid, 30)
    assert labels["as_of_date"].max() == START + pd.Timedelta(days=99 - 30)
    assert 0.0 < labels[LABEL].mean() < 0.5
    features = compute_features(grid, (7, 14, 30))
    ts = build_training_set(features, labels)
    assert len(ts) == len(features.merge(labels, on=["user_id", "as_of_date"]))
    assert list(ts.columns) == list(features.columns) + [LABEL]
    expected = features.merge(labels, on=["user_id", "as_of_date"])
    pd.testing.assert_frame_equal(ts, expected.astype({LABEL: np.int8}))
    assert "engagement_score" not in ts.columns
    # every training row had at least one active day in the W days up to t
    assert (ts["active_days_30d"] > 0).all()
    # a churner appears with label 1 for at most W days after the last active day
    ones = labels[labels[LABEL] == 1].groupby("user_id").size()
    assert ones.max() <= 30


def test_training_set_rejects_duplicate_keys() -> None:
    f = pd.DataFrame({"user_id": [1, 1], "as_of_date": [START, START], "x": [1, 2]})
    lab = pd.DataFrame({"user_id": [1], "as_of_date": [START], LABEL: [1]})
    with pytest.raises(DataError, match="unique"):
        build_training_set(f, lab)
    with pytest.raises(DataError, match="labels: missing column 'churn_label'"):
        build_training_set(f.iloc[:1], lab.drop(columns=[LABEL]))


def test_run_labels(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    settings = Settings(generator=GeneratorSettings(n_users=50, days=80, seed=4))
    write_raw(settings.generator, paths)
    run_prepare(settings, paths)
    run_features(settings, paths)
    labels = run_labels(settings, paths)
    assert len(day_files(paths.labels_file)) == labels["as_of_date"].nunique()
    assert len(labels) > 0
