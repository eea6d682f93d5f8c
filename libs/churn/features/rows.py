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
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from churn.storage import verified
from churn.storage.derived import in_spans
from churn.storage.daytables import day_files, read_day_files, read_days
from churn.storage.files import DataError, require_file


def feature_dates(path: Path) -> list[dt.date]:
    """The distinct as-of dates of a features file, sorted (reads one column only)."""
    require_file(path, "features")
    if Path(path).is_dir():
        return list(day_files(path))
    with verified.opened([path]) as [checked]:
        column = pq.read_table(checked.source, columns=["as_of_date"]).column("as_of_date")
    unique = pa.compute.unique(column).to_numpy(zero_copy_only=False)
    return sorted(d.astype(object) for d in np.unique(np.asarray(unique).astype("datetime64[D]")))


def features_digest(path: Path, spans: Sequence[tuple[dt.date, dt.date]] | None = None) -> str:
    """sha256 of the features a step read, for its outputs' MANIFEST (`inputs`).

    One file: its digest. A day-partitioned folder: one digest over the day files in `spans`
    (inclusive (first, last) ranges; None = every day), so a step reading a few days of a long
    history names those days, not the whole folder. The digests are the MANIFEST's of the
    files the step's reads checked (`verified.digest_of`: no second read of a file verified,
    unchanged, in this process); outside a generation (an old root) the files are hashed.
    Its readers rebuild it from the MANIFEST alone (`storage.derived.features_digest_now`).
    """
    require_file(path, "features")
    if not Path(path).is_dir():
        return verified.sha256_of(path)
    files = [f for day, f in day_files(path).items() if in_spans(day, spans)]
    return verified.digest_of(files)


def read_features(path: Path, dates: Sequence[dt.date]) -> pd.DataFrame:
    """Rows of the features file whose as_of_date is in `dates` (filtered while reading)."""
    require_file(path, "features")
    if Path(path).is_dir():
        files = day_files(path)
        wanted_days = [d for d in dates if d in files]
        if not wanted_days:  # the columns, no rows (as a filtered read of one file gives)
            return read_days(path, *[next(iter(files))] * 2).iloc[:0]
        return read_day_files(path, [files[d] for d in wanted_days])
    with verified.opened([path]) as [checked]:
        try:
            dataset = pads.dataset(checked.source, format="parquet")
            kind = dataset.schema.field("as_of_date").type
            wanted = pa.array(np.asarray(list(dates), dtype="datetime64[D]")).cast(kind)
            table = dataset.to_table(filter=pads.field("as_of_date").isin(wanted))
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise DataError(f"{path}: cannot read features ({type(exc).__name__}: {exc})") from exc
    return table.to_pandas()


def feature_batches(path: Path, day: dt.date, rows: int) -> Iterator[pd.DataFrame]:
    """The feature rows of `day`, at most `rows` at a time, in file order (at least one frame,
    maybe empty): what `read_features(path, [day])` returns, in pieces.

    Why: one as-of day holds a row per user (1M rows at 1,000,000 users); batch-score needs
    each row alone, so it reads the day once, a piece at a time (pages streamed: memory
    follows `rows`, not the day file's row groups).
    """
    require_file(path, "features")
    file = day_files(path).get(day) if Path(path).is_dir() else Path(path)
    if file is None:
        yield read_features(path, [day])
        return
    with verified.opened([file]) as [checked]:
        try:
            if Path(path).is_dir():
                with pq.ParquetFile(checked.source, buffer_size=1 << 20, pre_buffer=False) as pf:
                    schema = pf.schema_arrow
                    empty = True
                    for batch in pf.iter_batches(batch_size=max(1, rows)):
                        empty = False
                        yield pa.Table.from_batches([batch]).replace_schema_metadata(schema.metadata).to_pandas()
                    if empty:
                        yield schema.empty_table().to_pandas()
                return
            dataset = pads.dataset(checked.source, format="parquet")
            kind = dataset.schema.field("as_of_date").type
            wanted = pads.field("as_of_date").isin(pa.array(np.asarray([day], dtype="datetime64[D]")).cast(kind))
            empty = True
            for batch in dataset.to_batches(filter=wanted, batch_size=max(1, rows)):
                if len(batch):
                    empty = False
                    yield pa.Table.from_batches([batch]).replace_schema_metadata(dataset.schema.metadata).to_pandas()
            if empty:
                yield dataset.schema.empty_table().to_pandas()
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise DataError(f"{path}: cannot read features of {day} ({type(exc).__name__}: {exc})") from exc


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
