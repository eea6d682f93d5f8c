"""`ml_jobs update` shard by shard: bounded memory in one process, and the same shards as a
Kubernetes Indexed Job (`ml_jobs update --shard I/N`, then `ml_jobs merge-update N`).

Why shards of users: every row of the grid, the features and the labels depends on one user's
days only, so the users can be split into groups computed apart and concatenated. A shard is
the stable user hash of `churn.sampling.users.shard_of` (the one `batch-score --shard` uses):
splitmix64(user_id) mod N, the same on every run, machine and pod.

Layout of a sharded update (beside the data root's areas, never read by other steps):

    shards/update/of-NNN/shard-III/user_days.parquet   this shard's rows, one row group per day
    shards/update/of-NNN/shard-III/features.parquet
    shards/update/of-NNN/shard-III/labels.parquet
    shards/update/of-NNN/shard-III/shard.json          written last: the plan it ran, the row groups
    shards/update/of-NNN/events/shard-III.arrow        in one process: this shard's raw events
    shards/update/of-NNN/grid/shard-III.arrow          ... and the grid days it looks back on

The merge checks that all N shards ran the same plan on the same raw data, concatenates each
recomputed day's shard files sorted by user_id (the order of an unsharded run, so the day files
are equal row for row) into the areas, then writes the update state and removes the shards.
Memory: a shard holds its own users' rows only; the merge one day of every user at a time.

In one process the raw events, and the grid days an incremental update looks back on, are
read ONCE and partitioned to the shards (`partition_events`, `partition_grid`: day by day,
each shard's rows appended to its own Arrow file), so N shards cost one pass over them, not N
filtered passes.
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
import pyarrow.parquet as pq

from churn.errors import DataError
from churn.raw.contract import EVENT_TYPES
from churn.sampling.users import shard_of
from churn.storage.daytables import day_file
from churn.storage.files import DurableRenames, atomic_path, atomic_write_json, read_json
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
    """Where `partition_events` puts shard I's raw events (inside the run: removed with it)."""
    return run_dir(paths, shard[1]) / "events" / f"shard-{shard[0]:03d}.arrow"


_IPC = pa.ipc.IpcWriteOptions(compression="lz4")  # fast; 1M users' events are ~8 GB uncompressed


def partition_events(paths: DataPaths, shards: int, days: Iterable[dt.date],
                     read_day: Callable[[dt.date], pd.DataFrame]) -> list[Path]:
    """Read the raw events of `days` once, day by day (`read_day`), and append each shard's
    rows (stable user hash) to `events_file(shard)`, order kept; returns the N files.

    `event_type` is stored as its code in the contract's EVENT_TYPES (-1: missing or outside
    them, which `clean_events` drops alike), so every day's dictionary agrees in one file.
    Memory: one day of events."""
    files = [events_file(paths, (i, shards)) for i in range(shards)]
    _partition(files, days, read_day, lambda ev: _coded(ev).replace_schema_metadata(None))
    return files


def grid_file(paths: DataPaths, shard: tuple[int, int]) -> Path:
    """Where `partition_grid` puts shard I's look-back grid rows (inside the run)."""
    return run_dir(paths, shard[1]) / "grid" / f"shard-{shard[0]:03d}.arrow"


def partition_grid(paths: DataPaths, shards: int, days: Iterable[dt.date],
                   read_day: Callable[[dt.date], pd.DataFrame | None]) -> list[Path]:
    """The grid days an incremental update looks back on (`days`), read once and partitioned
    like the raw events (`grid_file`), so N shards do not each scan every user's 59 days."""
    files = [grid_file(paths, (i, shards)) for i in range(shards)]
    _partition(files, days, read_day, lambda frame: pa.Table.from_pandas(frame, preserve_index=False))
    return files


def _partition(files: list[Path], days: Iterable[dt.date], read_day: Callable[[dt.date], pd.DataFrame | None],
               encode: Callable[[pd.DataFrame], pa.Table]) -> None:
    """Each day's rows (`read_day`) split by the user hash over `files` (an Arrow file per
    shard), appended in day order; the first day's schema (and pandas metadata) for all."""
    shards = len(files)
    files[0].parent.mkdir(parents=True, exist_ok=True)
    writers: list[pa.ipc.RecordBatchFileWriter] = []
    schema: pa.Schema | None = None
    try:
        for day in days:
            frame = read_day(day)
            if frame is None or not len(frame):
                continue
            table = encode(frame)
            del frame
            if schema is None:
                schema = table.schema
                writers = [pa.ipc.new_file(str(f), schema, options=_IPC) for f in files]
            table = table.replace_schema_metadata(schema.metadata)
            shard = shard_of(table.column("user_id").to_numpy(), shards)
            order = np.argsort(shard, kind="stable")
            bounds = np.searchsorted(shard[order], np.arange(shards + 1))
            table = table.take(pa.array(order))
            for i, w in enumerate(writers):
                if bounds[i + 1] > bounds[i]:
                    w.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]))
    finally:
        for w in writers:
            w.close()


