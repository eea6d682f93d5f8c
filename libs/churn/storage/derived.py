"""The derived tables (grid, features, labels, the update's state) published as ONE generation.

Why: `update` replaced the day files of three folders one file at a time and then its state
file, so a kill in between left new feature days beside old grid days and an old state, which
every reader (training-set, batch-score, drift-check) took for one state. Now one update
writes its outputs into a fresh generation of the area `tables` (`churn.storage.generations`)
and one pointer switches them together:

    <root>/tables -> .generations/tables/<id>/
        user_days.parquet/<day>.parquet   features.parquet/<day>.parquet   labels.parquet/<day>.parquet
        users.parquet   update_state.json   MANIFEST (sha256 of every file; the update's inputs)

The days an update did not recompute are carried from the previous generation as hard links
with their MANIFEST entries (never hashed again), so a publish costs the bytes of the days
written and one link per other file, not a copy of the history (many GB at 1,000,000 users).

A root from before (plain `processed/user_days.parquet/`, `features/features.parquet/`,
`labels/labels.parquet/`, `processed/update_state.json`, `processed/users.parquet`) is read as
it is; its first publish links those files into the new generation (hashed once), and the
publish after that removes them (a reader may still be bound to them until then).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from churn.errors import DataError
from churn.storage import generations
from churn.storage.files import dataset_digest, is_temp_name, manifest_files, remove_path
from churn.storage.paths import DAY_FILE, FEATURES, LABELS, TABLES_AREA, USER_DAYS, DataPaths

log = logging.getLogger(__name__)

# the day-partitioned tables of the area: the name a step uses -> its folder in a generation
DAY_TABLES: dict[str, str] = {"user_days": USER_DAYS, "features": FEATURES, "labels": LABELS}


BUILT_FROM = "built_from"  # DataFrame.attrs key of the training set: `tables_inputs` of the tables it was sampled from


def tables_inputs(paths: DataPaths) -> dict[str, Any]:
    """{"tables": generation id or "legacy", "manifest": sha256 of its MANIFEST (the state's
    identity, also of a root copied without its symlinks, where the id is lost), "raw": the raw
    digest those tables were computed from (None if not recorded)} of the tables `paths` reads:
    what an output built from them records, for a reader to compare with the current state
    (`churn.pipeline.freshness`)."""
    at = paths.bound().tables
    if at is None:
        return {"tables": "legacy", "manifest": None, "raw": None}
    try:
        data = (at / generations.MANIFEST_NAME).read_bytes()
        raw = json.loads(data.decode("utf-8")).get("inputs", {}).get("raw")
    except (OSError, ValueError, AttributeError):
        return {"tables": at.name, "manifest": None, "raw": None}
    return {"tables": at.name, "manifest": hashlib.sha256(data).hexdigest(), "raw": raw}


def in_spans(day: dt.date, spans: Sequence[tuple[dt.date, dt.date]] | None) -> bool:
    """Whether `day` is in one of the inclusive (first, last) `spans` (None: every day)."""
    return spans is None or any(lo <= day <= hi for lo, hi in spans)


def features_digest_now(paths: DataPaths, spans: Sequence[tuple[dt.date, dt.date]] | None) -> str | None:
    """What `features.rows.features_digest(paths.features_file, spans)` (the digest predictions
    and drift reports record as their `features` input) gives for the tables current now,
    computed from their MANIFEST entries: the same `files.dataset_digest` of the same names
    and sha256s the writer's checked reads returned, with no file read and no pandas (the API's
    /metrics calls it at scrape time). None when the tables are not a published generation
    (the layout from before generations: nothing recorded to compare with)."""
    at = paths.bound().tables
    if at is None or not (at / generations.MANIFEST_NAME).is_file():
        return None
    entries = manifest_files(at / generations.MANIFEST_NAME)
    single = entries.get(FEATURES)
    if single is not None:  # one features file, not a folder of days
        return str(single["sha256"])
    folder = at / FEATURES
    digests: dict[Path, str] = {}
    for rel, entry in entries.items():
        parent, _, name = rel.partition("/")
        day = DAY_FILE.match(name) if parent == FEATURES else None
        if day and in_spans(dt.date.fromisoformat(day.group(1)), spans):
            digests[folder / name] = str(entry["sha256"])
    return dataset_digest(digests, digests.__getitem__)


def base_id(paths: DataPaths) -> str:
    """Which state a bound DataPaths reads: its generation's id, or "legacy" (the old layout)."""
    at = paths.bound().tables
    return "legacy" if at is None else at.name


