"""The raw data of a data root: where it lives, the one reader and the one writer.

Layout (under `<root>/raw/`, see the README's "Raw data" section):

    manifest.json                                   the commit point: lists every file below
    users/users-<batch>.parquet                     the whole users table as of that batch
    events/date=YYYY-MM-DD/part-<batch>-<seq>.parquet   events of one UTC day, from one batch

Why partitioned by event date: a batch of new days is an append (new part files), never a
rewrite of history, and a step that needs only some days (the daily update) reads only
their partitions. Why a manifest: a batch touches many files; readers only ever see the
files the manifest lists, and the manifest is replaced atomically last, so a batch becomes
visible whole or not at all (a crash leaves unlisted files, which the next writer deletes).
The files a batch stops listing stay until the next batch commits (`Manifest.kept`): a reader
that read the previous manifest just before the switch still finds them.
Why a new users file per batch: users and events of one batch switch together.

Every step reads through `read_users` / `read_events` (never a path), and `generate` and
`ingest` write through `write_batch`; the table contract (columns and types) is
`churn.raw.contract`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from churn.storage.files import DataError, atomic_write_bytes, atomic_write_json, file_digest, read_json, remove_path
from churn.storage.filelock import FileLock
from churn.storage.paths import DataPaths
from churn.storage.daytables import day_order
from churn.storage.tables import parse_parquet

log = logging.getLogger(__name__)

FORMAT = 1
REPORTS = "reports"  # raw/reports/: each batch's own report, committed with it (`BatchWriter.add_report`)
LOCK_TIMEOUT_S = 3600.0  # a writer waits for another batch (an ingest of 24M events takes a minute)
WAYS_IN = "`ml_jobs ingest --users PATH --events PATH` (your data) or `ml_jobs generate` (synthetic)"

_DICT = pa.dictionary(pa.int32(), pa.string())
EVENTS_SCHEMA = pa.schema([
    ("event_id", pa.int64()),
    ("user_id", pa.int64()),
    ("event_time", pa.timestamp("us")),  # UTC, without a zone (the contract's rule)
    ("event_type", _DICT),
    ("course_id", _DICT),
    ("watch_minutes", pa.float32()),
    ("quiz_score", pa.float32()),
    ("amount", pa.float32()),
])
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENTS_SCHEMA.names)
# Why only these: trying a dictionary for ids, times and floats (pyarrow's default) costs
# write time on columns whose values barely repeat.
_DICT_COLUMNS = [f.name for f in EVENTS_SCHEMA if pa.types.is_dictionary(f.type)]
# The columns readers filter on (`read_events`: event ids, user ids; days by partition) and
# the times; min/max of the other columns were 30% of the CPU of writing a part.
_STATISTICS_COLUMNS = ["event_id", "user_id", "event_time"]


@dataclass(frozen=True)
class Part:
    """One committed events file: its path relative to raw/, UTC day, rows and batch."""

    path: str
    date: str
    rows: int
    batch: int
    sha256: str = ""  # of the file as written (empty in a manifest from before: hashed when read)


@dataclass(frozen=True)
class Batch:
    """What one write did (appended to the manifest's history; `ingest` prints it)."""

    batch: int
    kind: str  # "generate" (replaces everything) | "ingest" (appends and upserts)
    at: str
    users: int = 0
    events_added: int = 0
    dates: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """The committed raw data: the users file, the event parts and the batch history."""

    batch: int = 0
    users: str | None = None
    users_rows: int = 0
    parts: tuple[Part, ...] = ()
    batches: tuple[Batch, ...] = ()
    # files of the state before this batch, left for readers in flight (they read the previous
    # manifest just before the switch); the next batch's commit removes them
    kept: tuple[str, ...] = ()
    users_sha256: str = ""  # of the users file as written (empty in a manifest from before)

    @functools.cached_property
    def _digests(self) -> dict[str, str]:
        return self.digests()

    def digest(self, rel: str) -> str:
        """The sha256 recorded for one listed file ("" when it has none)."""
        return self._digests.get(rel, "")

    def digests(self) -> dict[str, str]:
        """{path relative to raw/: sha256 recorded at the commit} of every listed file that has one."""
        out = {p.path: p.sha256 for p in self.parts if p.sha256}
        if self.users and self.users_sha256:
            out[self.users] = self.users_sha256
        return out

    @property
    def dates(self) -> list[dt.date]:
        return sorted({dt.date.fromisoformat(p.date) for p in self.parts})

    @property
    def events_rows(self) -> int:
        return sum(p.rows for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        if d.get("format") != FORMAT:
            raise DataError(f"raw manifest format {d.get('format')!r} is not {FORMAT}")
        return cls(int(d["batch"]), d.get("users"), int(d.get("users_rows", 0)),
                   tuple(Part(**p) for p in d.get("parts", ())),
                   tuple(Batch(**{**b, "dates": tuple(b.get("dates", ()))}) for b in d.get("batches", ())),
                   tuple(d.get("kept", ())), str(d.get("users_sha256", "")))


def manifest_path(paths: DataPaths) -> Path:
    return paths.raw / "manifest.json"


_MANIFESTS: dict[str, tuple[bytes, Manifest]] = {}  # path -> (the bytes last parsed, their Manifest)
# {absolute path of a committed file: its sha256}, from every manifest this process read: a
# reader that listed its files from the previous manifest (a file the current one only keeps)
# still checks them against what was committed
_COMMITTED: dict[str, str] = {}


def read_manifest(paths: DataPaths) -> Manifest:
    """The committed raw data (an empty Manifest when nothing was written yet).

    Parsed once per content (the bytes are read each time and compared with those parsed
    last: exact, also for a file edited in place), so a reader that checks a day's files
    against it once a day does not parse it 120 times."""
    path = manifest_path(paths)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Manifest()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    cached = _MANIFESTS.get(str(path))
    if cached is not None and cached[0] == data:
        return cached[1]
    try:
        manifest = Manifest.from_dict(json.loads(data.decode("utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read the raw manifest ({type(exc).__name__}: {exc})") from exc
    _MANIFESTS[str(path)] = (data, manifest)
    _COMMITTED.update({str(paths.raw / rel): sha for rel, sha in manifest.digests().items()})
    return manifest


def require_raw(paths: DataPaths, users: bool = True, events: bool = True) -> Manifest:
    """The manifest, or a DataError naming what is missing and both ways to provide it."""
    m = read_manifest(paths)
    missing = [name for name, want, have in (("users", users, m.users), ("events", events, m.parts))
               if want and not have]
    if missing:
        raise DataError(f"{paths.raw}: no raw {' and no raw '.join(missing)} (bring them in with {WAYS_IN})")
    return m


def raw_files(paths: DataPaths, manifest: Manifest | None = None) -> list[Path]:
    """Every committed file (users file first, then parts in date order)."""
    m = manifest or read_manifest(paths)
    files = [paths.raw / m.users] if m.users else []
    return files + [paths.raw / p.path for p in sorted(m.parts, key=lambda p: (p.date, p.path))]


def raw_digest(paths: DataPaths, manifest: Manifest | None = None) -> str:
    """sha256 over (relative path, content digest) of every committed file (of `manifest`,
    default the current one).

    The content digests are those the manifest recorded when the batch wrote the files (no
    file is read); every reader checks the bytes it reads against them (`verified_bytes`), so
    a verdict or a MANIFEST naming this digest names exactly the bytes a reader can get. A
    manifest from before (no digests) has its files hashed. Why relative paths: part names
    repeat across date directories, so names alone would let two days swap contents without
    changing the digest.
    """
    m = manifest or read_manifest(paths)
    recorded = m.digests()
    return digest_of((rel, recorded.get(rel) or _committed_digest(paths.raw / rel))
                     for rel in (f.relative_to(paths.raw).as_posix() for f in raw_files(paths, m)))


def digest_of(files: Iterable[tuple[str, str]]) -> str:
    """The raw digest of (path relative to raw/, sha256) pairs in `raw_files` order: what
    `raw_digest` computes, and what `validate` computes from the bytes it actually read."""
    h = hashlib.sha256()
    for rel, sha in files:
        h.update(rel.encode() + b"\0" + sha.encode() + b"\n")
    return h.hexdigest()


def verified_bytes(paths: DataPaths, path: Path, manifest: Manifest | None = None) -> tuple[bytes, str]:
    """(bytes, sha256) of one committed raw file, read once and checked against the sha256 the
    manifest recorded at its commit: a reader parses exactly these bytes, never the path again.

    A file replaced or rewritten after its batch committed (after it was validated) is a
    DataError naming it; a file of a manifest from before (no digest) is returned with the
    digest of the bytes read (what `validate` certifies then)."""
    m = manifest or read_manifest(paths)
    rel = Path(path).relative_to(paths.raw).as_posix()
    expected = m.digest(rel) or _COMMITTED.get(str(paths.raw / rel), "")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: listed in raw/manifest.json but missing "
                        "(restore it, or bring the raw data in again with " + WAYS_IN + ")") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    sha = hashlib.sha256(data).hexdigest()
    if expected and sha != expected:
        raise DataError(f"{path}: changed since its raw batch was committed (sha256 {sha[:12]}, raw/manifest.json "
                        f"records {expected[:12]}): not read; restore the file or bring the raw data in again "
                        f"({WAYS_IN}), then run `ml_jobs validate`")
    return data, sha


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def _committed_digest(f: Path) -> str:
    """`file_digest`, remembered in this process per (path, inode, size, mtime).

    Why: a committed raw file is never rewritten in place (a batch adds new files), and the
    daily cycle checks the raw digest three times in one process (before an ingest, the
    validation stamp after it, `update`'s check); with the memo only the new batch's files
    are hashed again, not 24M events' worth of parts. A file replaced or touched has another
    key and is hashed again.
    """
    st = f.stat()
    key = (str(f), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(f)
    return _DIGESTS[key]


# ------------------------------------------------------------------ reading


def read_users(paths: DataPaths, columns: Sequence[str] | None = None,
               manifest: Manifest | None = None) -> pd.DataFrame:
    """The users table (every attribute as of the latest batch, or of `manifest`), its bytes
    checked against the manifest's digest."""
    return read_users_checked(paths, columns, manifest)[0]


def read_users_checked(paths: DataPaths, columns: Sequence[str] | None = None,
                       manifest: Manifest | None = None) -> tuple[pd.DataFrame, str]:
    """(users table, sha256 of the bytes it was parsed from)."""
    m = manifest or require_raw(paths, events=False)
    if not m.users:
        require_raw(paths, events=False)
    path = paths.raw / str(m.users)
    data, sha = verified_bytes(paths, path, m)
    return parse_parquet(path, data, columns), sha


def read_events(paths: DataPaths, columns: Sequence[str] | None = None,
                dates: Iterable[dt.date] | None = None, start: dt.date | None = None,
                end: dt.date | None = None, event_ids: np.ndarray | None = None,
                user_ids: np.ndarray | None = None, checked: bool = True) -> pd.DataFrame:
    """Events of every day, or only of `dates`, or of the days in [start, end] (inclusive).

    Only the partitions of the wanted days are opened; `event_ids` / `user_ids` keep only
    those rows (filtered while reading). Columns are the contract's types (ids int64,
    event_time UTC datetime64[us], event_type and course_id categorical).
    Row order: by day, then by batch, then as written. `checked=False`: a look-up over every
    stored day (ingest's probe for stored ids) scans by path, one column, row groups pruned,
    without comparing the bytes with the manifest (`_scan`).
    """
    m = require_raw(paths, users=False)
    wanted = None if dates is None else {d.isoformat() for d in dates}
    parts = [p for p in sorted(m.parts, key=lambda p: (p.date, p.path))
             if (wanted is None or p.date in wanted)
             and (start is None or p.date >= start.isoformat()) and (end is None or p.date <= end.isoformat())]
    files = [paths.raw / p.path for p in parts]
    if not checked:
        return _scan(paths, files, columns, _id_filter(event_ids, user_ids)).to_pandas()
    return read_event_files(paths, files, columns, _id_filter(event_ids, user_ids), m).to_pandas()


def _scan(paths: DataPaths, files: Sequence[Path], columns: Sequence[str] | None = None,
          filter: pads.Expression | None = None) -> pa.Table:
    """Parts read by path as one dataset (only the wanted columns, row groups pruned by the
    filter), NOT compared with the manifest's digests.

    Why: a look-up over every stored part (ingest's probe for its event ids, the vocabulary
    and maximum of a column) needs one column of a few row groups; checking the bytes means
    reading and hashing every whole part, two passes over the raw data per daily batch (20 s
    more per ingest at 100,000 users, measured). Nothing derived is built from these reads:
    every step that builds on the parts (validate, prepare, update) reads them checked."""
    cols = list(columns) if columns is not None else list(EVENT_COLUMNS)
    if not files:
        return EVENTS_SCHEMA.empty_table().select(cols)
    try:
        return pads.dataset([str(f) for f in files], schema=EVENTS_SCHEMA, format="parquet").to_table(
            columns=cols, filter=filter).unify_dictionaries()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{paths.raw / 'events'}: cannot read raw events ({type(exc).__name__}: {exc})") from exc


def read_event_files(paths: DataPaths, files: Sequence[Path], columns: Sequence[str] | None = None,
                     filter: pads.Expression | None = None, manifest: Manifest | None = None) -> pa.Table:
    """The rows of these committed part files (e.g. one day's, from `day_files`) as one Arrow
    table in the contract's types, dictionaries unified; each file's bytes checked against
    the digest its batch recorded (`verified_bytes`).

    Why beside `read_events`: a caller that already holds the day's files and stays in Arrow
    (the update's partition of the raw events) converts nothing to pandas."""
    cols = list(columns) if columns is not None else list(EVENT_COLUMNS)
    if not files:
        return EVENTS_SCHEMA.empty_table().select(cols)
    m = manifest or read_manifest(paths)
    tables = [read_event_file(paths, f, cols, filter, m)[0] for f in files]
    return (tables[0] if len(tables) == 1 else pa.concat_tables(tables)).unify_dictionaries()


def read_event_file(paths: DataPaths, path: Path, columns: Sequence[str] | None = None,
                    filter: pads.Expression | None = None,
                    manifest: Manifest | None = None) -> tuple[pa.Table, str]:
    """(rows of one committed part file in the contract's types, sha256 of the bytes they were
    parsed from): the file is read once, checked, and parsed from those bytes."""
    cols = list(columns) if columns is not None else list(EVENT_COLUMNS)
    data, sha = verified_bytes(paths, path, manifest)
    try:
        table = _contract_table(data, cols) if filter is None else None
        if table is None:
            table = _fragment(data).to_table(schema=EVENTS_SCHEMA, columns=cols, filter=filter)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read raw events ({type(exc).__name__}: {exc})") from exc
    return table, sha


def _contract_table(data: bytes, columns: list[str]) -> pa.Table | None:
    """`columns` of a part file whose stored types are the contract's (every part this store
    writes), read directly on this thread; None for any other file (the dataset fragment
    reads it, casting to the contract's types).

    Why: the fragment's scanner costs about 0.5 ms a file more (a thread pool and a scan
    plan per file) than the Parquet reader on a 4,000-row part; validate and update read
    every raw part, 120 of them at 2,000 users."""
    if not columns or any(EVENTS_SCHEMA.get_field_index(c) < 0 for c in columns):
        return None
    wanted = pa.schema([EVENTS_SCHEMA.field(c) for c in columns], metadata=EVENTS_SCHEMA.metadata)
    source = pq.ParquetFile(pa.BufferReader(data))
    stored = source.schema_arrow
    if any(stored.get_field_index(f.name) < 0 or not stored.field(f.name).type.equals(f.type) for f in wanted):
        return None
    table = source.read(columns=columns, use_threads=False)
    # the fragment's table has the contract's schema alone: no pandas metadata of the writer
    return table.cast(wanted) if table.schema.equals(wanted) else None


def _fragment(data: bytes) -> pads.Fragment:
    """A Parquet file's (checked) bytes as a dataset fragment: read with the contract's schema,
    only the wanted columns decoded, filters applied while reading, as from its path."""
    return pads.ParquetFileFormat().make_fragment(pa.py_buffer(data))


def _column_batches(paths: DataPaths, column: str) -> Iterator[pa.Array]:
    """One events column over every stored day, a read batch at a time (memory: one batch);
    a look-up by path, not compared with the manifest (see `_scan`)."""
    m = require_raw(paths, users=False)
    files = [str(paths.raw / p.path) for p in sorted(m.parts, key=lambda p: (p.date, p.path))]
    if not files:
        return
    try:
        for batch in pads.dataset(files, schema=EVENTS_SCHEMA, format="parquet").to_batches(columns=[column]):
            yield batch.column(0)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{paths.raw / 'events'}: cannot read raw events ({type(exc).__name__}: {exc})") from exc


def distinct_values(paths: DataPaths, column: str) -> set[str]:
    """The distinct non-missing values of one events column over every stored day (as text).

    Each read batch is reduced to its distinct values, so memory is one batch, not the column
    of every stored event (240M course ids at 1,000,000 users: ~1 GB as one categorical); what
    ingest's new-vocabulary check compares a batch with.
    """
    seen: set[str] = set()
    for values in _column_batches(paths, column):
        values = pc.unique(values)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        seen.update(str(v) for v in values.to_pylist() if v is not None)
    return seen


def max_value(paths: DataPaths, column: str) -> int | None:
    """The largest value of one numeric events column over every stored day (None: no events).

    Each read batch is reduced to its maximum, so memory is one batch, not the column of every
    stored event (240M event ids at 1,000,000 users: 1.9 GB as one array, and
    `generate --next-days` peaked at 5.8 GiB reading it whole to take its maximum).
    """
    tops = [top for values in _column_batches(paths, column) if (top := pc.max(values).as_py()) is not None]
    return int(max(tops)) if tops else None


def _id_filter(event_ids: np.ndarray | None, user_ids: np.ndarray | None) -> pads.Expression | None:
    """Rows whose ids are among the given ones. The ids' range is part of the filter (implied by
    the `isin`, so the same rows) because pyarrow prunes row groups by their min/max statistics
    on a range, not on an `isin`: ingest's probe of a new day's event ids, all above the stored
    ones, then decodes no stored row group (120 parts: 0.06 s against 0.11-0.44 s)."""
    out = None
    for name, ids in (("event_id", event_ids), ("user_id", user_ids)):
        if ids is not None:
            ids = np.asarray(ids, dtype=np.int64)
            cond = pads.field(name).isin(pa.array(ids))
            if len(ids):
                cond = (pads.field(name) >= int(ids.min())) & (pads.field(name) <= int(ids.max())) & cond
            out = cond if out is None else out & cond
    return out


def day_files(paths: DataPaths, manifest: Manifest | None = None) -> dict[dt.date, list[Path]]:
    """{UTC day: its committed part files}: a day whose list changed got new events.

    Why a list: each batch adds its own part to the days it touches (history is never
    rewritten), so a day's events are the union of its parts.
    """
    out: dict[dt.date, list[Path]] = {}
    for p in sorted((manifest or read_manifest(paths)).parts, key=lambda p: (p.date, p.path)):
        out.setdefault(dt.date.fromisoformat(p.date), []).append(paths.raw / p.path)
    return out


def event_dates(paths: DataPaths) -> list[dt.date]:
    """The UTC days that have events, sorted (from the manifest: no file is opened)."""
    return read_manifest(paths).dates


# ------------------------------------------------------------------ writing


def events_table(events: pd.DataFrame) -> pa.Table:
    """A contract-typed events frame as an Arrow table of EVENTS_SCHEMA (categories as strings)."""
    cols = {}
    for f in EVENTS_SCHEMA:
        s = events[f.name]
        if pa.types.is_dictionary(f.type):
            if isinstance(s.dtype, pd.CategoricalDtype):  # codes stay codes: no string per row
                s = s.cat.rename_categories([str(c) for c in s.cat.categories])
                cols[f.name] = pa.array(s).cast(_DICT)
            else:
                cols[f.name] = pa.array(s, type=pa.string(), from_pandas=True).dictionary_encode().cast(_DICT)
        elif f.name == "event_time":
            cols[f.name] = pa.array(pd.to_datetime(s).astype("datetime64[us]").to_numpy(), type=f.type)
        else:
            cols[f.name] = pa.array(s.to_numpy(), type=f.type, from_pandas=True)
    return pa.table(cols, schema=EVENTS_SCHEMA)


def _days(table: pa.Table) -> np.ndarray:
    times = table.column("event_time").to_numpy()
    if np.isnat(times).any():
        raise DataError("raw events: event_time missing (validate the batch before writing it)")
    return times.astype("datetime64[D]")


class BatchWriter:
    """Writes one batch: `add_events` any number of times, optionally `set_users`, then `commit`.

    Nothing is visible before `commit` (it replaces the manifest); leaving the `with` block
    without committing (an exception) deletes the batch's files. `replace=True` (generate)
    drops every earlier part and users file at commit; otherwise the batch appends.
    """

    def __init__(self, paths: DataPaths, kind: str, replace: bool = False) -> None:
        self.paths = paths
        self.kind = kind
        self.replace = replace
        self._lock = FileLock(paths.locks / "raw.lock", timeout=LOCK_TIMEOUT_S)
        self._parts: list[Part] = []
        self._users: tuple[str, int, str] | None = None
        self._seq = 0
        self._base = Manifest()
        self.batch = 0

    def __enter__(self) -> "BatchWriter":
        self._lock.acquire()
        try:
            self._base = read_manifest(self.paths)
            self.batch = self._base.batch + 1
            _delete_unlisted(self.paths, self._base)  # leftovers of a batch that crashed
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is not None:
                _delete_unlisted(self.paths, self._base)
        finally:
            self._lock.release()

    @property
    def base(self) -> Manifest:
        """The committed raw data this batch builds on (read under the lock)."""
        return self._base

    def add_events(self, events: pd.DataFrame | pa.Table) -> int:
        """Write `events` (contract types) as one part per UTC day; returns the rows written."""
        return self.add_encoded(encode_events(events))

    def add_encoded(self, parts: Sequence["EncodedPart"]) -> int:
        """Write the day parts `encode_events` made of one chunk of events (possibly in another
        process: `churn.data.generate`'s workers); returns the rows written.

        The files are written here, in the writer's process, so every file of the batch goes
        through `atomic_write_bytes` and its storage fault points in the process under test."""
        for part in parts:
            rel = f"events/date={part.date}/part-{self.batch:06d}-{self._seq:04d}.parquet"
            atomic_write_bytes(self.paths.raw / rel, part.data)
            self._parts.append(Part(rel, part.date, part.rows, self.batch, part.sha256))
        if parts:
            self._seq += 1
        return sum(p.rows for p in parts)

    def set_users(self, users: pd.DataFrame) -> None:
        """The whole users table as of this batch (ids int64)."""
        rel = f"users/users-{self.batch:06d}.parquet"
        sha = _write_parquet(self.paths.raw / rel, pa.Table.from_pandas(users, preserve_index=False))
        self._users = (rel, len(users), sha)

    @property
    def dates(self) -> tuple[str, ...]:
        """The UTC days this batch adds events to so far (what its Batch will list)."""
        return tuple(sorted({p.date for p in self._parts}))

    def add_report(self, name: str, doc: dict[str, Any]) -> dict[str, str]:
        """Write this batch's report (`reports/<name>-<batch>.json`) before the commit; returns
        the reference (`path`, `sha256`) for the commit's `detail["report"]`.

        Why part of the batch: a report written after the commit was lost by a kill in between
        (a committed batch without its report) or left beside newer data; listed by the
        manifest, it becomes visible with the batch or not at all, and an unlisted one (a
        crashed batch's) is removed by the next writer like its parts."""
        rel = f"{REPORTS}/{name}-{self.batch:06d}.json"
        path = atomic_write_json(self.paths.raw / rel, doc)
        return {"path": rel, "sha256": file_digest(path)}

    def commit(self, detail: dict[str, Any] | None = None) -> Batch:
        """Make the batch visible: one atomic manifest replace, then old files are deleted."""
        base = self._base
        users, users_rows, users_sha = self._users or (base.users, base.users_rows, base.users_sha256)
        parts = tuple(self._parts) if self.replace else base.parts + tuple(self._parts)
        batch = Batch(self.batch, self.kind, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      users_rows if self._users else 0, sum(p.rows for p in self._parts), self.dates, detail or {})
        manifest = Manifest(self.batch, users, users_rows, parts, base.batches + (batch,), users_sha256=users_sha)
        listed = set(_listed(manifest))
        manifest = dataclasses.replace(manifest, kept=tuple(f for f in _listed(base) if f not in listed))
        atomic_write_json(manifest_path(self.paths), manifest.to_dict())
        self._base = manifest
        _delete_unlisted(self.paths, manifest)  # the files kept by the batch before go now
        log.info("raw batch %d (%s): %d events in %d days, users %s", batch.batch, self.kind,
                 batch.events_added, len(batch.dates), users_rows if self._users else "unchanged")
        return batch


def _write_parquet(path: Path, table: pa.Table, **options: Any) -> str:
    """Write `table` as a zstd Parquet file at `path` atomically (`atomic_write_bytes`: temp,
    fsync, rename, fsync of the folder, and the storage fault points of every write); returns
    the sha256 of its bytes, what every reader checks the file against (`verified_bytes`)."""
    data, sha = _encode_parquet(table, **options)
    atomic_write_bytes(path, data)
    return sha


def _encode_parquet(table: pa.Table, **options: Any) -> tuple[pa.Buffer, str]:
    """(bytes, sha256) of `table` as a zstd Parquet file.

    Why through a buffer: the sha256 is of the bytes written, taken from memory, instead of
    reading the file back (0.46 s of generate's 17 s at 100,000 users); a part is one day of
    one shard, the users file a few bytes a user. (Never `io.BytesIO` to pyarrow: an Arrow
    buffer stream, see docs/consistency.md "Exit".)"""
    sink = pa.BufferOutputStream()
    # 65,536 rows a batch (pyarrow's default 1,024): a part in one batch per column, the same
    # pages (a column chunk below the 1 MB page size is one page) for less CPU
    pq.write_table(table, sink, compression="zstd", write_batch_size=65_536, **options)
    data = sink.getvalue()
    return data, hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class EncodedPart:
    """One UTC day of a chunk of events as the bytes of its part file (not yet written)."""

    date: str
    rows: int
    data: pa.Buffer  # picklable: a worker process encodes, the writer's process writes
    sha256: str


def encode_events(events: pd.DataFrame | pa.Table) -> list[EncodedPart]:
    """`events` (contract types) as one encoded part per UTC day, in day order: what
    `BatchWriter.add_events` writes. A pure function of the rows (no path, no batch number),
    so it can run in a worker process and give the same bytes as in the writer's."""
    table = events if isinstance(events, pa.Table) else events_table(events)
    if table.num_rows == 0:
        return []
    table = table.cast(EVENTS_SCHEMA)
    days = _days(table)
    order = day_order(days)  # a radix sort of the day numbers
    sorted_days = days[order]
    table = table.take(pa.array(order))  # once: each day's part is a slice of it
    bounds = np.flatnonzero(sorted_days[1:] != sorted_days[:-1]) + 1
    out = []
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)]):
        data, sha = _encode_parquet(table.slice(int(lo), int(hi - lo)), use_dictionary=_DICT_COLUMNS,
                                    write_statistics=_STATISTICS_COLUMNS)
        out.append(EncodedPart(str(sorted_days[lo]), int(hi - lo), data, sha))
    return out


def _listed(manifest: Manifest) -> list[str]:
    """The files a manifest commits (relative to raw/)."""
    return ([manifest.users] if manifest.users else []) + [p.path for p in manifest.parts]


def batch_report(paths: DataPaths, batch: Batch) -> dict[str, Any] | None:
    """The report a batch committed with (`BatchWriter.add_report`), its bytes checked against
    the digest in the manifest; None for a batch without one (generate, or from before)."""
    ref = batch.detail.get("report")
    if not isinstance(ref, dict) or not ref.get("path"):
        return None
    path = paths.raw / str(ref["path"])
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: the report of raw batch {batch.batch} is missing") from exc
    if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
        raise DataError(f"{path}: changed since raw batch {batch.batch} committed it (raw/manifest.json records "
                        f"sha256 {str(ref.get('sha256'))[:12]})")
    return json.loads(data.decode("utf-8"))


def _reports(manifest: Manifest) -> list[str]:
    """The batch reports a manifest commits (relative to raw/)."""
    return [str(b.detail["report"]["path"]) for b in manifest.batches
            if isinstance(b.detail.get("report"), dict) and b.detail["report"].get("path")]


def _delete_unlisted(paths: DataPaths, manifest: Manifest) -> None:
    """Remove files under raw/users, raw/events and raw/reports that the manifest neither lists
    nor keeps (a crashed batch's files; the state before the previous batch)."""
    keep = {paths.raw / f for f in _listed(manifest) + list(manifest.kept) + _reports(manifest)}
    for sub in ("users", "events", REPORTS):
        root = paths.raw / sub
        if not root.is_dir():
            continue
        for f in list(root.rglob("*")):
            if f.is_file() and f not in keep:
                remove_path(f)  # a fault-injection point: a killed writer removes nothing
        for d in sorted((d for d in root.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                remove_path(d)


def write_batch(paths: DataPaths, kind: str, users: pd.DataFrame | None,
                events: Iterable[pd.DataFrame | pa.Table], replace: bool = False,
                detail: dict[str, Any] | None = None) -> Batch:
    """One batch in one call: users table (None = keep the current one) and event chunks."""
    with BatchWriter(paths, kind, replace=replace) as writer:
        for chunk in events:
            writer.add_events(chunk)
        if users is not None:
            writer.set_users(users)
        return writer.commit(detail)
