"""`ml_jobs update` shard by shard: bounded memory in one process, and the same shards as a
Kubernetes Indexed Job (`ml_jobs update --shard I/N`, then `ml_jobs merge-update N`).

Why shards of users: every row of the grid, the features and the labels depends on one user's
days only, so the users can be split into groups computed apart and concatenated. A pod's
shard is the stable user hash of `churn.sampling.users.shard_of` (the one `batch-score
--shard` uses): splitmix64(user_id) mod N, the same on every run, machine and pod.

Layout of an Indexed Job's update (beside the data root's areas, never read by other steps):

    shards/update/of-NNN/shard-III/user_days.parquet   this shard's rows, one row group per day
    shards/update/of-NNN/shard-III/features.parquet
    shards/update/of-NNN/shard-III/labels.parquet
    shards/update/of-NNN/shard-III/shard.json          written last: the plan it ran, the row groups

The merge checks that all N shards ran the same plan on the same raw data, concatenates each
recomputed day's shard files sorted by user_id (the order of an unsharded run, so the day files
are equal row for row) into the areas, then writes the update state and removes the shards.
Memory: a shard holds its own users' rows only; the merge about one piece of users' rows
(a row group of a day file) plus one batch per shard (`merge_tables`), not one day of every user.

In one process the pieces are contiguous ranges of user ids instead (`user_bounds`), so
nothing needs merging: the raw events are read ONCE and partitioned to the pieces
(`partition_events`: day by day, each piece's rows appended to
`shards/update/of-NNN/events/shard-III.arrow`), and each piece appends its rows of every day
as a row group to the day files, all open for the run (`DayFiles`): every row is written once,
in its final place. A day file's row groups are ranges of user ids, so the next update's
pieces read their own users' older days by the row groups' statistics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churn.errors import DataError
from churn.raw.contract import EVENT_TYPES
from churn.sampling.users import shard_of
from churn.storage.daytables import (  # noqa: F401 (re-exported)
    STATISTICS_COLUMNS, WRITE_BATCH_ROWS, DayFiles, day_file, day_user_order, dictionary_columns, piece_firsts)
from churn.storage.files import atomic_path, atomic_write_json, read_json, remove_path
from churn.storage.paths import DataPaths

log = logging.getLogger(__name__)

TABLES: tuple[str, ...] = ("user_days", "features", "labels")
MARKER = "shard.json"


@dataclass(frozen=True)
class Plan:
    """What one update recomputes; every shard of a run must have run the same plan."""

    start: str
    first: str
    newest: str
    grid_days: tuple[str, ...]
    feature_days: tuple[str, ...]
    label_days: tuple[str, ...]
    raw: str  # digest of the raw part files per day the plan was made from
    users: int
    base: str = ""  # the tables' generation it read (`churn.storage.derived.base_id`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def raw_signature_digest(signatures: dict[str, list[str]]) -> str:
    """One sha256 over the raw part files per day (what a plan was made from)."""
    return hashlib.sha256(json.dumps(signatures, sort_keys=True).encode("utf-8")).hexdigest()


def run_dir(paths: DataPaths, shards: int) -> Path:
    return paths.root / "shards" / "update" / f"of-{shards:03d}"


def shard_dir(paths: DataPaths, shard: tuple[int, int]) -> Path:
    return run_dir(paths, shard[1]) / f"shard-{shard[0]:03d}"


def events_file(paths: DataPaths, shard: tuple[int, int]) -> Path:
    """Where `partition_events` puts piece I's raw events (inside the run: removed with it)."""
    return run_dir(paths, shard[1]) / "events" / f"shard-{shard[0]:03d}.arrow"


_IPC = pa.ipc.IpcWriteOptions(compression="lz4")  # fast; 1M users' events are ~8 GB uncompressed


def user_bounds(users: int, shards: int) -> np.ndarray:
    """Row bounds (N + 1) of N contiguous pieces of the users sorted by id, sizes differing by
    at most one: piece I of one process is users[bounds[I]:bounds[I + 1]].

    Why ranges of ids in one process (the pods keep the hash shards of `shard_of`): the day
    files are sorted by user_id, so the pieces' rows of a day, written piece after piece, are
    the day file in its final order (`DayFiles`), with no shard files and no merge."""
    return (np.arange(shards + 1, dtype=np.int64) * users) // max(shards, 1)


