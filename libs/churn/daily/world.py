"""A synthetic world that goes on: `ml_jobs generate --next-days N [--shift-from DATE]`.

Why: a deployed system follows new days. The demo, the month simulation and the end-to-end
test must feed the daily cycle the way a real export would, through files in the raw-data
contract dropped into the inbox, not by regenerating a frozen snapshot.

The world starts from the seed world of `churn.data.generate` (the same seed, so the same
users, their engagement and who already churned during the seed period) and continues day by
day with the same behaviour model:

- churn: every user still active churns on a given day with the hazard
  p_churn / (days x (1 - churn_start_fraction)), i.e. the seed period's churn probability
  spread over the days on which the seed period lets churn happen; a churned user is silent
  from that day on;
- sign-ups: Poisson(signup_rate x n_users) new users per day, drawn like the seed users;
- activity and events: `chunk_events` with a one-day calendar, so sessions, videos, quizzes,
  payments (first days of a month) and tickets follow the same rules;
- shift (`--shift-from DATE`): from DATE on, engagement, activity and watch time drop by the
  `generator.shift` multipliers (drift) and users of `shift.churn_source` churn
  `shift.churn_multiplier` times as often (a relation a model trained before never saw).

Determinism: day d (days since the seed start) draws from `default_rng([seed, 2, d])` and its
events from `default_rng([seed, 1, 1_000_000 + d])`, so the world does not depend on how the
days are batched: 3 x `--next-days 1` equals one `--next-days 3`.

State (`world/` under the data root): the users with their hidden engagement and churn state,
and `state.json` (next day, next user id, next event id, shift date). The inbox batch is
published before the state moves on, so a crash in between only regenerates the same batch.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from churn.config.settings import GeneratorSettings
from churn.data.generate import HIDDEN_USER_COLUMNS, Population, chunk_events, churn_probability
from churn.errors import UsageError
from churn.raw.contract import PLANS
from churn.raw.store import max_value, require_raw
from churn.storage.files import atomic_write_json, locked_temp, read_json, remove_path
from churn.storage.paths import DataPaths
from churn.storage.tables import atomic_write_parquet, read_parquet

log = logging.getLogger(__name__)

_EVENT_STREAM = 1_000_000  # event stream of day d: [seed, 1, _EVENT_STREAM + d] (seed chunks are < this)
USERS_FILE, EVENTS_FILE = "users.parquet", "events.parquet"


@dataclass(frozen=True)
class WorldState:
    """Where the world stands: the first day not generated yet and the next free ids."""

    next_day: dt.date
    next_user_id: int
    next_event_id: int
    shift_from: dt.date | None = None

    def to_dict(self) -> dict[str, object]:
        return {"next_day": self.next_day.isoformat(), "next_user_id": self.next_user_id,
                "next_event_id": self.next_event_id,
                "shift_from": self.shift_from.isoformat() if self.shift_from else None}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "WorldState":
        shift = d.get("shift_from")
        return cls(dt.date.fromisoformat(str(d["next_day"])), int(d["next_user_id"]),  # type: ignore[arg-type]
                   int(d["next_event_id"]), dt.date.fromisoformat(str(shift)) if shift else None)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BatchResult:
    """One inbox batch written by `next_days`."""

    folder: str
    first_day: dt.date
    last_day: dt.date
    users: int
    new_users: int
    events: int
    churned: int
    seconds: float


def _state_path(paths: DataPaths) -> Path:
    return paths.world / "state.json"


def _users_path(paths: DataPaths) -> Path:
    return paths.world / USERS_FILE


def _max_event_id(paths: DataPaths) -> int:
    """The largest event_id already in raw/ (errors name both ways to bring raw data in)."""
    require_raw(paths)
    return max_value(paths, "event_id") or 0


def _bootstrap(cfg: GeneratorSettings, paths: DataPaths) -> tuple[WorldState, pd.DataFrame]:
    """The world at the end of the seed period, from the seed world's own draws."""
    from churn.data.generate import draw_population

    pop = draw_population(cfg)
    users = pop.users.copy()
    users["churned"] = pop.last_day < cfg.days - 1
    users["p_churn"] = churn_probability(cfg, users["engagement_score"].to_numpy(), users["is_paid"].to_numpy() > 0)
    start = dt.date.fromisoformat(cfg.start_date)
    state = WorldState(start + dt.timedelta(days=cfg.days), int(users["user_id"].max()) + 1, _max_event_id(paths) + 1)
    return state, users


