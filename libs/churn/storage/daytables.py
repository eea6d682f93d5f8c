"""Day-partitioned tables: one Parquet file per as-of day in a folder (`<dir>/YYYY-MM-DD.parquet`).

Why: the daily cycle adds a day and sometimes corrects a few old ones. With one file per day,
`ml_jobs update` rewrites only the days it recomputed (about 1% of a 120-day table) instead
of the whole table, and readers select days by file name without opening the others. The
folder keeps the name the single file had (`features/features.parquet/`), like the datasets
Spark and pyarrow write, and every reader of `churn.storage.tables` accepts it.

Each day file is written atomically (`files.DurableRenames`: the day files of one write
are fsynced in one pass, renamed, and their folder fsynced once); a day with no rows has no file.
Every read here is bound to the bytes its generation's MANIFEST records (`churn.storage.verified`).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from churn.storage import verified
from churn.storage.files import DataError, DurableRenames
from churn.storage.paths import DAY_FILE
from churn.storage.tables import write_parquet


def day_file(folder: Path, day: dt.date) -> Path:
    return Path(folder) / f"{day.isoformat()}.parquet"


def day_files(folder: Path) -> dict[dt.date, Path]:
    """{day: file} of a day-partitioned folder, sorted by day ({} when the folder is missing).

    Listed with scandir, whose entries know their type: `Path.is_file()` per entry was a
    stat(2) for each of the ~90-120 files, on every listing (drift-check lists a folder ~40
    times at 2,000 users).
    """
    found = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                m = DAY_FILE.match(entry.name)
                if m and entry.is_file():
                    found[dt.date.fromisoformat(m.group(1))] = Path(folder) / entry.name
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return dict(sorted(found.items()))


def _dates(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy().astype("datetime64[D]")


def write_days(frame: pd.DataFrame, folder: Path, column: str = "as_of_date",
               days: Iterable[dt.date] | None = None) -> list[Path]:
    """Write each day of `frame` (by `column`) as its own file; row order within a day is kept.

    `days`: the days this write is authoritative for (default: the days in `frame`); a file of
    such a day without rows is removed, files of other days are left alone.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dates = _dates(frame, column)
    order = np.argsort(dates, kind="stable")
    sorted_dates = dates[order]
    present, starts = np.unique(sorted_dates, return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    written: list[Path] = []
    wanted = None if days is None else {np.datetime64(d, "D") for d in days}
    with DurableRenames() as group:
        for day, lo, hi in zip(present, starts, bounds):
            if wanted is not None and day not in wanted:
                continue
            part = frame.iloc[order[lo:hi]].reset_index(drop=True)
            target = day_file(folder, day.astype(object))
            write_parquet(part, group.path(target))
            written.append(target)
    if wanted is not None:
        for day in wanted - set(present):
            day_file(folder, day.astype(object)).unlink(missing_ok=True)
    return written


def replace_days(frame: pd.DataFrame, folder: Path, column: str = "as_of_date") -> list[Path]:
    """Make the folder hold exactly the days of `frame` (a full rebuild)."""
    written = write_days(frame, folder, column)
    keep = {p.name for p in written}
    for p in day_files(folder).values():
        if p.name not in keep:
            p.unlink()
    return written


def read_days_of(folder: Path, first: dt.date | None, last: dt.date | None, user_ids: np.ndarray | None,
                 columns: Iterable[str] | None = None) -> pd.DataFrame | None:
    """Rows of the given users (all for None) in the day files of [first, last], in day order.

    Filtered while reading (pyarrow scans batch by batch), so memory follows the rows kept,
    not the files' size: what a shard of users or a training sample reads. The ids' range is
    part of the filter, so row groups whose user_id statistics lie outside it are not even
    decoded (the update's pieces of contiguous ids read their own row groups of a day file).
    None when no day file lies in the range.
    """
    files = _files_between(folder, first, last)
    if not files:
        return None
    filt = None
    if user_ids is not None:
        ids = np.asarray(user_ids, np.int64)
        filt = pads.field("user_id").isin(pa.array(ids))
        if len(ids):
            filt = (pads.field("user_id") >= int(ids.min())) & (pads.field("user_id") <= int(ids.max())) & filt
    return _scan(folder, files, columns, filt, f"{first}..{last}").to_pandas()


def read_days(folder: Path, first: dt.date | None = None, last: dt.date | None = None,
              columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows of the days in [first, last] (either end open), concatenated in day order."""
    files = _files_between(folder, first, last)
    if not files:
        raise DataError(f"{folder}: no day files between {first or 'the start'} and {last or 'the end'}")
    return read_day_files(folder, files, columns)


def read_day_files(folder: Path, files: Sequence[Path], columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The rows of these day files of `folder`, file after file in the order given, as one frame.

    One scan of all the files and one conversion to pandas, not a pandas read per file and a
    concat: the same frame (dtypes and categories too) for about half the CPU at a few days
    (drift-check reads a window this way, several days at a time).
    """
    return _scan(folder, files, columns, None, f"{Path(files[0]).name}..{Path(files[-1]).name}").to_pandas()


def _files_between(folder: Path, first: dt.date | None, last: dt.date | None) -> list[Path]:
    return [p for d, p in day_files(folder).items() if (first is None or d >= first) and (last is None or d <= last)]


def row_count(files: Sequence[Path]) -> int:
    """Rows in these day files, from their footers (of the checked bytes, `verified.opened`)."""
    with verified.opened(files) as checked:
        try:
            return sum(pq.ParquetFile(f.source).metadata.num_rows for f in checked)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{Path(files[0]).parent}: cannot read day file footers ({type(exc).__name__}: {exc})") from exc


def _scan(folder: Path, files: Sequence[Path], columns: Iterable[str] | None, filt: Any, what: str) -> pa.Table:
    """The (filtered) rows of day files in file order; a corrupt or missing file is a DataError
    naming the folder and the days.

    Bound to the checked bytes (`verified.opened`): in a published generation each file's
    sha256 is compared with its MANIFEST (once per process per unchanged inode) and pyarrow
    parses that very inode, its row groups pruned by the filter's statistics as before."""
    with verified.opened(files) as checked:
        try:
            ds = pads.dataset([f.source for f in checked], format="parquet")
            return ds.to_table(columns=list(columns) if columns is not None else None, filter=filt)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{folder}: cannot read day files {what} ({type(exc).__name__}: {exc})") from exc
