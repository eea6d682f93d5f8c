"""`ml_jobs update`: bring the grid, the features and the labels up to the newest ingested day.

Why incremental: a deployed system receives one new day at a time; rebuilding 120 days of
grid, features and labels for it costs minutes at 100,000 users, the new day seconds.

What is recomputed, and why it equals a rebuild value for value:
- dirty days: raw event days that are new or got a new part file since the last update (a
  late event for an old day adds a part to that day, `churn.raw.store`), the missing days of
  a gap, and the first grid day of every new user. `d` = the earliest dirty day;
- grid days [d, newest]: the same `build_user_days` as `prepare`, on the raw events of those
  days, with the calendar's day offset and each user's last active day before d (read from
  the grid file of d - 1), so `days_since_last_active` needs no older rows;
- feature days [d, newest]: the same `compute_features`, on grid days [d - 29, newest]
  (the look-back of the longest window and the 30-day payment rate);
- label days [d - W, newest - W] (a label at t looks at (t - W, t + W]): the same
  `build_labels` on grid days [d - 2W + 1, newest]; this includes the labels matured since the
  last update (t + W <= newest day).
Anything that moves every row - another calendar start, a changed or removed user, a changed
feature window or horizon - triggers a full rebuild (the log says why).

Shards (`churn.daily.shards`): every row depends on one user's days only, so users are
computed in groups - in one step, when there are more than `sharding.shard_users` users,
pieces of contiguous user ids computed by `sharding.workers` processes and written by the
step's own process straight into the day files in their final order (memory follows the
piece size times the workers), or one shard of the stable user hash per pod of an Indexed
Job (`--shard I/N`, then `merge_update`). Within a group the new grid days stay in memory for
the features and labels, and only the group's rows of older days are read.

State (`update_state.json`): the calendar, the newest day covered, the raw part files seen
per day and the settings that shape the outputs. It is published with the day files and the
users snapshot as ONE generation of the area `tables` (`churn.storage.derived`): the day
files of the recomputed days are written into a fresh generation, the others carried from
the state the update read as hard links, and one pointer switches them all. A crash anywhere
leaves the complete previous state (the next update recomputes the same days), or the
complete new one. An in-process sharded update publishes once, after its merge; the shard
pods of an Indexed Job write only their shard folders, and `merge_update` is the one
publisher.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from churn.config.settings import Settings
from churn.data.prepare import EVENT_INPUT_COLUMNS, NEVER_ACTIVE, build_user_days, clean_events, clean_users
from churn.features.compute import compute_features, features_by_day, history_days
from churn.labels.build import build_labels
from churn.raw.store import day_files as raw_day_files
from churn.raw.store import raw_digest, read_event_files, read_events, read_users, require_raw
from churn.daily.shards import (
    DayFiles,
    piece_firsts,
    Plan,
    check_shards,
    merge_tables,
    partition_events,
    raw_signature_digest,
    read_partition,
    remove_run,
    run_dir,
    user_bounds,
    users_of_piece,
    users_of_shard,
    write_shard,
    written_for,
)
from churn.errors import DataError
from churn.parallel.pool import ordered_map
from churn.sampling.users import shard_count
from churn.storage import generations
from churn.storage.daytables import day_batches, day_ordered_table, day_user_order, read_days_of
from churn.storage.derived import base_id, publish_tables
from churn.storage.files import atomic_write_json, mkdirs, naming_disk_full, read_json
from churn.storage.paths import DataPaths
from churn.storage.tables import atomic_write_parquet, read_parquet

log = logging.getLogger(__name__)

_ONE = dt.timedelta(days=1)


def state_path(paths: DataPaths) -> Path:
    return paths.update_state


def users_snapshot(paths: DataPaths) -> Path:
    """The cleaned users the grid was built from (new and changed users are found against it)."""
    return paths.users_snapshot


@dataclass
class UpdateResult:
    """What one update did; `newest_day` is the newest day every output now covers."""

    mode: str  # "none" (nothing new), "incremental" or "full"
    reason: str
    start: str = ""
    newest_day: str = ""
    first_recomputed: str | None = None
    grid_days: int = 0
    feature_days: int = 0
    label_days: int = 0
    grid_rows: int = 0
    feature_rows: int = 0
    label_rows: int = 0
    missing_days: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _signatures(paths: DataPaths, files: dict[dt.date, list[Path]]) -> dict[str, list[str]]:
    """{day: its raw part files}: raw history is never rewritten, so a day that got new events
    has a new part (`churn.raw.store`), and a replaced raw data set has other names."""
    return {day.isoformat(): [p.relative_to(paths.raw).as_posix() for p in parts] for day, parts in files.items()}


def _shape(settings: Settings) -> dict[str, Any]:
    """The settings that change every output row: another value means a full rebuild."""
    return {"windows_days": list(settings.features.windows_days), "window_days": settings.churn.window_days}


def _users_changed(old: pd.DataFrame, new: pd.DataFrame) -> str | None:
    """Why existing users differ (a full rebuild), or None when `new` only adds users."""
    missing = ~old["user_id"].isin(new["user_id"])
    if missing.any():
        return f"{int(missing.sum())} users removed (e.g. {old['user_id'][missing].head(3).tolist()})"
    merged = old.merge(new, on="user_id", how="left", suffixes=("_old", ""))
    for c in ("signup_date", "plan", "is_paid", "country", "marketing_source"):
        a, b = merged[f"{c}_old"].astype(str), merged[c].astype(str)
        changed = a != b
        if changed.any():
            return f"{int(changed.sum())} users changed {c} (e.g. user {int(merged['user_id'][changed].iloc[0])})"
    return None


def _first_grid_day(users: pd.DataFrame, start: dt.date) -> pd.Series:
    signup = pd.to_datetime(users["signup_date"]).dt.date
    return signup.where(signup > start, start)


GridReader = Callable[[dt.date, dt.date, "Iterable[str] | None"], "pd.DataFrame | None"]


def _grid_reader(paths: DataPaths, ids: np.ndarray | None) -> GridReader:
    """(first, last, columns) -> the users' stored grid rows of those days, in day order (read
    filtered by `ids`: a piece of contiguous ids reads only the row groups of its id range)."""
    return lambda first, last, columns=None: read_days_of(paths.user_days, first, last, ids, columns)


def _carry(read_grid: GridReader, users: pd.DataFrame, day: dt.date) -> np.ndarray:
    """Per user (aligned with `users`): the last active day on grid day `day` (NEVER_ACTIVE if none)."""
    out = np.full(len(users), NEVER_ACTIVE, dtype=np.int64)
    prev = read_grid(day, day, ["user_id", "last_active_day"])
    if prev is None:
        return out
    ids = users["user_id"].to_numpy().astype(np.int64)
    pos = np.searchsorted(ids, prev["user_id"].to_numpy().astype(np.int64))
    out[pos] = prev["last_active_day"].to_numpy()
    return out


def _plan(settings: Settings, paths: DataPaths, users: pd.DataFrame, files: dict[dt.date, list[Path]],
          start: dt.date, newest: dt.date) -> tuple[dt.date | None, str, list[str]]:
    """(first day to recompute or None, why, missing days). A full rebuild returns `start`."""
    missing = [d.isoformat() for d in (start + _ONE * i for i in range((newest - start).days + 1)) if d not in files]
    if not state_path(paths).is_file() or not users_snapshot(paths).is_file():
        return start, "no previous update: full build", missing
    state = read_json(state_path(paths))
    if state.get("start") != start.isoformat():
        return start, f"calendar start moved from {state.get('start')} to {start}: full rebuild", missing
    if state.get("shape") != _shape(settings):
        return start, f"feature windows or label horizon changed ({state.get('shape')}): full rebuild", missing
    old_newest = dt.date.fromisoformat(state["newest_day"])
    if newest < old_newest:
        return start, f"newest raw day went back from {old_newest} to {newest}: full rebuild", missing
    changed_users = _users_changed(read_parquet(users_snapshot(paths)), users)
    if changed_users:
        return start, f"{changed_users}: full rebuild", missing
    seen = state.get("raw", {})
    now = _signatures(paths, files)
    dirty = [dt.date.fromisoformat(d) for d, sig in now.items() if seen.get(d) != sig]
    dirty += [dt.date.fromisoformat(d) for d in seen if d not in now]
    if newest > old_newest:
        dirty.append(old_newest + _ONE)  # new days, also those of a gap without any event
    known = read_parquet(users_snapshot(paths), columns=["user_id"])["user_id"]
    new_users = users[~users["user_id"].isin(known)]
    if len(new_users):
        dirty.append(min(_first_grid_day(new_users, start)))
    if not dirty:
        return None, f"no new data since the update to {old_newest}", []
    first = max(min(dirty), start)
    late = sorted({d for d in dirty if d <= old_newest})
    why = f"{len([d for d in now if d not in seen])} new day(s)"
    if late:
        why += f", changed old day(s) {', '.join(map(str, late[:5]))}"
    return first, why, [m for m in missing if dt.date.fromisoformat(m) > old_newest]


@contextlib.contextmanager
def system_memory_pool() -> Iterator[None]:
    """pyarrow allocates from the C library's malloc inside the block (its default pool again
    after it).

    Why: pyarrow's default pool (mimalloc) keeps the pages of freed buffers for reuse, so every
    table an update reads (raw events, older grid days, partitions) stayed resident after its
    conversion to pandas: 160-240 MB per process of an update's pieces at 12,500 users, about a
    quarter of a worker's peak (#16); large buffers from malloc are their own mappings, returned
    at their free. The bytes written do not depend on the allocator."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def run_update(settings: Settings, paths: DataPaths, shard: tuple[int, int] | None = None) -> UpdateResult:
    """Recompute what new raw days touched; a full rebuild when nothing was built yet.

    Users are processed in shards of `sharding.shard_users` (`churn.daily.shards`), so memory
    follows the shard size, not the number of users. With `shard=(I, N)` only shard I is
    computed, into its shard folder (an Indexed Job's pod); `merge_update` completes the run.
    """
    with system_memory_pool():
        return _run_update(settings, paths, shard)