def load_world(cfg: GeneratorSettings, paths: DataPaths) -> tuple[WorldState, pd.DataFrame]:
    """The saved world, or the seed world's end when `generate --next-days` runs for the first time."""
    if _state_path(paths).is_file():
        return WorldState.from_dict(read_json(_state_path(paths))), read_parquet(_users_path(paths))
    return _bootstrap(cfg, paths)


def _hazard(cfg: GeneratorSettings, users: pd.DataFrame, shifted: bool) -> np.ndarray:
    per_day = users["p_churn"].to_numpy() / (cfg.days * max(1.0 - cfg.churn_start_fraction, 1e-9))
    if shifted:
        source = users["marketing_source"].astype(str).to_numpy()
        per_day = per_day * np.where(source == cfg.shift.churn_source, cfg.shift.churn_multiplier, 1.0)
    return np.minimum(per_day, 1.0)


def _sign_ups(cfg: GeneratorSettings, rng: np.random.Generator, day: dt.date, first_id: int) -> pd.DataFrame:
    """New users of one day, drawn like the seed users (plan, country, source, engagement)."""
    n = int(rng.poisson(cfg.signup_rate * cfg.n_users))
    is_paid = rng.random(n) < cfg.paid_share
    country = rng.integers(0, len(cfg.countries), size=n)
    source = rng.integers(0, len(cfg.marketing_sources), size=n)
    engagement = rng.beta(cfg.engagement_alpha, cfg.engagement_beta, size=n)
    users = pd.DataFrame({
        "user_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "signup_date": np.full(n, np.datetime64(day, "us")),
        "plan": pd.Categorical.from_codes(is_paid.astype(np.int8), categories=list(PLANS)),
        "is_paid": is_paid.astype(np.int8),
        "country": pd.Categorical.from_codes(country.astype(np.int8), categories=list(cfg.countries)),
        "marketing_source": pd.Categorical.from_codes(source.astype(np.int8), categories=list(cfg.marketing_sources)),
        "engagement_score": engagement.astype(np.float64),
        "churned": np.zeros(n, dtype=bool),
    })
    users["p_churn"] = churn_probability(cfg, engagement, is_paid)
    return users


