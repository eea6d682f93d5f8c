"""`ml_jobs ingest`: a batch of exported users and/or events becomes the data root's raw data.

The order is what makes it safe:

1. read each file (churn.ingest.readers) and convert it to the contract
   (churn.ingest.normalize); bad files are DataErrors naming the file;
2. under the raw store's lock, against what is stored: drop exact repeats (same event_id,
   same content: in the file or already stored), upsert users (a user_id in the batch
   replaces the stored row: the newest attributes win);
3. validate the batch with `validate`'s rules (churn.data.validate), events checked against
   the upserted users;
4. on any violation: write the report, change nothing (IngestResult.ok is False, the CLI
   exits 1); otherwise write one batch (churn.raw.store): new events appended to their
   days, the users table replaced, visible together or not at all.

Ingesting the same files again adds nothing and writes no batch. A batch that leaves days
without any event between the stored data and its own, or holds days older than
`ingest.retention_days` before the newest stored day, is accepted with a warning naming
those days (`calendar_warnings`): both are legitimate (a quiet day, a late correction) but
worth a look.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.config.settings import Settings
from churn.data.validate import Checker, Expectations, ValidationReport, validate_frames
from churn.errors import UsageError
from churn.ingest.normalize import Normalized, normalize, rename
from churn.ingest.readers import read_table
from churn.raw.contract import EVENTS, TABLES, USERS
from churn.raw.store import BatchWriter, Manifest, distinct_values, read_events, read_manifest, read_users
from churn.raw.verdict import is_validated
from churn.storage.files import atomic_write_json
from churn.storage.paths import DataPaths

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """What one ingest did; `batch` is None when it wrote nothing (rejected or nothing new)."""

    ok: bool
    report: ValidationReport
    report_path: str
    batch: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dates: tuple[str, ...] = ()  # the UTC event days this batch added events to
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        c = self.counts
        head = ("REJECTED: nothing changed" if not self.ok else
                f"batch {self.batch} written" if self.batch is not None else "nothing new: nothing changed")
        return (f"ingest {head}; events: {c.get('events_read', 0)} read, {c.get('events_added', 0)} new, "
                f"{c.get('events_already_stored', 0)} already stored, {c.get('events_repeated', 0)} repeated in the file; "
                f"users: {c.get('users_read', 0)} read, {c.get('users_added', 0)} new, {c.get('users_updated', 0)} updated, "
                f"{c.get('users_unchanged', 0)} unchanged\n"
                + "".join(f"WARNING: {w}\n" for w in self.warnings) + self.report.summary())


def report_path(paths: DataPaths) -> Path:
    return paths.raw / "ingest_report.json"


def _load(path: str, table: str, settings: Settings, fmt: str | None, report: ValidationReport) -> Normalized:
    integer_columns = [getattr(settings.ingest.columns, table).get(c.name, c.name)
                       for c in TABLES[table] if c.kind == "integer"]
    raw = read_table(path, fmt, settings.ingest.delimiter, integer_columns)
    raw, problems = rename(raw, getattr(settings.ingest.columns, table), table, path)
    out = normalize(raw, table, path)
    out.violations = problems + out.violations
    report.files[table] = str(path)
    log.info("ingest: read %d %s rows from %s", len(out.frame), table, path)
    return out


def _repeats_in_file(frame: pd.DataFrame, key: str) -> np.ndarray:
    """Rows that repeat an earlier row exactly (same key and same content): safe to drop."""
    ids = frame[key].to_numpy()
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return np.zeros(len(ids), dtype=bool)
    same_key = pd.Series(ids).duplicated(keep=False).to_numpy()
    out = np.zeros(len(ids), dtype=bool)
    if same_key.any():
        sub = frame.loc[same_key, [c for c in frame.columns]]
        out[np.flatnonzero(same_key)] = sub.astype("object").duplicated(keep="first").to_numpy()
    return out


def _without_repeats(part: Normalized | None, key: str, counter: str, counts: dict[str, Any]) -> pd.DataFrame | None:
    """The table of `part` without the rows that repeat an earlier one exactly (counted)."""
    if part is None:
        return None
    frame = part.frame
    if key not in frame.columns or key in part.unusable:
        return frame
    repeats = _repeats_in_file(frame, key)
    counts[counter] = int(repeats.sum())
    return frame.loc[~repeats].reset_index(drop=True)


def _same_rows(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Row-wise equality of two frames aligned by position (missing equals missing)."""
    same = np.ones(len(a), dtype=bool)
    for c in columns:
        x, y = a[c].astype("object").to_numpy(), b[c].astype("object").to_numpy()
        same &= (x == y) | (pd.isna(x) & pd.isna(y))
    return same


