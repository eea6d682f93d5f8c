"""Reading feature rows for given as-of dates, and who is eligible to be scored.

Why a filtered read: features/features.parquet holds every (user, date); scoring needs one
date and drift two windows. pyarrow filters while reading, so memory follows the rows kept.

Why eligibility here: the label population (churn.labels) excludes users who have already
churned (no active day in the last W fully observed days). Scoring and drift use the SAME
rule on the feature columns, so the model is applied to, and monitored on, the population
it was trained on.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from churn.storage.daytables import day_files, read_days
from churn.storage.files import DataError, read_verified, require_file


@dataclass(frozen=True)
class FeatureBytes:
    """The features bound to ONE published version: a day folder resolved once, or a single
    file's bytes read once; every byte parsed is checked against its generation's manifest.

    Why: a check that reads the features several times (drift: the dates, then two windows)
    must read one version; reading by path three times mixed two versions when the file was
    replaced during the run. A generation directory is immutable (a new publish makes a new
    one), so the resolved folder cannot change under the reader.
    """

    path: Path
    folder: Path | None = None
    data: bytes | None = None

    @classmethod
    def read(cls, path: Path) -> "FeatureBytes":
        p = require_file(path, "features")
        if Path(p).is_dir():
            return cls(Path(path), folder=Path(os.path.realpath(p)))
        return cls(Path(path), data=read_verified(p))

    def __str__(self) -> str:
        return str(self.path)


FeatureSource = Union[Path, FeatureBytes]


def _snapshot(source: FeatureSource) -> FeatureBytes:
    return source if isinstance(source, FeatureBytes) else FeatureBytes.read(source)


def feature_dates(path: FeatureSource) -> list[dt.date]:
    """The distinct as-of dates of the features, sorted (a folder: its day files' names;
    a single file: one column read)."""
    snap = _snapshot(path)
    if snap.folder is not None:
        return list(day_files(snap.folder))
    assert snap.data is not None
    column = pq.read_table(pa.BufferReader(snap.data), columns=["as_of_date"]).column("as_of_date")
    unique = pa.compute.unique(column).to_numpy(zero_copy_only=False)
    return sorted(d.astype(object) for d in np.unique(np.asarray(unique).astype("datetime64[D]")))


def read_features(path: FeatureSource, dates: Sequence[dt.date]) -> pd.DataFrame:
    """Rows of the features whose as_of_date is in `dates` (a folder: only those day files;
    a single file: filtered while parsed)."""
    snap = _snapshot(path)
    if snap.folder is not None:
        files = day_files(snap.folder)
        wanted_days = [d for d in dates if d in files]
        if not wanted_days:  # the columns, no rows (as a filtered read of one file gives)
            return read_days(snap.folder, *[next(iter(files))] * 2).iloc[:0]
        return pd.concat([read_days(snap.folder, d, d) for d in wanted_days], ignore_index=True)
    assert snap.data is not None
    try:
        kind = pq.read_schema(pa.BufferReader(snap.data)).field("as_of_date").type
        wanted = pa.array(np.asarray(list(dates), dtype="datetime64[D]")).cast(kind)
        table = pq.read_table(pa.BufferReader(snap.data), filters=pads.field("as_of_date").isin(wanted))
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataError(f"{path}: cannot read features ({type(exc).__name__}: {exc})") from exc
    return table.to_pandas()


def eligible_mask(features: pd.DataFrame, window_days: int) -> np.ndarray:
    """True for users not already churned at their as-of date (the label population rule).

    Already churned = no active day in the last `window_days` days (days_since_last_active
    >= W, or never active) while at least W days were observed since signup.
    """
    last = features["days_since_last_active"].to_numpy(dtype=np.float64, na_value=np.nan)
    since_signup = features["days_since_signup"].to_numpy(dtype=np.float64, na_value=np.nan)
    inactive = np.isnan(last) | (last >= window_days)
    observed = since_signup + 1 >= window_days
    return ~(inactive & observed)