def _run_update(settings: Settings, paths: DataPaths, shard: tuple[int, int] | None) -> UpdateResult:
    t0 = time.perf_counter()
    paths = paths.bound()  # one state of the tables read for the whole run
    prep = _prepare(settings, paths)
    if isinstance(prep, UpdateResult):
        prep.seconds = round(time.perf_counter() - t0, 3)
        return prep
    users, files, plan, result = prep
    if shard is not None:
        done = written_for(paths, shard, plan)
        if done is not None:  # a retried pod: its previous attempt ran this plan to the end
            _count(result, done["rows"], plan)
            result.reason += f"; shard {shard[0]}/{shard[1]} already written for this plan (an earlier attempt)"
        else:
            tables = _compute(settings, paths, users_of_shard(users, shard), plan, sharded=shard[1] > 1)
            write_shard(paths, shard, plan, tables)
            _count(result, {name: len(frame) for name, (frame, _) in tables.items()}, plan)
            result.reason += f"; shard {shard[0]}/{shard[1]} written, merge with `ml_jobs merge-update {shard[1]}`"
        result.seconds = round(time.perf_counter() - t0, 3)
        return result
    n = shard_count(len(users), settings.sharding.shard_users)
    with _publishing(settings, paths, users, files, plan) as out:
        if n == 1:
            # the day files written as the pieces' are (`DayFiles`: one Arrow conversion of each
            # table, a slice per day; dictionaries only for categories): `write_days`' pandas
            # conversion and Parquet write per day file were 3.5 of the 3.8 s of CPU of a
            # 2,000-user seed's update (302 day files)
            with DayFiles(_areas(out), _plan_days(plan), _firsts(settings, users)) as files:
                files.write_piece(_compute(settings, paths, users, plan, sharded=False))
            rows = files.rows
        else:
            try:
                rows = _in_shards(settings, paths, users, plan, n, out)
            finally:  # also on a failure (a full disk): nothing of an in-process run can be reused
                remove_run(paths, n)
    return _finish(plan, result, rows, t0)