def _against_stored_events(events: pd.DataFrame, paths: DataPaths, stored: Manifest,
                           chk: Checker) -> tuple[pd.DataFrame, int]:
    """(events not stored yet, how many were stored already with the same content).

    An event_id that is stored with other content is a violation: an id names one event.
    """
    if not stored.parts or events.empty:
        return events, 0
    # Only the stored ids that the batch also has, filtered while reading (a hash probe in
    # Arrow), instead of every stored id into pandas: 24M ids cost seconds per daily batch.
    batch_ids = events["event_id"].to_numpy()
    stored_ids = read_events(paths, columns=["event_id"], event_ids=np.unique(batch_ids),
                             checked=False)["event_id"].to_numpy()  # a look-up: one column, pruned
    overlap = np.isin(batch_ids, stored_ids)
    if not overlap.any():
        chk.passed("events.event_id.same_content_as_stored")
        return events, 0
    mine = events.loc[overlap].sort_values("event_id", kind="stable")
    theirs = read_events(paths, event_ids=np.unique(mine["event_id"].to_numpy()),
                         checked=False).drop_duplicates("event_id")
    theirs = theirs.set_index("event_id").loc[mine["event_id"].to_numpy()].reset_index()
    same = _same_rows(mine.reset_index(drop=True), theirs, [c.name for c in EVENTS])
    chk.mask("events.event_id.same_content_as_stored", "events", "event_id", mine.reset_index(drop=True), ~same,
             "event ids already stored with different contents", ["event_id", "user_id", "event_time", "event_type"])
    return events.loc[~overlap].reset_index(drop=True), int(same.sum())