def _concat_users(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Row-append keeping the categorical columns categorical (same categories on both sides)."""
    if not len(b):
        return a
    out = pd.concat([a, b], ignore_index=True)
    for c in ("plan", "country", "marketing_source"):
        out[c] = pd.Categorical(out[c].astype(str), categories=list(a[c].cat.categories))
    return out


def _day_events(cfg: GeneratorSettings, users: pd.DataFrame, day: dt.date, day_no: int, shifted: bool) -> pd.DataFrame:
    """Events of one day for the users who are signed up and not churned (no event_id yet)."""
    alive = users[~users["churned"].to_numpy() & (users["signup_date"].to_numpy() <= np.datetime64(day, "us"))]
    alive = alive.reset_index(drop=True)
    one_day = replace(cfg, days=1, start_date=day.isoformat(),
                      shift=replace(cfg.shift, enabled=shifted, last_days=1))
    pop = Population(alive, np.zeros(len(alive), np.int32), np.zeros(len(alive), np.int32))
    events = chunk_events(one_day, pop, 0, len(alive), _EVENT_STREAM + day_no)
    events["user_id"] = alive["user_id"].to_numpy()[events["user_id"].to_numpy() - 1]
    return events


def advance(cfg: GeneratorSettings, state: WorldState, users: pd.DataFrame, days: int,
            shift_from: dt.date | None = None) -> tuple[WorldState, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """`days` more days of the world: (new state, users, the days' events, counts). Pure: writes nothing."""
    shift_from = shift_from or state.shift_from
    start = dt.date.fromisoformat(cfg.start_date)
    parts: list[pd.DataFrame] = []
    next_user, next_event = state.next_user_id, state.next_event_id
    counts = {"new_users": 0, "churned": 0}
    for i in range(days):
        day = state.next_day + dt.timedelta(days=i)
        day_no = (day - start).days
        shifted = shift_from is not None and day >= shift_from
        rng = np.random.default_rng([cfg.seed, 2, day_no])
        alive = ~users["churned"].to_numpy()
        leaving = alive & (rng.random(len(users)) < _hazard(cfg, users, shifted))
        users["churned"] = users["churned"].to_numpy() | leaving
        new = _sign_ups(cfg, rng, day, next_user)
        users = _concat_users(users, new)
        next_user += len(new)
        events = _day_events(cfg, users, day, day_no, shifted)
        events.insert(0, "event_id", np.arange(next_event, next_event + len(events), dtype=np.int64))
        next_event += len(events)
        parts.append(events)
        counts["new_users"] += len(new)
        counts["churned"] += int(leaving.sum())
    events = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    new_state = WorldState(state.next_day + dt.timedelta(days=days), next_user, next_event, shift_from)
    return new_state, users, events, counts


def raw_users(users: pd.DataFrame) -> pd.DataFrame:
    """The users table as an export would hold it: no hidden columns, no world state."""
    return users.drop(columns=[*HIDDEN_USER_COLUMNS, "churned", "p_churn"], errors="ignore")


def publish_batch(folder: Path, users: pd.DataFrame, events: pd.DataFrame) -> None:
    """Write the batch into a locked temp folder, then rename it into the inbox (all or nothing).

    The temp folder is `.tmp-*` (skipped by the inbox, removed by `files.sweep_dead_temps`
    once its writer is dead), as every temp file in the data root.
    """
    tmp, fd = locked_temp(folder.parent, folder.name, directory=True)
    try:
        atomic_write_parquet(raw_users(users), tmp / USERS_FILE)
        atomic_write_parquet(events, tmp / EVENTS_FILE)
        if folder.exists():  # the same batch again after a crash before the state was saved
            remove_path(folder)
        os.rename(tmp, folder)
    except BaseException:
        remove_path(tmp)
        raise
    finally:
        os.close(fd)


def next_days(cfg: GeneratorSettings, paths: DataPaths, days: int, shift_from: dt.date | None = None) -> BatchResult:
    """Continue the world by `days` days and drop them into the inbox as one batch folder."""
    if days <= 0:
        raise UsageError(f"--next-days: expected a positive number of days, got {days}")
    t0 = time.perf_counter()
    state, users = load_world(cfg, paths)
    new_state, users, events, counts = advance(cfg, state, users, days, shift_from)
    first, last = state.next_day, new_state.next_day - dt.timedelta(days=1)
    folder = paths.inbox / (first.isoformat() if days == 1 else f"{first.isoformat()}_{last.isoformat()}")
    publish_batch(folder, users, events)
    atomic_write_parquet(users, _users_path(paths))
    atomic_write_json(_state_path(paths), new_state.to_dict())
    result = BatchResult(str(folder), first, last, len(users), counts["new_users"], len(events), counts["churned"],
                         round(time.perf_counter() - t0, 3))
    log.info("generate --next-days %d: %s..%s, %d events, %d new users, %d churned (shift from %s) -> %s",
             days, first, last, result.events, result.new_users, result.churned, new_state.shift_from, folder)
    return result