def users_of_piece(users: pd.DataFrame, bounds: np.ndarray, piece: int) -> pd.DataFrame:
    return users.iloc[int(bounds[piece]):int(bounds[piece + 1])].reset_index(drop=True)


def partition_events(paths: DataPaths, firsts: np.ndarray, days: Iterable[dt.date],
                     read_day: Callable[[dt.date], pa.Table | None]) -> list[Path]:
    """Read the raw events of `days` once, day by day (`read_day`, Arrow), and append each
    piece's rows (a user id in [firsts[I], firsts[I + 1]) goes to piece I, `user_bounds`) to
    `events_file(piece)`, order kept; returns the N files.

    `event_type` is stored as its code in the contract's EVENT_TYPES (-1: missing or outside
    them, which `clean_events` drops alike), so every day's dictionary agrees in one file; a
    missing user id goes to piece 0, whose `clean_events` drops it as invalid.
    Memory: one day of events; no pandas round trip (it was most of this pass)."""
    shards = len(firsts)
    files = [events_file(paths, (i, shards)) for i in range(shards)]
    files[0].parent.mkdir(parents=True, exist_ok=True)
    writers: list[pa.ipc.RecordBatchFileWriter] = []
    try:
        for day in days:
            table = read_day(day)
            if table is None or not table.num_rows:
                continue
            table = _coded(table)
            if not writers:
                writers = [pa.ipc.new_file(str(f), table.schema, options=_IPC) for f in files]
            uid = pc.fill_null(table.column("user_id"), 0).to_numpy()
            piece = np.searchsorted(firsts[1:], uid, side="right").astype(np.int16 if shards < 2**15 else np.int32)
            order = np.argsort(piece, kind="stable")  # a radix sort of small ints
            bounds = np.searchsorted(piece[order], np.arange(shards + 1))
            table = table.take(pa.array(order))
            for i, w in enumerate(writers):
                if bounds[i + 1] > bounds[i]:
                    w.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]))
    finally:
        for w in writers:
            w.close()
    return files


def _coded(events: pa.Table) -> pa.Table:
    """`events` (one chunk per column) with event_type as int8 codes of EVENT_TYPES."""
    events = events.combine_chunks()
    column = events.column("event_type")
    codes = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            labels = chunk.dictionary.cast(pa.string()).to_pylist()
            lookup = np.append(pd.Index(EVENT_TYPES).get_indexer(labels), -1).astype(np.int8)
            codes.append(lookup[pc.fill_null(chunk.indices, len(labels)).to_numpy()])
        else:
            codes.append(pd.Index(EVENT_TYPES).get_indexer(chunk.to_numpy(zero_copy_only=False)).astype(np.int8))
    code = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int8)
    return events.set_column(events.schema.get_field_index("event_type"), "event_type", pa.array(code))


def read_partition(paths: DataPaths, shard: tuple[int, int], columns: Iterable[str]) -> pd.DataFrame | None:
    """Piece I's raw events as `partition_events` stored them (event_type categorical again);
    None when no day had an event."""
    path = events_file(paths, shard)
    if not path.is_file():
        return None
    with pa.memory_map(str(path)) as source:
        frame = pa.ipc.open_file(source).read_all().to_pandas()
    frame["event_type"] = pd.Categorical.from_codes(frame["event_type"].to_numpy(), categories=list(EVENT_TYPES))
    return frame[list(columns)]


def users_of_shard(users: pd.DataFrame, shard: tuple[int, int] | None) -> pd.DataFrame:
    """The rows of `users` in shard (I, N) (all of them for None), order kept."""
    if shard is None or shard[1] == 1:
        return users
    keep = shard_of(users["user_id"].to_numpy(), shard[1]) == shard[0]
    return users.loc[keep].reset_index(drop=True)


def write_shard(paths: DataPaths, shard: tuple[int, int], plan: Plan,
                tables: dict[str, tuple[pd.DataFrame, Iterable[dt.date]]]) -> Path:
    """A shard's rows of each table, then its marker (written last).

    One file per table, one row group per day (its index in the marker): a few files per shard
    instead of one per day, and the merge reads a day of a shard without scanning the others.
    """
    folder = shard_dir(paths, shard)
    if folder.exists():
        shutil.rmtree(folder)  # a previous attempt of this shard (a retried pod)
    rows: dict[str, int] = {}
    groups: dict[str, dict[str, int]] = {}
    for name, (frame, days) in tables.items():
        groups[name] = _write_by_day(frame, table_file(folder, name), set(days))
        rows[name] = len(frame)
    atomic_write_json(folder / MARKER, {"shard": list(shard), "plan": plan.to_dict(), "rows": rows,
                                        "row_groups": groups,
                                        "written_at": dt.datetime.now(dt.timezone.utc).isoformat()})
    log.info("update shard %d/%d: %s rows -> %s", shard[0], shard[1], rows, folder)
    return folder


