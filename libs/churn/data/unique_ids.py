"""Unique event ids across the raw part files in bounded memory: hash buckets on disk.

Why: `validate` reads the raw events one part file at a time, but an event id must be unique
across all of them (240M ids at 1,000,000 users). Holding every id (or 48M of them at a time,
re-reading every part's id column once per bucket) was validate's peak: 2.79 GiB at 1M users.
Instead, each part's ids (taken from the part validate has just read) are split by
splitmix64(id) mod K and appended to K Arrow IPC files in a scratch folder; then each bucket
is read and sorted alone. Equal ids always share a bucket, so the duplicates of the K buckets
are exactly the duplicates of all parts. Memory: one bucket, about 1/K of the ids.

The scratch folder is a flock()ed temp folder of `churn.storage.files` (`.tmp-event-ids-*`
under `<root>/shards/validate/`): removed when the check ends, also on a failure (a full
disk), and by the next step's sweep if the process was killed.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa

from churn.sampling.users import splitmix64
from churn.storage import faults
from churn.storage.files import locked_temp, naming_disk_full, remove_path

_SEED = 7  # the bucket hash is not the user-shard hash: ids and user ids are different numbers
_FLUSH_IDS = 1 << 16  # ids buffered per bucket before they are written (512 KB)
_SCHEMA = pa.schema([("event_id", pa.int64())])


@dataclass(frozen=True)
class Duplicates:
    """The ids seen more than once (sorted, unique) and the indexes of the parts holding them."""

    ids: np.ndarray
    parts: list[int]


class IdBuckets:
    """K bucket files of event ids under `parent`; use as a context manager (removes them).

    `add(part, ids)` in any part order; `duplicates()` once all parts are added.
    """

    def __init__(self, parent: Path, buckets: int) -> None:
        self.buckets = max(1, int(buckets))
        self.parent = parent
        self.folder, self._fd = locked_temp(parent, "event-ids", directory=True)
        self._files = [self.folder / f"bucket-{b:04d}.arrow" for b in range(self.buckets)]
        self._writers: list[pa.ipc.RecordBatchStreamWriter | None] = [None] * self.buckets
        self._buffer: list[list[np.ndarray]] = [[] for _ in range(self.buckets)]
        self._buffered = np.zeros(self.buckets, dtype=np.int64)
        self._owners: list[list[tuple[int, int]]] = [[] for _ in range(self.buckets)]  # (part, ids), in order
        self.ids = 0

    def __enter__(self) -> "IdBuckets":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Remove the scratch folder (and `parent` and its parent if nothing else is in them)."""
        for w in self._writers:
            if w is not None:
                with contextlib.suppress(OSError, pa.ArrowException):
                    w.close()
        self._writers = [None] * self.buckets
        if self._fd >= 0:
            try:
                remove_path(self.folder)
            finally:
                os.close(self._fd)
                self._fd = -1
            for folder in (self.parent, self.parent.parent):  # <root>/shards/validate, <root>/shards
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: an update's shards may be there

    def add(self, part: int, ids: np.ndarray) -> None:
        """Append part `part`'s ids (int64, nulls already dropped) to their buckets."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return
        self.ids += len(ids)
        if self.buckets == 1:
            self._append(0, part, ids)
            return
        bucket = (splitmix64(ids, _SEED) % np.uint64(self.buckets)).astype(np.uint16 if self.buckets < 65536 else np.int64)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(self.buckets + 1))
        ids = ids[order]
        for b in np.flatnonzero(bounds[1:] > bounds[:-1]):
            self._append(int(b), part, ids[bounds[b]:bounds[b + 1]])

    def _append(self, b: int, part: int, ids: np.ndarray) -> None:
        self._buffer[b].append(ids)
        self._buffered[b] += len(ids)
        self._owners[b].append((part, len(ids)))
        if self._buffered[b] >= _FLUSH_IDS:
            self._flush(b)

    def _flush(self, b: int) -> None:
        if not self._buffer[b]:
            return
        with naming_disk_full(self._files[b]):
            faults.point("write", self._files[b])
            if self._writers[b] is None:
                self._writers[b] = pa.ipc.new_stream(str(self._files[b]), _SCHEMA)
            ids = np.concatenate(self._buffer[b])
            self._writers[b].write_batch(pa.record_batch([pa.array(ids)], schema=_SCHEMA))
        self._buffer[b] = []
        self._buffered[b] = 0

    def _read(self, b: int) -> np.ndarray:
        """Bucket b's ids in the order they were added (flushed ones, then the buffer)."""
        parts: list[np.ndarray] = []
        writer = self._writers[b]
        if writer is not None:
            writer.close()
            self._writers[b] = None
            with pa.memory_map(str(self._files[b])) as source:
                table = pa.ipc.open_stream(source).read_all()
            parts += [c.to_numpy() for c in table.column("event_id").chunks]
        parts += self._buffer[b]
        self._buffer[b] = []
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def duplicates(self) -> Duplicates:
        """Every id added more than once, and the parts holding them; one bucket in memory at a time."""
        found: list[np.ndarray] = []
        holders: set[int] = set()
        for b in range(self.buckets):
            ids = self._read(b)
            if len(ids) < 2:
                continue
            # stable = timsort for int64: a bucket is runs of increasing ids (each part's ids
            # keep their order, `add`), merged in O(n log runs); quicksort took 3x as long
            ordered = np.sort(ids, kind="stable")
            same = ordered[1:] == ordered[:-1]
            if not same.any():
                continue
            dup = np.unique(ordered[1:][same])
            owner = np.repeat(*map(np.asarray, zip(*self._owners[b])))
            holders |= set(np.unique(owner[np.isin(ids, dup)]).tolist())
            found.append(dup)
        return Duplicates(np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64), sorted(holders))