def _carried(rewritten: Mapping[str, Iterable[dt.date] | None]) -> Callable[[str], bool]:
    """Which files of the current state the new generation keeps (by relative path): all but
    the day files of the days (None: all days) each rewritten table is authoritative for."""
    dropped: dict[str, set[str] | None] = {}
    for table, days in rewritten.items():
        dropped[DAY_TABLES[table]] = None if days is None else {f"{dt.date.fromisoformat(str(d))}.parquet"
                                                               for d in days}

    def keep(rel: str) -> bool:
        folder, _, name = rel.partition("/")
        if folder not in dropped:
            return True
        days = dropped[folder]
        return days is not None and name not in days

    return keep


@contextlib.contextmanager
def publish_tables(paths: DataPaths, inputs: Mapping[str, Any],
                   rewritten: Mapping[str, Iterable[dt.date] | None]) -> Iterator[DataPaths]:
    """Yield the DataPaths to write the new state through; publish it when the block ends.

    `paths`: the state the step read (bound once; resolved now if not); the publish refuses
    if another one switched the area since (its outputs were computed from the state it
    replaced). `rewritten`: per table ("user_days", "features", "labels") the days this write
    is authoritative for (a day without a file now has no rows), None for the whole table;
    every other file of the state read is carried. `inputs`: the digests of what the step
    read, recorded in the MANIFEST. On an exception nothing is visible.
    """
    read = paths.bound()
    base = read.tables
    keep = _carried(rewritten)

    def unchanged(previous: Path | None) -> None:
        now = None if previous is None else Path(os.path.realpath(previous))
        was = None if base is None else Path(os.path.realpath(base))
        if now != was:
            raise DataError(f"{generations.link_path(paths.root, TABLES_AREA)}: another update published "
                            f"{now.name if now else 'nothing'} while this one worked from "
                            f"{was.name if was else 'the old layout'}: rerun the step")

    full_inputs = {"base": base_id(read), **inputs}
    if "raw" not in full_inputs and base is not None:  # features/labels: from the grid, itself from this raw data
        with contextlib.suppress(DataError):
            raw = generations.read_manifest(base).get("inputs", {}).get("raw")
            if raw:
                full_inputs["raw"] = raw
    with generations.publish(paths.root, TABLES_AREA, full_inputs, carry=keep, check=unchanged) as tmp:
        yield paths.writing_tables(tmp)
        if base is None:
            _link_legacy(read, tmp, keep)
    if base is not None:  # a previous generation exists: nobody can be bound to the old layout now
        _remove_legacy(read)


def _link_legacy(paths: DataPaths, new: Path, keep: Callable[[str], bool]) -> None:
    """The old layout's files the new generation keeps, linked into it (their MANIFEST
    entries are made by hashing them: once, at the migration)."""
    for name, src in paths.legacy_tables().items():
        files = ([f for f in sorted(src.iterdir()) if f.is_file() and not is_temp_name(f.name)]
                 if src.is_dir() else [src] if src.is_file() else [])
        for f in files:
            rel = f"{name}/{f.name}" if src.is_dir() else name
            dst = new / rel
            if dst.exists() or not keep(rel):
                continue
            generations.link_or_copy(f, dst)


def _remove_legacy(paths: DataPaths) -> None:
    """Remove the old layout's tables (migrated by an earlier publish); a failure is a warning."""
    for path in paths.legacy_tables().values():
        if path.exists():
            try:
                remove_path(path)
                log.info("%s: removed (migrated into %s)", path, generations.store_dir(paths.root, TABLES_AREA))
            except OSError as exc:
                log.warning("%s: migrated tables of the old layout not removed (%s); the next publish retries",
                            path, exc)
