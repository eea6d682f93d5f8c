"""The inbox: batch folders (users and/or events in the raw contract) waiting for the daily cycle.

Why a folder per batch: an export, a sync job or `generate --next-days` drops a complete
folder (published by a rename, so a half-copied batch is never seen: writers copy into a
name starting with "." and rename it). The cycle ingests the folders in name order; an
ingested batch moves to `inbox/done/`, a rejected one to `inbox/rejected/` with its
ingest report, so one bad export is set aside and visible.

Why no merge code here: each folder goes through `churn.ingest.run_ingest`, the code of
`ml_jobs ingest`, so a real export and the simulator take the same path (the same formats,
column mapping, idempotent merge by event_id, user upsert, validation, calendar warnings,
and the one raw writer). A folder holds `users.<ext>` and/or `events.<ext>` in any format
`ml_jobs ingest` reads (`.parquet`, `.csv`, `.csv.gz`, `.jsonl` ...).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from churn.config.settings import Settings
from churn.errors import DataError
from churn.ingest.ingest import IngestResult, report_path, run_ingest
from churn.ingest.readers import detect_format
from churn.storage import faults
from churn.storage.files import atomic_write_json, mkdirs, naming_disk_full, remove_path
from churn.storage.paths import DataPaths

log = logging.getLogger(__name__)

DONE, REJECTED = "done", "rejected"
TABLES = ("users", "events")


@dataclass
class BatchOutcome:
    """One inbox folder: ingested (with the days it added events to) or rejected (with the report)."""

    name: str
    ok: bool
    days: list[str] = field(default_factory=list)
    new_events: int = 0
    duplicate_events: int = 0
    users: int = 0
    warnings: list[str] = field(default_factory=list)
    report: str = ""


def pending(paths: DataPaths) -> list[Path]:
    """Batch folders waiting in the inbox, in name order (hidden temp folders are skipped)."""
    if not paths.inbox.is_dir():
        return []
    return sorted(p for p in paths.inbox.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in (DONE, REJECTED))


def batch_files(folder: Path) -> dict[str, Path]:
    """{table: file} of a batch folder: `users.*` / `events.*`; an error names what is wrong."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        table = p.name.split(".", 1)[0]
        if table not in TABLES or not p.is_file():
            continue
        detect_format(p)  # a DataError naming the file when its extension is not a known format
        if table in found:
            raise DataError(f"{folder}: two {table} files ({found[table].name}, {p.name}); keep one")
        found[table] = p
    if not found:
        raise DataError(f"{folder}: no users.* or events.* file in the batch folder")
    return found


def _outcome(name: str, res: IngestResult) -> BatchOutcome:
    c = res.counts
    return BatchOutcome(name, res.ok, list(res.dates), c.get("events_added", 0),
                        c.get("events_already_stored", 0) + c.get("events_repeated", 0),
                        c.get("users_added", 0) + c.get("users_updated", 0), list(res.warnings),
                        "" if res.ok else res.report.summary())


def _move(folder: Path, to: Path) -> None:
    """Move a batch folder out of the waiting ones by one rename (a storage point, as every
    mutating operation: the fault suite injects there)."""
    mkdirs(to.parent)
    if to.exists():  # the same batch name again (re-delivered): the newest copy is kept
        remove_path(to)
    with naming_disk_full(to):
        faults.point("rename", to)
        os.rename(folder, to)


def ingest_inbox(settings: Settings, paths: DataPaths) -> list[BatchOutcome]:
    """Ingest every pending batch in name order; stops at the first rejected one (moved aside).

    Why stop: the days after a rejected batch would be ingested with a hole before them; the
    operator fixes or removes the batch and the next cycle carries on.
    """
    outcomes = []
    for folder in pending(paths):
        files = batch_files(folder)
        res = run_ingest(settings, paths, str(files["users"]) if "users" in files else None,
                         str(files["events"]) if "events" in files else None)
        outcome = _outcome(folder.name, res)
        if not outcome.ok:
            mkdirs(paths.inbox / REJECTED)
            atomic_write_json(paths.inbox / REJECTED / f"{folder.name}.report.json",
                              {"batch": folder.name, "ingest_report": str(report_path(paths)),
                               "summary": outcome.report})
        _move(folder, paths.inbox / (DONE if outcome.ok else REJECTED) / folder.name)
        outcomes.append(outcome)
        log.info("inbox %s: %s", folder.name, "ingested" if outcome.ok else "REJECTED")
        if not outcome.ok:
            break
    return outcomes