def _in_shards(settings: Settings, paths: DataPaths, users: pd.DataFrame, plan: Plan, n: int,
               out: DataPaths) -> dict[str, int]:
    """The update in N pieces of contiguous user ids: raw events partitioned once, then the
    pieces computed by `sharding.workers` processes (`churn.parallel.pool.ordered_map`, at most
    that many ahead) and appended here, in piece order, to the day files (`DayFiles`) of the
    new generation `out` (this process is the only writer, so the bytes do not depend on the
    workers); returns the rows per table."""
    t1 = time.perf_counter()
    first, newest = dt.date.fromisoformat(plan.first), dt.date.fromisoformat(plan.newest)
    bounds = user_bounds(len(users), n)
    ids = users["user_id"].to_numpy()
    raw = raw_day_files(paths)
    partition_events(paths, ids[bounds[:-1]], _days(first, newest),
                     lambda day: read_event_files(paths, raw[day], EVENT_INPUT_COLUMNS) if day in raw else None)
    log.info("update: raw events of %s..%s partitioned to %d pieces in %.1fs", first, newest, n,
             time.perf_counter() - t1)
    workers = settings.sharding.workers
    out_dir = run_dir(paths, n) / "pieces" if workers > 1 and n > 1 else None
    if out_dir is not None:
        mkdirs(out_dir)
    jobs = [(settings, paths, users_of_piece(users, bounds, i), plan, i, n, out_dir, PIECE_BATCH_ROWS)
            for i in range(n)]
    with DayFiles(_areas(out), _plan_days(plan), _firsts(settings, users)) as files, \
            contextlib.closing(ordered_map(_piece, jobs, workers)) as pieces:
        # closing: a failed write (a full disk) stops the pool at once, not when the traceback
        # holding this frame is freed
        t1 = time.perf_counter()
        for i, (tables, computed, pid) in enumerate(pieces):
            if out_dir is None:
                files.write_piece(tables)
            else:
                for name, path in tables.items():
                    for batch in _batches(path):  # whole days each: the row groups of one call
                        files.write_arrow(name, batch)
            del tables
            log.info("update: piece %d/%d in %.1fs (computed in %.1fs %s)", i + 1, n, time.perf_counter() - t1,
                     computed, "in this process" if pid == os.getpid() else f"by worker process {pid}")
            t1 = time.perf_counter()
    return files.rows