def written_for(paths: DataPaths, shard: tuple[int, int], plan: Plan) -> dict[str, Any] | None:
    """The marker of shard (I, N) if a previous attempt already wrote it for this very plan.

    Why a retried pod must not recompute it: its complete old output may already be merged by
    another pod (`merge_update` accepts it: same plan), and writing it again would recreate the
    merged run's folder (or remove files a running merge reads), leaving a run no merge ends.
    """
    marker = shard_dir(paths, shard) / MARKER
    if not marker.is_file():
        return None
    done = read_json(marker)
    return done if Plan.from_dict(done["plan"]) == plan else None


def table_file(folder: Path, table: str) -> Path:
    return folder / f"{table}.parquet"


def _write_by_day(frame: pd.DataFrame, path: Path, days: set[dt.date]) -> dict[str, int]:
    """`frame`'s rows of `days` as one row group per day, sorted by user_id within it (stable:
    rows of one user keep their order); returns {day: row group index}.

    Why sorted by user: the merge streams each shard's row group of a day with a cursor that
    only moves forward (`_ShardCursor`)."""
    dates = frame["as_of_date"].to_numpy().astype("datetime64[D]")
    order = day_user_order(dates.astype(np.int64), frame["user_id"].to_numpy())
    if order is None:
        order = np.arange(len(frame))
    table = pa.Table.from_pandas(frame, preserve_index=False).take(pa.array(order))
    sorted_dates = dates[order]
    present, starts = np.unique(sorted_dates, return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    index: dict[str, int] = {}
    # LZ4 and no dictionary attempts: a shard's file is read once by the merge and removed, and
    # trying a dictionary on every float column was most of the write time (measured, README)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, table.schema, compression="lz4",
                                                    use_dictionary=dictionary_columns(table.schema)) as writer:
        for day, lo, hi in zip(present, starts, bounds):
            if day.astype(object) in days:
                writer.write_table(table.slice(lo, hi - lo))
                index[str(day)] = len(index)
    return index


def check_shards(paths: DataPaths, shards: int, plan: Plan | None) -> Plan:
    """The plan all N shards ran; a DataError naming the shard that is missing or differs.

    `plan`: what the merge would compute now (None: take the first shard's); a shard made
    from other raw data or another state is refused, so the merge never mixes two updates.
    """
    ran: Plan | None = plan
    for i in range(shards):
        marker = shard_dir(paths, (i, shards)) / MARKER
        if not marker.is_file():
            raise DataError(f"{marker}: missing: shard {i}/{shards} has not completed "
                            f"(run `ml_jobs update --shard {i}/{shards}`)")
        got = Plan.from_dict(read_json(marker)["plan"])
        if ran is None:
            ran = got
        elif got != ran:
            diff = {k: (v, getattr(ran, k)) for k, v in got.to_dict().items() if v != getattr(ran, k)}
            fields = ", ".join(f"{k}: {_short(a)} vs {_short(b)}" for k, (a, b) in diff.items())
            raise DataError(f"{marker}: shard {i}/{shards} ran another update ({fields}): "
                            f"rerun every shard `ml_jobs update --shard I/{shards}`, then merge")
    assert ran is not None
    return ran


def _short(v: object) -> str:
    text = str(list(v) if isinstance(v, tuple) else v)
    return text if len(text) <= 40 else text[:37] + "..."


# Rows a merge reads of a shard's row group at a time (`_ShardCursor`): about one piece of
# users' rows of a day (`sharding.shard_users`' default 12,500), so the merge holds about one
# piece plus one batch per shard, whatever the number of users.
MERGE_BATCH_ROWS = 16_384


