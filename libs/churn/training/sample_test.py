"""The sampled training set holds exactly the rows the full join and the budgets keep."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config.settings import Settings
from churn.labels.build import LABEL, build_training_set
from churn.storage.daytables import write_days
from churn.storage.paths import DataPaths
from churn.storage.tables import read_parquet
from churn.training.sample import LABELLED_ROWS, run_training_set
from churn.training.split import date_mask
from churn.training.train import split_training_set
from churn.training.training_test import small_settings, synthetic_training_set


def budgets_of_the_full_join(full: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """What training kept before: the whole join, then split_training_set's row budgets."""
    run = split_training_set(full, settings)
    as_of = full["as_of_date"].to_numpy()
    keep = []
    for dates, side in ((run.split.train_dates, run.train), (run.split.test_dates, run.test)):
        rows = full.loc[date_mask(as_of, dates)]
        kept = set(zip(side.user_ids.tolist(), side.as_of.astype("datetime64[D]").tolist()))
        mask = [(u, d) in kept for u, d in zip(rows["user_id"], rows["as_of_date"].to_numpy().astype("datetime64[D]").tolist())]
        keep.append(rows.loc[mask])
    return pd.concat(keep, ignore_index=True)


@pytest.mark.parametrize("rows_at_once", [1, 700, 10**9])  # a day per read, pieces of days, a side at once
def test_training_set_reads_only_its_sample_and_equals_the_budgets_of_the_full_join(
        tmp_path: Path, rows_at_once: int) -> None:
    frame = synthetic_training_set(n_users=400, n_days=70)
    frame["as_of_date"] = frame["as_of_date"].astype("datetime64[us]")  # as the pipeline stores dates
    features = frame.drop(columns=[LABEL])
    rng = np.random.default_rng(3)
    labels = frame.loc[rng.random(len(frame)) < 0.8, ["user_id", "as_of_date", LABEL]]  # some rows unlabelled
    paths = DataPaths.from_root(tmp_path)
    write_days(features, paths.features_file)
    write_days(labels.reset_index(drop=True), paths.labels_file)
    settings = small_settings(max_train_rows=3_000, max_holdout_rows=1_000)
    settings = dataclasses.replace(settings, sharding=dataclasses.replace(settings.sharding, shard_users=rows_at_once))

    sample = run_training_set(settings, paths)
    full = build_training_set(features, labels)
    want = budgets_of_the_full_join(full, settings)
    assert 0 < len(sample) <= 4_000 < len(full)
    by_day = ["as_of_date", "user_id"]  # day files give rows day by day; the synthetic frame is by user
    pd.testing.assert_frame_equal(sample, want.sort_values(by_day).reset_index(drop=True))  # also the order
    stored = read_parquet(paths.training_set)
    assert stored.attrs[LABELLED_ROWS] == len(full)
    again = split_training_set(stored, settings)  # train finds every row within its budget
    assert again.train.rows + again.test.rows == len(sample) and again.data["labelled_rows"] == len(full)


def test_without_budget_pressure_the_sample_is_the_whole_join(tmp_path: Path) -> None:
    frame = synthetic_training_set(n_users=50, n_days=70)
    frame["as_of_date"] = frame["as_of_date"].astype("datetime64[us]")
    paths = DataPaths.from_root(tmp_path)
    write_days(frame.drop(columns=[LABEL]), paths.features_file)
    write_days(frame[["user_id", "as_of_date", LABEL]], paths.labels_file)
    settings = small_settings()
    sample = run_training_set(settings, paths)
    run = split_training_set(frame, settings)
    assert len(sample) == run.train.rows + run.test.rows
    assert dataclasses.asdict(split_training_set(sample, settings).split) == dataclasses.asdict(run.split)
