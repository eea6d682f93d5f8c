"""Day-partitioned tables: one Parquet file per as-of day in a folder (`<dir>/YYYY-MM-DD.parquet`).

Why: the daily cycle adds a day and sometimes corrects a few old ones. With one file per day,
`ml_jobs update` rewrites only the days it recomputed (about 1% of a 120-day table) instead
of the whole table, and readers select days by file name without opening the others. The
folder keeps the name the single file had (`features/features.parquet/`), like the datasets
Spark and pyarrow write, and every reader of `churn.storage.tables` accepts it.

Each day file is written atomically (`files.DurableRenames`: the day files of one write
are fsynced in one pass, renamed, and their folder fsynced once); a day with no rows has no file.
Every read here is bound to the bytes its generation's MANIFEST records (`churn.storage.verified`).

One encoding (`DayFiles`, the only writer of grid, feature and label day files: `update` and
its pieces, `merge-update`, `prepare`, `features`, `labels`): rows sorted by (as_of_date,
user_id), zstd, Parquet dictionaries only for the columns that are categories, statistics of
user_id and as_of_date only, the schema and pandas metadata of one Arrow conversion, and row
groups cut at the first user id of each piece of the users (`piece_firsts`: the ranges an
in-process update computes one after the other). So identical rows give identical bytes
whichever command wrote them, and a digest recorded of them (the `features` input of the
predictions and drift reports) changes only when the rows do. Before, `features`, `labels`
and `prepare` wrote pandas' `to_parquet` (dictionaries and statistics of every column): a
rerun on unchanged data gave other bytes and flagged every score as stale.
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from churn.storage import verified
from churn.storage.files import DataError, DurableRenames
from churn.storage.paths import DAY_FILE


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


# Rows the Parquet writer encodes per batch (pyarrow's default 1,024): a piece's row group of a
# day (12,500 rows) in one batch instead of 13 per column; the same pages and bytes (a column
# chunk of a row group is one page below the 1 MB page size), 10% less CPU writing a piece's
# day files (1.39 against 1.56 s at 100,000 users, median of 5 interleaved runs).
WRITE_BATCH_ROWS = 65_536

# The columns whose Parquet statistics a reader filters on (`read_days_of`: a piece reads its
# row groups by user_id); the other columns' min/max were a fifth of the write time.
STATISTICS_COLUMNS: list[str] = ["user_id", "as_of_date"]


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth a Parquet dictionary: those that are one already (categories). For the
    others pyarrow's default tries one per column and row group and mostly gives up: at 100,000
    users half the time of writing the features."""
    return [f.name for f in schema if pa.types.is_dictionary(f.type)]


