"""The training set, read only as far as training samples it.

Why: the join of every feature row with its label has 9M rows at 100,000 users and about 80M
(some 15 GB) at 1,000,000, while training keeps at most `training.max_train_rows` train rows
and `training.max_holdout_rows` holdout rows (whole users, in hash order:
`churn.sampling.users`). So the time split is made from the names of the label day files, the
users each side keeps from the label files' user ids alone, and only those users' feature and
label rows are read and joined, as many consecutive days at a time as hold about
`sharding.shard_users` of the kept rows (one filtered scan per piece instead of one per day:
at 2,000 users 66 day reads were most of the step; memory still follows the piece, not the
side). The rows are those the full join followed by the budgets of
`churn.training.train.split_training_set` keeps (`training_test.py`), in the same order (day
by day), and train then finds every row within its budget.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from churn.config.settings import Settings
from churn.errors import DataError
from churn.labels.build import LABEL, build_training_set
from churn.sampling.users import budget_users
from churn.storage.daytables import day_files, read_days_of, row_count
from churn.storage.derived import BUILT_FROM, tables_inputs
from churn.storage.paths import DataPaths
from churn.storage.tables import atomic_write_parquet
from churn.training.split import time_split

log = logging.getLogger(__name__)

LABELLED_ROWS = "labelled_rows"  # DataFrame.attrs key: rows of the full join (the card records it)


def sampled_training_set(settings: Settings, features_dir: Path, labels_dir: Path) -> pd.DataFrame:
    """Train and holdout rows within their budgets, read from the day files of both tables."""
    features, labels = day_files(features_dir), day_files(labels_dir)
    days = [d for d in labels if d in features]  # a labelled row has features from the first feature day on
    if not days:
        raise DataError(f"{labels_dir}: no labelled day with features in {features_dir} (run `ml_jobs update`)")
    s = settings.split
    split = time_split(days, test_days=s.test_days, gap_days=s.gap_days, min_train_days=s.min_train_days,
                       window_days=settings.churn.window_days)
    seed = settings.training.random_state
    parts = []
    for dates, max_rows, side_seed in ((split.train_dates, settings.training.max_train_rows, seed),
                                       (split.test_dates, settings.training.max_holdout_rows, seed + 1)):
        keep, day_rows = _kept_users(labels_dir, dates, max_rows, side_seed)
        for first, last in _day_pieces(dates, day_rows, settings.sharding.shard_users):
            # a range of consecutive side dates: a day in between that is missing from either
            # table is not a side date, and the inner join drops its rows
            f = read_days_of(features_dir, first, last, keep)
            lab = read_days_of(labels_dir, first, last, keep, ["user_id", "as_of_date", LABEL])
            if f is not None and lab is not None:
                parts.append(build_training_set(f, lab))
    out = pd.concat(parts, ignore_index=True)
    labelled = row_count([labels[d] for d in days])  # footers only
    out.attrs[LABELLED_ROWS] = labelled
    log.info("training set: %d of %d labelled rows read (budgets %d train, %d holdout)", len(out), labelled,
             settings.training.max_train_rows, settings.training.max_holdout_rows)
    return out


def _kept_users(labels_dir: Path, dates: Sequence[dt.date], max_rows: int,
                seed: int) -> tuple[np.ndarray | None, dict[dt.date, int]]:
    """The users one side keeps (None = all) from the label files' user ids alone, and the
    label rows of those users per side date (what each day adds to a read)."""
    ids = read_days_of(labels_dir, min(dates), max(dates), None, ["user_id", "as_of_date"])
    if ids is None:
        return None, {}
    days = ids["as_of_date"].to_numpy().astype("datetime64[D]")
    wanted = np.isin(days, np.asarray(dates, dtype="datetime64[D]"))
    user_ids = ids["user_id"].to_numpy()[wanted]
    keep = None
    if len(user_ids) > max_rows:
        users, rows = np.unique(user_ids, return_counts=True)
        keep = budget_users(users, rows, max_rows, seed)
        wanted[wanted] = np.isin(user_ids, keep)
    present, counts = np.unique(days[wanted], return_counts=True)
    return keep, {d.astype(object): int(n) for d, n in zip(present, counts)}


def _day_pieces(dates: Sequence[dt.date], day_rows: dict[dt.date, int],
                rows_at_once: int) -> list[tuple[dt.date, dt.date]]:
    """(first, last) of runs of consecutive `dates` holding at most `rows_at_once` rows
    together (at least one day each): the reads of one side."""
    pieces: list[tuple[dt.date, dt.date]] = []
    first, rows = None, 0
    for prev, day in zip([None, *dates], dates):
        n = day_rows.get(day, 0)
        if first is not None and rows + n > rows_at_once:
            pieces.append((first, prev))
            first, rows = None, 0
        if first is None:
            first = day
        rows += n
    if first is not None:
        pieces.append((first, dates[-1]))
    return pieces


def run_training_set(settings: Settings, paths: DataPaths) -> pd.DataFrame:
    """features/features.parquet/ + labels/labels.parquet/ -> labels/training_set.parquet (the sample)."""
    ts = sampled_training_set(settings, paths.features_file, paths.labels_file)
    ts.attrs[BUILT_FROM] = tables_inputs(paths)  # `train` compares it with the current tables
    atomic_write_parquet(ts, paths.training_set)  # DataFrame.attrs (the labelled rows) travel in the file
    log.info("training set: %d rows, positive rate %.3f", len(ts), float(ts[LABEL].mean()) if len(ts) else float("nan"))
    return ts