def _upsert_users(batch: pd.DataFrame, stored: pd.DataFrame | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Stored users with the batch's rows replacing those of the same user_id (newest wins)."""
    contract = [c.name for c in USERS]
    if stored is None or stored.empty:
        merged = batch[contract]
        return merged.sort_values("user_id", kind="stable").reset_index(drop=True), \
            {"users_added": len(batch), "users_updated": 0, "users_unchanged": 0}
    ids = batch["user_id"].to_numpy()
    in_store = np.isin(ids, stored["user_id"].to_numpy())
    before = stored.set_index("user_id").loc[ids[in_store]].reset_index()
    after = batch.loc[in_store].reset_index(drop=True)
    unchanged = _same_rows(after, before, contract)
    keep = stored.loc[~np.isin(stored["user_id"].to_numpy(), ids)]
    merged = pd.concat([_as_object_categories(keep), _as_object_categories(batch[contract])], ignore_index=True)
    merged = merged.sort_values("user_id", kind="stable").reset_index(drop=True)
    counts = {"users_added": int((~in_store).sum()), "users_updated": int((~unchanged).sum()),
              "users_unchanged": int(unchanged.sum())}
    return merged, counts


def _as_object_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as text, so tables with different category sets concatenate."""
    return frame.astype({c: "object" for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})


def _new_values(report: ValidationReport, paths: DataPaths, stored: Manifest, stored_users: pd.DataFrame | None) -> None:
    """Open-vocabulary values of this batch that the stored data did not have."""
    before: dict[str, set[str]] = {}
    if stored_users is not None:
        for col in ("country", "marketing_source"):
            if col in stored_users.columns:
                before[col] = {str(v) for v in stored_users[col].dropna().unique()}
    if stored.parts and "course_id" in report.vocabularies:
        before["course_id"] = distinct_values(paths, "course_id")
    for col, values in report.vocabularies.items():
        report.new_values[col] = sorted(set(values) - before.get(col, set()))


def _read_inputs(settings: Settings, users_path: str | None, events_path: str | None, fmt: str | None,
                 chk: Checker) -> tuple[Normalized | None, Normalized | None]:
    """Both files read and converted; their parse violations and extra columns go to the report."""
    parts = {}
    for table, path in (("users", users_path), ("events", events_path)):
        part = _load(path, table, settings, fmt, chk.report) if path else None
        if part is not None:
            for v in part.violations:
                chk.add(v)
            chk.report.extra_columns[table] = part.extra_columns
        parts[table] = part
    return parts["users"], parts["events"]


def _day_span(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _named(days: list[dt.date]) -> str:
    return ", ".join(d.isoformat() for d in days)


def calendar_warnings(stored: list[dt.date], added: list[dt.date], retention_days: int) -> list[str]:
    """Warnings for a batch adding events on `added` days to data holding `stored` days.

    - a gap: days between the stored data and the batch (either side) without any event,
      named one by one (an outage of the export, or days that will come later);
    - days older than `retention_days` before the newest stored day.
    """
    if not stored or not added:
        return []
    have, out = set(stored) | set(added), []
    missing = [d for d in _day_span(min(have), max(have)) if d not in have]
    new_missing = [d for d in missing if not min(stored) <= d <= max(stored)]  # older gaps were named before
    if new_missing:
        out.append(f"no events at all on {len(new_missing)} day(s) between the stored data "
                   f"({stored[0]}..{stored[-1]}) and this batch: {_named(new_missing)}")
    cutoff = max(stored) - dt.timedelta(days=retention_days)
    old = [d for d in added if d < cutoff]
    if old:
        out.append(f"{len(old)} day(s) older than the retention (ingest.retention_days = {retention_days}: "
                   f"before {cutoff}): {_named(old)}")
    return out


def _check_and_write(writer: BatchWriter, paths: DataPaths, users: Normalized | None, events: Normalized | None,
                     exp: Expectations, chk: Checker, counts: dict[str, Any]) -> bool:
    """Steps 2-4 of the module doc under the store's lock, up to the commit: True when the
    batch has something to commit (its files are written, not yet visible)."""
    stored = writer.base
    stored_users = read_users(paths) if stored.users else None
    known = stored_users if stored_users is not None else pd.DataFrame({"user_id": np.empty(0, np.int64)})
    user_frame = _without_repeats(users, "user_id", "users_repeated", counts)
    event_frame = _without_repeats(events, "event_id", "events_repeated", counts)
    merged = None
    if (users is not None and user_frame is not None and not users.unusable
            and {c.name for c in USERS if c.required} <= set(user_frame.columns)):
        merged, user_counts = _upsert_users(user_frame, stored_users)
        counts.update(user_counts)
        known = merged
    validate_frames(user_frame, event_frame, exp, known_users=known, report=chk.report,
                    skip={"users": users.unusable if users else set(), "events": events.unusable if events else set()})
    if events is not None and event_frame is not None and not events.unusable \
            and {c.name for c in EVENTS} <= set(event_frame.columns):
        event_frame, counts["events_already_stored"] = _against_stored_events(event_frame, paths, stored, chk)
    _new_values(chk.report, paths, stored, stored_users)
    chk.report.ok = not chk.report.violations
    counts["events_added"] = len(event_frame) if (chk.report.ok and event_frame is not None) else 0
    users_changed = merged is not None and (counts.get("users_added", 0) + counts.get("users_updated", 0)) > 0
    if not chk.report.ok or not (counts["events_added"] or users_changed):
        return False
    if event_frame is not None and len(event_frame):
        writer.add_events(event_frame)
    if users_changed:
        writer.set_users(merged)
    return True


def _commit(writer: BatchWriter, report: ValidationReport, counts: dict[str, Any], warnings: list[str],
            validated_base: bool, t0: float) -> int:
    """Commit the batch with its report and its verdict: the report is written first and named
    (with its sha256) by the manifest, so the raw data, its report and its `validated` flag
    switch together (`churn.raw.verdict`); a stamp or a report written after the commit was
    lost by a kill in between (and the rerun, finding nothing new, never wrote it)."""
    if not validated_base:
        log.warning("ingest: the raw data before this batch had not passed validation; run `ml_jobs validate`")
    report.seconds = round(time.perf_counter() - t0, 3)
    ref = writer.add_report("ingest", _report_doc(True, writer.batch, counts, writer.dates, warnings, report))
    return writer.commit({"files": report.files, "counts": counts, "validated": validated_base, "report": ref}).batch


def _report_doc(ok: bool, batch: int | None, counts: dict[str, Any], dates: tuple[str, ...], warnings: list[str],
                report: ValidationReport) -> dict[str, Any]:
    return {"ok": ok, "batch": batch, "counts": counts, "dates": list(dates), "warnings": warnings,
            "report": report.to_dict()}


def run_ingest(settings: Settings, paths: DataPaths, users_path: str | None = None,
               events_path: str | None = None, fmt: str | None = None,
               expectations: Expectations | None = None) -> IngestResult:
    """Ingest one batch (see the module doc); never half-writes, never raises on bad data.

    Unreadable files are DataErrors naming the file (before anything is locked or written).
    """
    if not users_path and not events_path:
        raise UsageError("ingest needs --users PATH, --events PATH or both")
    t0 = time.perf_counter()
    chk = Checker(ValidationReport())
    users, events = _read_inputs(settings, users_path, events_path, fmt, chk)
    log.info("ingest: files read and converted in %.1fs", time.perf_counter() - t0)
    counts: dict[str, Any] = {"users_read": len(users.frame) if users else 0,
                              "events_read": len(events.frame) if events else 0}
    dates: tuple[str, ...] = ()
    warnings: list[str] = []
    batch = None
    path = report_path(paths)
    with BatchWriter(paths, "ingest") as writer:
        stored_dates = writer.base.dates
        validated_base = not writer.base.batches or is_validated(paths)  # under the lock: the data we build on
        if _check_and_write(writer, paths, users, events, expectations or Expectations.from_settings(settings),
                            chk, counts):
            dates = writer.dates
            warnings = calendar_warnings(stored_dates, [dt.date.fromisoformat(d) for d in dates],
                                         settings.ingest.retention_days)
            batch = _commit(writer, chk.report, counts, warnings, validated_base, t0)
            path = paths.raw / str(read_manifest(paths).batches[-1].detail["report"]["path"])
    report = chk.report
    report.seconds = round(time.perf_counter() - t0, 3)
    result = IngestResult(report.ok, report, str(path), batch, counts, report.seconds, dates, warnings)
    # the last attempt's log (also of a rejected batch or one with nothing new: no state); a
    # committed batch's own report is the one its manifest names (`result.report_path`)
    atomic_write_json(report_path(paths), _report_doc(report.ok, batch, counts, dates, warnings, report))
    for w in warnings:
        log.warning("ingest: %s", w)
    (log.info if report.ok else log.error)("%s (%.1fs)", result.summary(), report.seconds)
    return result


__all__ = ["IngestResult", "calendar_warnings", "run_ingest", "report_path"]