Job = tuple[Settings, DataPaths, pd.DataFrame, Plan, int, int, "Path | None", int]

# Rows of a worker's Arrow record batch of a piece's table (whole days, about this many): the
# writer reads and writes one batch at a time. Before, it memory-mapped the piece's three
# files whole, and their pages stayed resident until the last day of each was written (270 MB
# of the writer's RSS at 12,500 users, #16); the worker converted the grid to day order whole,
# a second copy of it. 16 days of a 12,500-user piece.
PIECE_BATCH_ROWS = 200_000


def _piece(job: Job) -> tuple[dict[str, Any], float, int]:
    """Piece I of N of an in-process update (`_in_shards`), on a worker process of
    `churn.parallel.pool` (or in the step's own, `sharding.workers` 1): it reads its raw
    partition and its users' rows of older days of the generation `paths` is bound to; the
    parent writes the day files. Returns the tables ({name: (frame, days)}, in this process)
    or, on a worker (`out_dir`), {name: an uncompressed Arrow IPC file of its rows in the day
    files' (day, user) order, a record batch per `PIECE_BATCH_ROWS` of whole days
    (`_write_batches`)}, which the writer reads a batch at a time instead of unpickling the
    frames (at 100,000 users the pickled frames cost 15 s more CPU than the update's 35 and
    held two pieces more in the writer); then the seconds it took and the process id."""
    with system_memory_pool():
        return _piece_tables(job)