def piece_firsts(user_ids: np.ndarray, shard_users: int) -> np.ndarray:
    """The first user id of each piece of `user_ids` (the users in id order) when they are
    computed in pieces of about `shard_users` (`sampling.users.shard_count` pieces whose sizes
    differ by at most one, `daily.shards.user_bounds`): where a day file's row groups start.

    Why a rule of the users and not of the writer: an update in one process writes each piece's
    rows of a day as a row group, so the next update's pieces read their own older rows by the
    row groups' statistics; every other writer cuts at the same ids, so a day file's bytes do
    not depend on which command wrote it."""
    ids = np.asarray(user_ids, dtype=np.int64)
    if not len(ids):
        return ids
    n = max(1, -(-len(ids) // max(int(shard_users), 1)))
    return ids[(np.arange(n, dtype=np.int64) * len(ids)) // n]


def layout_firsts(users_snapshot: Path, shard_users: int, rows: pd.DataFrame) -> np.ndarray:
    """`piece_firsts` for a writer of whole tables (`features`, `labels`): of the users
    snapshot `update` published with the tables (the users it computed, in its order), so the
    day files are the update's bytes for the same rows; without one (tables of `prepare`
    alone), of the user ids in `rows`."""
    from churn.storage.tables import read_parquet

    if Path(users_snapshot).is_file():
        ids = read_parquet(users_snapshot, columns=["user_id"])["user_id"].to_numpy()
    else:
        ids = np.unique(rows["user_id"].to_numpy())
    return piece_firsts(ids, shard_users)


def day_ordered_table(frame: pd.DataFrame) -> tuple[pa.Table, np.ndarray]:
    """`frame`'s rows sorted by (day, user_id) and converted to Arrow, with their day numbers:
    the one conversion of a frame for the day files (`DayFiles.write_piece`, and an update's
    worker processes, which hand the writer these tables)."""
    dates = frame["as_of_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    order = day_user_order(dates, frame["user_id"].to_numpy())
    if order is not None:
        # reordered as numpy columns before the conversion: an Arrow take of the table was
        # 0.4 s a piece of 12,500 users, most of the regrouping
        frame, dates = frame.take(order), dates[order]
    return pa.Table.from_pandas(frame, preserve_index=False), dates


class DayFiles:
    """The day files of some days of some tables, written at once: THE encoding of day files.

    `areas`: {table: its folder}; `days`: {table: the days this write is authoritative for};
    `firsts`: where row groups start (`piece_firsts`; None: one row group per write of a day).
    Every day file written is open for the whole block; each `write_piece` (a piece of users,
    in id order; or every user) appends its rows of each day, cut at `firsts`, as row groups,
    so a day file is every piece's rows in (day, user) order whatever the pieces were.
    When the block ends the files are closed, fsynced and renamed together
    (`files.DurableRenames`), and the days without a row lose their file; a failure (a full
    disk) removes every temp and replaces nothing.
    A piece's row groups are encoded (zstd) on one thread while the caller computes the next
    piece: the encoding was 22 s of a 100,000-user seed's update, in series with the computing
    on a 2-core machine.
    Memory: two pieces' rows at most (the one encoding, the one computed; the writers hold
    only their footers).
    """

    def __init__(self, areas: Mapping[str, Path], days: Mapping[str, Iterable[str | dt.date]],
                 firsts: np.ndarray | None = None) -> None:
        self._areas = {name: Path(folder) for name, folder in areas.items()}
        self._days = {name: {d if isinstance(d, dt.date) else dt.date.fromisoformat(d) for d in ds}
                      for name, ds in days.items()}
        self._cuts = None if firsts is None or len(firsts) < 2 else np.asarray(firsts, dtype=np.int64)[1:]
        self._group = DurableRenames(max_open=sum(len(d) for d in self._days.values()) + 1)
        self._writers: dict[tuple[str, dt.date], pq.ParquetWriter] = {}
        self.rows = {name: 0 for name in days}
        self.written: list[Path] = []
        # one thread encodes a piece's row groups (pyarrow releases the GIL) while the next
        # piece is computed: at most one piece in flight, so memory stays about two pieces
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="day-files")
        self._in_flight: Future[None] | None = None

    def __enter__(self) -> "DayFiles":
        return self

    def write_piece(self, tables: Mapping[str, tuple[pd.DataFrame, Any]]) -> None:
        """One piece's rows of each table ({table: (frame, anything)}; rows of days outside
        `days` are not written).

        The row groups are cut here and encoded on the encoder thread after the previous
        piece's (file order kept); an encoding failure (a full disk) surfaces here or at the end."""
        groups = [group for name, (frame, _) in tables.items() for group in self._frame_groups(name, frame)]
        self._submit(groups)

    def row_group_ends(self) -> list[int | None]:
        """Where a day file's row groups end, in user id order: the first id of each next piece
        of `firsts`, then None (the last row group runs to the end; a list of [None] without
        `firsts`). A row group holds the ids below its end and at or above the previous one.

        Why: a writer that has a day's rows in chunks (`merge-update` streaming the pods'
        shards) hands `write_arrow` one row group's rows at a time, cut at these ends, so the
        file is the one `write_piece` writes for the same rows, with about one piece in memory."""
        return [*(int(c) for c in self._cuts), None] if self._cuts is not None else [None]

    def write_arrow(self, name: str, table: pa.Table) -> None:
        """Rows of `name` already in Arrow (`merge-update`'s shards, read back with the pandas
        metadata their writer converted them with), encoded as `write_piece` encodes a frame.

        May be called several times for one day, in user id order, each call's rows of a day
        within one row group's range (`row_group_ends`): each call's rows of a day are then
        appended to that day's file as its next row group, as one call with all of them would
        have cut them."""
        if not table.num_rows:
            return
        column = table.column("as_of_date").to_numpy()
        dates = column.astype("datetime64[D]").astype(np.int64)
        order = day_user_order(dates, table.column("user_id").to_numpy())
        if order is not None:
            table, dates = table.take(pa.array(order)), dates[order]
        self._submit(self._table_groups(name, table.combine_chunks(), dates))

    def _submit(self, groups: list[tuple[pq.ParquetWriter, pa.Table]]) -> None:
        self._wait()
        self._in_flight = self._encoder.submit(_write_groups, groups)

    def _wait(self) -> None:
        """Block until the piece being encoded is written; re-raise its failure."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _frame_groups(self, name: str, frame: pd.DataFrame) -> list[tuple[pq.ParquetWriter, pa.Table]]:
        if not len(frame):
            return []
        return self._table_groups(name, *day_ordered_table(frame))

    def _table_groups(self, name: str, table: pa.Table, dates: np.ndarray) -> list[tuple[pq.ParquetWriter, pa.Table]]:
        """(day file's writer, one row group's rows) for each day of `days` in `table` (sorted by
        day, then user), each day's rows cut where a piece of `firsts` starts."""
        table = canonical(table)
        starts = np.r_[0, np.flatnonzero(dates[1:] != dates[:-1]) + 1]  # sorted: no np.unique sort
        ends = np.r_[starts[1:], len(dates)]
        users = table.column("user_id").to_numpy() if self._cuts is not None else None
        out = []
        for day_number, a, b in zip(dates[starts], starts, ends):
            day = dt.date.fromordinal(dt.date(1970, 1, 1).toordinal() + int(day_number))
            if day not in self._days[name]:
                continue
            writer = self._writers.get((name, day))
            if writer is None:
                target = day_file(self._areas[name], day)
                writer = pq.ParquetWriter(self._group.path(target), table.schema, compression="zstd",
                                          use_dictionary=dictionary_columns(table.schema),
                                          write_statistics=STATISTICS_COLUMNS, write_batch_size=WRITE_BATCH_ROWS)
                self._writers[(name, day)] = writer
                self.written.append(target)
            bounds = [int(a), int(b)]
            if users is not None:
                inner = a + np.searchsorted(users[a:b], self._cuts, side="left")
                bounds = [int(a), *sorted({int(x) for x in inner if a < x < b}), int(b)]
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                out.append((writer, table.slice(lo, hi - lo).replace_schema_metadata(writer.schema.metadata)))
            self.rows[name] += int(b - a)
        return out

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        failure = exc
        try:
            self._wait()  # never close a writer the encoder thread is still writing to
        except BaseException as write_exc:
            failure = failure or write_exc
        finally:
            self._encoder.shutdown(wait=True)
        for writer in self._writers.values():
            try:
                writer.close()
            except BaseException as close_exc:  # a full disk at a footer: a failed write too
                failure = failure or close_exc
        self._group.__exit__(type(failure) if failure else None, failure, failure.__traceback__ if failure else None)
        if failure is not None:
            if failure is not exc:
                raise failure
            return
        for name, days in self._days.items():
            for day in days:
                if (name, day) not in self._writers:
                    day_file(self._areas[name], day).unlink(missing_ok=True)


def canonical(table: pa.Table) -> pa.Table:
    """`table` with every string type as `string`: pandas converts a category's labels to
    `large_string` or `string` depending on how the frame was built (a plan read from raw
    data and one computed came out differently), and a Parquet round trip (a pod's shard
    file) gives `string`; the stored Arrow schema would differ for the same rows."""
    fields = []
    for field in table.schema:
        kind = field.type
        if pa.types.is_dictionary(kind) and _is_text(kind.value_type) and kind.value_type != pa.string():
            kind = pa.dictionary(kind.index_type, pa.string(), kind.ordered)
        elif _is_text(kind) and kind != pa.string():
            kind = pa.string()
        fields.append(field.with_type(kind))
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema.equals(table.schema, check_metadata=True) else table.cast(schema)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def day_order(days: np.ndarray) -> np.ndarray:
    """The stable order of rows by day number (a row keeps its place within its day).

    Why 16-bit keys when the days span fewer than 32,768: numpy's stable sort of 16-bit
    integers is a radix sort, O(rows), about 3.5x faster than its timsort of the same days as
    32-bit (a piece's 1.5M grid rows: 15 against 52 ms); the order is the same. The one sort
    by day of the day files, the features' rows and the raw store's parts."""
    if not len(days):
        return np.zeros(0, dtype=np.int64)
    offset = (days - days.min()).astype(np.int64)
    key = offset.astype(np.int16) if int(offset.max()) < 2**15 else offset
    return np.argsort(key, kind="stable")


def day_batches(days: np.ndarray, rows: int) -> list[int]:
    """Where to cut rows sorted by day into batches of whole days of about `rows` rows each
    (a batch ends at the first day start at least `rows` past its own start): [0, ..., len].
    The pieces' hand-over to the writer (`daily.update`) and its feature rows come in these."""
    bounds = [0]
    for start in np.flatnonzero(days[1:] != days[:-1]) + 1:
        if start - bounds[-1] >= rows:
            bounds.append(int(start))
    bounds.append(len(days))
    return bounds


def day_user_order(dates: np.ndarray, users: np.ndarray) -> np.ndarray | None:
    """The (day, user) order of these rows, or None when they are in it already (the update's
    pieces come by day, each day in user order)."""
    if len(dates) < 2 or _in_day_user_order(dates, users):
        return None
    # a stable sort by day keeps a frame's user order within a day (the grid and labels come by
    # user): a two-key sort only for rows in no user order at all
    order = day_order(dates)
    return order if _in_day_user_order(dates[order], users[order]) else np.lexsort((users, dates))


def _in_day_user_order(dates: np.ndarray, users: np.ndarray) -> bool:
    return bool(np.all((dates[1:] > dates[:-1]) | ((dates[1:] == dates[:-1]) & (users[1:] > users[:-1]))))


def _write_groups(groups: list[tuple[pq.ParquetWriter, pa.Table]]) -> None:
    """Append each table as one row group of its day file (on `DayFiles`' encoder thread)."""
    for writer, table in groups:
        writer.write_table(table, row_group_size=max(table.num_rows, 1))


def write_days(frame: pd.DataFrame, folder: Path, column: str = "as_of_date",
               days: Iterable[dt.date] | None = None, firsts: np.ndarray | None = None) -> list[Path]:
    """Write each day of `frame` as its own file through `DayFiles` (rows in user order).

    `days`: the days this write is authoritative for (default: the days in `frame`); a file of
    such a day without rows is removed, files of other days are left alone. `firsts`: where
    row groups start (`piece_firsts` of the users; None: one row group per day file).
    Converted and encoded a day at a time (memory: two days' rows beside the frame).
    """
    if column != "as_of_date":
        raise ValueError(f"day files are partitioned by as_of_date, not {column!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dates = frame[column].to_numpy().astype("datetime64[D]")
    order = np.argsort(dates, kind="stable")
    sorted_dates = dates[order]
    present, starts = np.unique(sorted_dates, return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    wanted = [d.astype(object) for d in present] if days is None else list(days)
    keep = set(wanted)
    with DayFiles({"t": folder}, {"t": wanted}, firsts) as files:
        for day, lo, hi in zip(present, starts, bounds):
            if day.astype(object) in keep:
                files.write_piece({"t": (frame.iloc[order[lo:hi]], None)})
    return files.written


def replace_days(frame: pd.DataFrame, folder: Path, column: str = "as_of_date",
                 firsts: np.ndarray | None = None) -> list[Path]:
    """Make the folder hold exactly the days of `frame` (a full rebuild)."""
    written = write_days(frame, folder, column, firsts=firsts)
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
