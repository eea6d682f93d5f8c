"""Has the raw data, exactly as it is committed now, passed validation? One answer, three sources.

Why one place: `prepare`/`update` refuse raw data that has not passed, and `ingest` needs the
answer for the data it builds on; each verdict must change in the same rename as what it
vouches for, or a kill in between leaves a verdict about other data (docs/consistency.md):

1. `raw/validation_report.json` (written by `validate`, one file) carries the `raw_digest`
   it checked: when that is the current digest, its `ok` decides, whatever else says;
2. else the newest batch of the raw manifest, when `ingest` wrote it and recorded
   `validated` (the batch passed the rules against stored data that had passed): the
   manifest is the batch's own commit point, so data and verdict switch together;
3. else `raw/validated.json`, a stamp of that digest, bound to the validation report it
   was written beside (its sha256): a later report makes it void (ingest-inbox writes it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from churn.raw.store import raw_digest, read_manifest, require_raw
from churn.storage.files import DataError, atomic_write_json, read_json
from churn.storage.paths import DataPaths


def stamp_path(paths: DataPaths) -> Path:
    return paths.raw / "validated.json"


def _report_sha(paths: DataPaths) -> str | None:
    try:
        return hashlib.sha256(paths.validation_report.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = read_json(path)
    except DataError:
        return None
    return doc if isinstance(doc, dict) else None


def is_validated(paths: DataPaths) -> bool:
    """The verdict on the committed raw data (False when nothing says it passed)."""
    digest = raw_digest(paths)
    report = _read(paths.validation_report)
    if report is not None and report.get("raw_digest") == digest:
        return bool(report.get("ok"))
    batches = read_manifest(paths).batches
    if batches and batches[-1].kind == "ingest" and batches[-1].detail.get("validated") is True:
        return True
    stamp = _read(stamp_path(paths))
    return (stamp is not None and stamp.get("raw_digest") == digest  # a stamp from before the binding: as then
            and ("report_sha256" not in stamp or stamp["report_sha256"] == _report_sha(paths)))


def stamp_validated(paths: DataPaths) -> Path:
    """Record that the raw data as it is now passed validation (bound to the current report)."""
    return atomic_write_json(stamp_path(paths), {"ok": True, "raw_digest": raw_digest(paths),
                                                 "report_sha256": _report_sha(paths)})


def require_validated(paths: DataPaths) -> None:
    """Raw data must have passed validation, and not have changed since."""
    require_raw(paths)
    if not is_validated(paths):
        raise DataError(f"{paths.raw}: raw data has not passed validation, or changed since it did "
                        "(run `ml_jobs validate`)")