def _piece_tables(job: Job) -> tuple[dict[str, Any], float, int]:
    settings, paths, users, plan, i, n, out_dir, batch_rows = job
    t0 = time.perf_counter()
    if out_dir is None:
        tables = _compute(settings, paths, users, plan, sharded=True, partition=(i, n))
        return tables, time.perf_counter() - t0, os.getpid()
    out = {name: out_dir / f"piece-{i:03d}-{name}.arrow" for name in ("user_days", "features", "labels")}
    tables = _compute(settings, paths, users, plan, sharded=True, partition=(i, n),
                      features_to=lambda frames: _write_batches(out["features"], frames), batch_rows=batch_rows)
    for name in list(tables):
        _write_batches(out[name], by_days(tables.pop(name)[0], batch_rows))
    return out, time.perf_counter() - t0, os.getpid()


def by_days(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    """`frame`'s rows in (day, user) order, in frames of whole days of about `rows` rows (at
    least one frame, maybe empty): reordered a frame at a time, not all at once."""
    dates = frame["as_of_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    order = day_user_order(dates, frame["user_id"].to_numpy())
    if order is not None:
        dates = dates[order]
    bounds = day_batches(dates, rows)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield frame.iloc[lo:hi] if order is None else frame.take(order[lo:hi])


def _write_batches(path: Path, frames: Iterable[pd.DataFrame]) -> None:
    """Frames in day order as one uncompressed Arrow IPC file, a record batch each (the
    conversion of `DayFiles.write_piece`, `daytables.day_ordered_table`)."""
    with naming_disk_full(path), contextlib.ExitStack() as stack:
        writer = None
        for frame in frames:
            table, _ = day_ordered_table(frame)
            if writer is None:
                writer = stack.enter_context(pa.ipc.new_file(str(path), table.schema))
            writer.write_table(table)
            del frame, table


def _batches(path: Path) -> Iterator[pa.Table]:
    """A worker's file of a piece's table (`_write_batches`), one record batch at a time, read
    into memory: a batch is freed once written, where mapped pages stayed resident until the
    whole file was unmapped. The file is removed after its last batch."""
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for k in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(k)])
    path.unlink()


def _firsts(settings: Settings, users: pd.DataFrame) -> np.ndarray:
    """Where the day files' row groups start: the first user id of each piece an update in one
    process computes (`daytables.piece_firsts`, the same bounds as `user_bounds`), whichever
    writer writes them (one piece, N pieces, the merge of N pods' shards)."""
    return piece_firsts(users["user_id"].to_numpy(), settings.sharding.shard_users)


def _plan_days(plan: Plan) -> dict[str, tuple[str, ...]]:
    """{table: the days of it the plan recomputes} (`DayFiles`' days)."""
    return {"user_days": plan.grid_days, "features": plan.feature_days, "labels": plan.label_days}


def merge_update(settings: Settings, paths: DataPaths, shards: int) -> UpdateResult:
    """Complete an update run as N shards (`run_update(shard=(I, N))` for every I): check they
    ran the plan this update would run now, merge their rows into the areas, write the state."""
    t0 = time.perf_counter()
    paths = paths.bound()
    prep = _prepare(settings, paths)
    if isinstance(prep, UpdateResult):
        if run_dir(paths, shards).is_dir():
            if not _merged_already(paths, shards):
                raise DataError(f"{run_dir(paths, shards)}: shards of an update that is not due any more "
                                f"({prep.reason}): remove the folder, or rerun the shards after new data")
            remove_run(paths, shards)  # a merge that published, then died before this
            prep.reason += f"; the {shards} shards were merged already (their folder removed)"
        prep.seconds = round(time.perf_counter() - t0, 3)
        return prep
    users, files, plan, result = prep
    ran = check_shards(paths, shards, plan)
    with _publishing(settings, paths, users, files, plan) as out:
        rows = merge_tables(paths, shards, ran, _areas(out), _firsts(settings, users))
    result.reason += f"; merged {shards} shards"
    remove_run(paths, shards)  # after the publish: a merge that dies before it can be rerun
    return _finish(plan, result, rows, t0)


