"""`ml_jobs update` shard by shard: bounded memory in one process, and the same shards as a
Kubernetes Indexed Job (`ml_jobs update --shard I/N`, then `ml_jobs merge-update N`).

Why shards of users: every row of the grid, the features and the labels depends on one user's
days only, so the users can be split into groups computed apart and concatenated. A shard is
the stable user hash of `churn.sampling.users.shard_of` (the one `batch-score --shard` uses):
splitmix64(user_id) mod N, the same on every run, machine and pod.

Layout of a sharded update (beside the data root's areas, never read by other steps):

    shards/update/of-NNN/shard-III/user_days.parquet/<day>.parquet   this shard's rows
    shards/update/of-NNN/shard-III/features.parquet/<day>.parquet
    shards/update/of-NNN/shard-III/labels.parquet/<day>.parquet
    shards/update/of-NNN/shard-III/shard.json                        written last: the plan it ran

The merge checks that all N shards ran the same plan on the same raw data, concatenates each
recomputed day's shard files sorted by user_id (the order of an unsharded run, so the day files
are equal row for row) into the areas, then writes the update state and removes the shards.
Memory: a shard holds its own users' rows only; the merge one day of every user at a time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from churn.errors import DataError
from churn.sampling.users import shard_of
from churn.storage.daytables import day_files, write_days
from churn.storage.files import atomic_write_json, read_json
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


def table_dir(folder: Path, table: str) -> Path:
    return folder / f"{table}.parquet"


def users_of_shard(users: pd.DataFrame, shard: tuple[int, int] | None) -> pd.DataFrame:
    """The rows of `users` in shard (I, N) (all of them for None), order kept."""
    if shard is None or shard[1] == 1:
        return users
    keep = shard_of(users["user_id"].to_numpy(), shard[1]) == shard[0]
    return users.loc[keep].reset_index(drop=True)


def write_shard(paths: DataPaths, shard: tuple[int, int], plan: Plan,
                tables: dict[str, tuple[pd.DataFrame, Iterable[dt.date]]]) -> Path:
    """A shard's rows of each table (for the plan's days), then its marker (written last)."""
    folder = shard_dir(paths, shard)
    if folder.exists():
        shutil.rmtree(folder)  # a previous attempt of this shard (a retried pod)
    rows = {}
    for name, (frame, days) in tables.items():
        write_days(frame, table_dir(folder, name), days=list(days))
        rows[name] = len(frame)
    atomic_write_json(folder / MARKER, {"shard": list(shard), "plan": plan.to_dict(), "rows": rows,
                                        "written_at": dt.datetime.now(dt.timezone.utc).isoformat()})
    log.info("update shard %d/%d: %s rows -> %s", shard[0], shard[1], rows, folder)
    return folder


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
    """Each plan day of each table: the N shards' files concatenated, sorted by user_id, into
    the area folder (`areas[table]`); returns the rows written per table."""
    days_of = {"user_days": plan.grid_days, "features": plan.feature_days, "labels": plan.label_days}
    rows = {}
    for name in TABLES:
        folders = [table_dir(shard_dir(paths, (i, shards)), name) for i in range(shards)]
        files = [day_files(f) for f in folders]
        total = 0
        for text in days_of[name]:
            day = dt.date.fromisoformat(text)
            parts = [pd.read_parquet(f[day], engine="pyarrow") for f in files if day in f]
            frame = _concat_sorted(parts)
            write_days(frame, areas[name], days=[day])
            total += len(frame)
        rows[name] = total
    return rows


def _concat_sorted(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One day's shard files as the unsharded run writes it: rows by user_id (each shard's rows
    are already in user order, so a stable sort restores the global order)."""
    if not parts:
        return pd.DataFrame({"as_of_date": pd.Series([], dtype="datetime64[us]")})
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    order = np.argsort(frame["user_id"].to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def remove_run(paths: DataPaths, shards: int) -> None:
    """Drop a merged run's shard files (the areas hold the rows now)."""
    shutil.rmtree(run_dir(paths, shards), ignore_errors=True)
    parent = run_dir(paths, shards).parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
