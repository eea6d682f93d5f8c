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

State (`processed/update_state.json`, written last): the calendar, the newest day covered,
the raw part files seen per day and the settings that shape the outputs.
A crash before it is written leaves day files of a newer state and the old state file: the
next update recomputes the same days again and converges.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.config.settings import Settings
from churn.data.prepare import EVENT_INPUT_COLUMNS, NEVER_ACTIVE, build_user_days, clean_events, clean_users
from churn.features.compute import compute_features, history_days
from churn.labels.build import build_labels
from churn.raw.store import day_files as raw_day_files
from churn.raw.store import read_events, read_users, require_raw
from churn.storage.daytables import day_files, read_days, write_days
from churn.storage.files import atomic_write_json, read_json
from churn.storage.paths import DataPaths
from churn.storage.tables import atomic_write_parquet, read_parquet

log = logging.getLogger(__name__)

_ONE = dt.timedelta(days=1)


def state_path(paths: DataPaths) -> Path:
    return paths.processed / "update_state.json"


def users_snapshot(paths: DataPaths) -> Path:
    """The cleaned users the grid was built from (new and changed users are found against it)."""
    return paths.processed / "users.parquet"


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


def _carry(paths: DataPaths, users: pd.DataFrame, day: dt.date) -> np.ndarray:
    """Per user (aligned with `users`): the last active day on grid day `day` (NEVER_ACTIVE if none)."""
    files = day_files(paths.user_days)
    out = np.full(len(users), NEVER_ACTIVE, dtype=np.int64)
    if day not in files:
        return out
    prev = read_parquet(files[day], columns=["user_id", "last_active_day"])
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


def run_update(settings: Settings, paths: DataPaths) -> UpdateResult:
    """Recompute what new raw days touched; a full rebuild when nothing was built yet."""
    t0 = time.perf_counter()
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
        return UpdateResult("none", why, start.isoformat(), newest.isoformat(), seconds=round(time.perf_counter() - t0, 3))
    mode = "full" if first == start else "incremental"
    log.info("update (%s): %s; recomputing from %s to %s", mode, why, first, newest)
    result = UpdateResult(mode, why, start.isoformat(), newest.isoformat(), first.isoformat(), missing_days=missing)
    _update_grid(paths, users, start, first, newest, result)
    _update_features(settings, paths, start, first, newest, result)
    _update_labels(settings, paths, start, first, newest, result)
    atomic_write_parquet(users, users_snapshot(paths))
    atomic_write_json(state_path(paths), {"start": start.isoformat(), "newest_day": newest.isoformat(),
                                          "shape": _shape(settings), "raw": _signatures(paths, files),
                                          "updated_at": dt.datetime.now(dt.timezone.utc).isoformat()})
    result.seconds = round(time.perf_counter() - t0, 3)
    log.info("update: %d grid, %d feature, %d label days rewritten (%d/%d/%d rows) in %.2fs; newest day %s",
             result.grid_days, result.feature_days, result.label_days, result.grid_rows, result.feature_rows,
             result.label_rows, result.seconds, newest)
    return result


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + _ONE * i for i in range((last - first).days + 1)] if last >= first else []


def _update_grid(paths: DataPaths, users: pd.DataFrame, start: dt.date,
                 first: dt.date, newest: dt.date, result: UpdateResult) -> None:
    events = read_events(paths, columns=EVENT_INPUT_COLUMNS, start=first, end=newest)
    cleaned, _ = clean_events(events, users, first, newest)
    carry = _carry(paths, users, first - _ONE) if first > start else None
    grid = build_user_days(users, cleaned, first, newest, day_offset=(first - start).days, last_active_before=carry)
    days = _days(first, newest)
    write_days(grid, paths.user_days, days=days)
    result.grid_days, result.grid_rows = len(days), len(grid)


def _update_features(settings: Settings, paths: DataPaths, start: dt.date, first: dt.date, newest: dt.date,
                     result: UpdateResult) -> None:
    lookback = max(first - _ONE * (history_days(settings.features.windows_days) - 1), start)
    grid = read_days(paths.user_days, lookback, newest)
    days = _days(first, newest)  # only their rows: the look-back days serve as history
    features = compute_features(grid, settings.features.windows_days, as_of_dates=days, data_start=start)
    write_days(features, paths.features_file, days=days)
    result.feature_days, result.feature_rows = len(days), len(features)


def _update_labels(settings: Settings, paths: DataPaths, start: dt.date, first: dt.date, newest: dt.date,
                   result: UpdateResult) -> None:
    w = settings.churn.window_days
    lo, hi = max(first - _ONE * w, start), newest - _ONE * w
    if hi < lo:
        return
    grid = read_days(paths.user_days, max(lo - _ONE * (w - 1), start), newest,
                     columns=["user_id", "as_of_date", "day_index", "active"])
    labels = build_labels(grid, w)
    labels = labels[labels["as_of_date"].to_numpy().astype("datetime64[D]") >= np.datetime64(lo, "D")]
    days = _days(lo, hi)
    write_days(labels.reset_index(drop=True), paths.labels_file, days=days)
    result.label_days, result.label_rows = len(days), len(labels)