def _plan_digest(plan: Plan) -> str:
    """sha256 of a plan (recorded in the MANIFEST: which shards a merge published)."""
    return hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


def _merged_already(paths: DataPaths, shards: int) -> bool:
    """Did the current tables come from these shards (a merge killed after its publish)?"""
    gen = paths.tables
    if gen is None:
        return False
    with contextlib.suppress(DataError, OSError, KeyError, TypeError):
        published = generations.read_manifest(gen).get("inputs", {}).get("plan")
        return published == _plan_digest(check_shards(paths, shards, None))
    return False


@contextlib.contextmanager
def _publishing(settings: Settings, paths: DataPaths, users: pd.DataFrame, files: dict[dt.date, list[Path]],
                plan: Plan) -> Iterator[DataPaths]:
    """The new generation of the tables: the block writes the recomputed day files through the
    yielded DataPaths; the users snapshot and the state follow, then all switch together."""
    full = plan.first == plan.start
    rewritten = {"user_days": None if full else plan.grid_days, "features": None if full else plan.feature_days,
                 "labels": None if full else plan.label_days}
    inputs = {"raw": raw_digest(paths), "raw_parts": plan.raw, "plan": _plan_digest(plan), "shape": _shape(settings)}
    with publish_tables(paths, inputs, rewritten) as out:
        yield out
        atomic_write_parquet(users, out.users_snapshot)
        atomic_write_json(out.update_state, {"start": plan.start, "newest_day": plan.newest,
                                             "shape": _shape(settings), "raw": _signatures(paths, files),
                                             "updated_at": dt.datetime.now(dt.timezone.utc).isoformat()})


def _prepare(settings: Settings, paths: DataPaths
             ) -> UpdateResult | tuple[pd.DataFrame, dict[dt.date, list[Path]], Plan, UpdateResult]:
    """(users, raw day files, plan, result so far), or the finished result when nothing is new."""
    require_raw(paths)
    files = raw_day_files(paths)
    start, newest = next(iter(files)), next(reversed(files))
    users, _ = clean_users(read_users(paths))
    first, why, missing = _plan(settings, paths, users, files, start, newest)
    if missing:
        log.warning("update: no events at all on %d day(s): %s (the grid has them as inactive days)",
                    len(missing), ", ".join(missing))
    if first is None:
        log.info("update: %s; nothing rewritten", why)
        return UpdateResult("none", why, start.isoformat(), newest.isoformat())
    mode = "full" if first == start else "incremental"
    log.info("update (%s): %s; recomputing from %s to %s", mode, why, first, newest)
    w = settings.churn.window_days
    iso = lambda days: tuple(d.isoformat() for d in days)  # noqa: E731
    plan = Plan(start.isoformat(), first.isoformat(), newest.isoformat(), iso(_days(first, newest)),
                iso(_days(first, newest)), iso(_days(max(first - _ONE * w, start), newest - _ONE * w)),
                raw_signature_digest(_signatures(paths, files)), len(users), base_id(paths))
    return users, files, plan, UpdateResult(mode, why, start.isoformat(), newest.isoformat(), first.isoformat(),
                                            missing_days=missing)


def _areas(paths: DataPaths) -> dict[str, Path]:
    return {"user_days": paths.user_days, "features": paths.features_file, "labels": paths.labels_file}


def _count(result: UpdateResult, rows: dict[str, int], plan: Plan) -> None:
    result.grid_days, result.feature_days, result.label_days = (len(plan.grid_days), len(plan.feature_days),
                                                                len(plan.label_days))
    result.grid_rows, result.feature_rows, result.label_rows = rows["user_days"], rows["features"], rows["labels"]