def _coded(events: pd.DataFrame) -> pa.Table:
    cols = {c: events[c] for c in events.columns}
    etype = events["event_type"]
    labels = pd.Index(etype.cat.categories.astype(str)) if isinstance(etype.dtype, pd.CategoricalDtype) else None
    if labels is not None:
        lookup = np.append(pd.Index(EVENT_TYPES).get_indexer(labels), -1).astype(np.int8)
        cols["event_type"] = lookup[etype.cat.codes.to_numpy()]
    else:
        cols["event_type"] = pd.Index(EVENT_TYPES).get_indexer(etype.astype("object")).astype(np.int8)
    return pa.Table.from_pandas(pd.DataFrame(cols), preserve_index=False)


def read_partition(paths: DataPaths, shard: tuple[int, int], columns: Iterable[str]) -> pd.DataFrame | None:
    """Shard I's raw events as `partition_events` stored them (event_type categorical again);
    None when no day had an event."""
    frame = _read_arrow(events_file(paths, shard))
    if frame is None:
        return None
    frame["event_type"] = pd.Categorical.from_codes(frame["event_type"].to_numpy(), categories=list(EVENT_TYPES))
    return frame[list(columns)]


def read_grid_partition(paths: DataPaths, shard: tuple[int, int]) -> pd.DataFrame | None:
    """Shard I's look-back grid rows (`partition_grid`), in day order; None if none was partitioned."""
    return _read_arrow(grid_file(paths, shard))


def _read_arrow(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all().to_pandas()


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
    """`frame`'s rows of `days` as one row group per day (row order within a day kept);
    returns {day: row group index}."""
    dates = frame["as_of_date"].to_numpy().astype("datetime64[D]")
    order = np.argsort(dates, kind="stable")
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


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth a Parquet dictionary: those that are one already (categories). For the
    others pyarrow's default tries one per column and row group and mostly gives up: at 100,000
    users half the time of writing the features."""
    return [f.name for f in schema if pa.types.is_dictionary(f.type)]


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


def merge_tables(paths: DataPaths, shards: int, plan: Plan, areas: dict[str, Path]) -> dict[str, int]:
    """Each plan day of each table: the N shards' rows of it concatenated, sorted by user_id,
    written over the area's day file (`areas[table]`; removed when no shard has rows that day).
    Arrow tables throughout: the pandas metadata the shards wrote travels with them, so the day
    file reads back as the unsharded run's. Returns the rows written per table."""
    days_of = {"user_days": plan.grid_days, "features": plan.feature_days, "labels": plan.label_days}
    markers = [read_json(shard_dir(paths, (i, shards)) / MARKER) for i in range(shards)]
    rows = {}
    for name in TABLES:
        files = [pq.ParquetFile(table_file(shard_dir(paths, (i, shards)), name)) for i in range(shards)]
        total = 0
        with DurableRenames() as group:  # the day files fsynced in one pass, then renamed
            for day in days_of[name]:
                parts = [f.read_row_group(m["row_groups"][name][day]) for f, m in zip(files, markers)
                         if day in m["row_groups"][name]]
                target = day_file(areas[name], dt.date.fromisoformat(day))
                if not parts:
                    target.unlink(missing_ok=True)
                    continue
                table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
                # each shard's rows are in user order: a stable sort restores the global order
                table = table.take(pa.array(np.argsort(table.column("user_id").to_numpy(), kind="stable")))
                pq.write_table(table, group.path(target), compression="zstd",
                               use_dictionary=dictionary_columns(table.schema))
                total += table.num_rows
        rows[name] = total
    return rows


def remove_run(paths: DataPaths, shards: int) -> None:
    """Drop a merged run's shard files (the areas hold the rows now)."""
    shutil.rmtree(run_dir(paths, shards), ignore_errors=True)
    parent = run_dir(paths, shards).parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