def merge_tables(paths: DataPaths, shards: int, plan: Plan, areas: dict[str, Path],
                 firsts: np.ndarray | None = None) -> dict[str, int]:
    """Each plan day of each table: the N shards' rows of it, sorted by user_id, written over
    the area's day file (`areas[table]`; removed when no shard has rows that day) through
    `DayFiles`, with row groups starting at `firsts` (`piece_firsts` of the users: the bytes
    an update in one process writes for the same rows). Returns the rows written per table.

    Streamed: a day is written one row group at a time (`DayFiles.row_group_ends`), each
    of the rows with ids in that row group's range taken from every shard's row group of
    the day (read in batches of MERGE_BATCH_ROWS by a cursor per shard: the shards are
    user-hash shards, so their ids interleave, each sorted by user_id) and sorted by
    user_id (stable: the order one sort of the whole day gave). Memory: about one piece of
    rows plus one batch per shard, not one day of every user (1M rows x ~40 columns at
    1,000,000 users before; README "Scale"). Without `firsts` a day is one row group,
    merged whole. Arrow tables throughout: the pandas metadata the shards wrote travels
    with them, so the day file reads back as the unsharded run's."""
    days_of = {"user_days": plan.grid_days, "features": plan.feature_days, "labels": plan.label_days}
    markers = [read_json(shard_dir(paths, (i, shards)) / MARKER) for i in range(shards)]
    rows = {}
    for name in TABLES:
        files = [pq.ParquetFile(table_file(shard_dir(paths, (i, shards)), name)) for i in range(shards)]
        with DayFiles({name: areas[name]}, {name: days_of[name]}, firsts) as out:
            ends = out.row_group_ends()
            for day in days_of[name]:
                cursors = [_ShardCursor(f, m["row_groups"][name][day], MERGE_BATCH_ROWS, f"{i}/{shards} {name} {day}")
                           for i, (f, m) in enumerate(zip(files, markers)) if day in m["row_groups"][name]]
                for end in ends:  # a day no shard has rows of loses its file (`DayFiles`)
                    parts = [t for t in (c.take_below(end) for c in cursors) if t is not None]
                    if parts:
                        out.write_arrow(name, _by_user(pa.concat_tables(parts) if len(parts) > 1 else parts[0]))
        rows[name] = out.rows[name]
    return rows


def _by_user(table: pa.Table) -> pa.Table:
    """`table` stably sorted by user_id (rows of one row group's range from several shards)."""
    ids = table.column("user_id").to_numpy()
    if len(ids) < 2 or bool(np.all(ids[1:] >= ids[:-1])):
        return table
    return table.take(pa.array(np.argsort(ids, kind="stable")))


class _ShardCursor:
    """A shard's row group of a day (sorted by user_id), read forward in batches: each
    `take_below(end)` returns the rows from the cursor up to the first id >= end (all the
    rest for None), holding at most one batch beyond them."""

    def __init__(self, file: pq.ParquetFile, row_group: int, batch_rows: int, what: str) -> None:
        self._batches = file.iter_batches(batch_size=batch_rows, row_groups=[row_group])
        self._what = what
        self._batch: pa.RecordBatch | None = None
        self._ids = np.zeros(0, dtype=np.int64)
        self._at = 0
        self._last: int | None = None
        self.done = False
        self._next()

    def _next(self) -> None:
        """Load the next batch (`done` when there is none); refuse ids that go backwards."""
        self._batch, self._at = None, 0
        for batch in self._batches:
            if batch.num_rows:
                ids = batch.column("user_id").to_numpy()
                if (self._last is not None and ids[0] < self._last) or bool(np.any(ids[1:] < ids[:-1])):
                    raise DataError(f"merge-update: shard {self._what}: rows not sorted by user_id")
                self._batch, self._ids, self._last = batch, ids, int(ids[-1])
                return
        self.done = True

    def take_below(self, end: int | None) -> pa.Table | None:
        taken: list[pa.RecordBatch] = []
        while not self.done:
            assert self._batch is not None
            stop = len(self._ids) if end is None else self._at + int(np.searchsorted(self._ids[self._at:], end, side="left"))
            if stop > self._at:
                taken.append(self._batch.slice(self._at, stop - self._at))
            if stop < len(self._ids):
                self._at = stop
                break
            self._next()
        return pa.Table.from_batches(taken) if taken else None


def remove_run(paths: DataPaths, shards: int) -> None:
    """Drop a merged run's shard files (the published tables hold the rows now); a fault
    point (`files.remove_path`): after a crash here, the next merge finds the run merged."""
    remove_path(run_dir(paths, shards))
    parent = run_dir(paths, shards).parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