def _finish(plan: Plan, result: UpdateResult, rows: dict[str, int], t0: float) -> UpdateResult:
    """The counts and the log line of a published update."""
    _count(result, rows, plan)
    result.seconds = round(time.perf_counter() - t0, 3)
    log.info("update: %d grid, %d feature, %d label days rewritten (%d/%d/%d rows) in %.2fs; newest day %s",
             result.grid_days, result.feature_days, result.label_days, result.grid_rows, result.feature_rows,
             result.label_rows, result.seconds, plan.newest)
    return result


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + _ONE * i for i in range((last - first).days + 1)] if last >= first else []


_LABEL_GRID_COLUMNS = ["user_id", "as_of_date", "day_index", "active"]


def _compute(settings: Settings, paths: DataPaths, users: pd.DataFrame, plan: Plan, sharded: bool,
             partition: tuple[int, int] | None = None,
             features_to: Callable[[Iterator[pd.DataFrame]], None] | None = None, batch_rows: int = 0,
             ) -> dict[str, tuple[pd.DataFrame, list[dt.date]]]:
    """Grid, feature and label rows of the plan's days for `users` (one shard, or everyone).

    The new grid days stay in memory for the features and labels; only the older days they
    look back on are read, and (`sharded`) only these users' rows of them. `partition`: this
    piece's raw events were partitioned already (`partition_events`, in one process); else
    they are read filtered by its users (a pod). `features_to`: given the feature rows as
    frames of whole days of about `batch_rows` rows (`features_by_day`) as they are computed,
    before the labels (a worker writes them to its file), and they are not in the tables.
    """
    start, first, newest = (dt.date.fromisoformat(x) for x in (plan.start, plan.first, plan.newest))
    ids = users["user_id"].to_numpy().astype(np.int64) if sharded else None
    events = read_partition(paths, partition, EVENT_INPUT_COLUMNS) if partition is not None else None
    if events is None:
        events = read_events(paths, columns=EVENT_INPUT_COLUMNS, start=first, end=newest, user_ids=ids)
    cleaned, _ = clean_events(events, users, first, newest)
    del events
    read_grid = _grid_reader(paths, ids)
    carry = _carry(read_grid, users, first - _ONE) if first > start else None
    grid = build_user_days(users, cleaned, first, newest, day_offset=(first - start).days, last_active_before=carry)
    del cleaned
    grid_days = _days(first, newest)

    lookback = max(first - _ONE * (history_days(settings.features.windows_days) - 1), start)
    history = read_grid(lookback, first - _ONE, None) if lookback < first else None
    if features_to is None:
        features = compute_features(_with_history(history, grid), settings.features.windows_days,
                                    as_of_dates=grid_days, data_start=start, by_day=True)
    else:
        features_to(features_by_day(_with_history(history, grid), settings.features.windows_days,
                                    batch_rows, as_of_dates=grid_days, data_start=start))
    del history

    w = settings.churn.window_days
    lo, hi = max(first - _ONE * w, start), newest - _ONE * w
    label_days = _days(lo, hi)
    if label_days:
        g_lo = max(lo - _ONE * (w - 1), start)
        history = read_grid(g_lo, first - _ONE, _LABEL_GRID_COLUMNS) if g_lo < first else None
        labels = build_labels(_with_history(history, grid[_LABEL_GRID_COLUMNS]), w)
        labels = labels[labels["as_of_date"].to_numpy().astype("datetime64[D]") >= np.datetime64(lo, "D")]
        labels = labels.reset_index(drop=True)
    else:
        labels = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in
                               (("user_id", "int64"), ("as_of_date", "datetime64[us]"), ("churn_label", "int8"))})
    if features_to is not None:
        return {"user_days": (grid, grid_days), "labels": (labels, label_days)}
    return {"user_days": (grid, grid_days), "features": (features, grid_days), "labels": (labels, label_days)}


def _with_history(history: pd.DataFrame | None, grid: pd.DataFrame) -> pd.DataFrame:
    """Older grid days (read) before the new ones (computed): the feature/label functions sort."""
    if history is None or not len(history):
        return grid
    return pd.concat([history, grid], ignore_index=True)
