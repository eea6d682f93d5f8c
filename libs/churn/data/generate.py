"""Seeded, vectorised synthetic users and events (docs/domain.md#data, every knob in config).

Why vectorised: the reference looped in Python over every user-day and session; here each
stream of users is drawn as arrays (user x day activity matrix, then sessions, then events),
so 100k users x 120 days (about 24M events) takes seconds.

Why in shards: the events of 1,000,000 users x 120 days (240M) do not fit in a pod; they are
drawn and written a shard of about `sharding.shard_users` users at a time (whole streams of
`STREAM_USERS`), so peak memory follows the shard size, as in every heavy step (#16).

Determinism: users and churn are drawn from `default_rng(seed)`; the events of users
[k * STREAM_USERS, (k + 1) * STREAM_USERS) from `default_rng([seed, 1, k])`. So the events do
not depend on the shard size (`//libs/churn/data:generate_test`: sharded == in one piece),
and a world of at most STREAM_USERS users draws exactly as before shards existed.

`engagement_score` is written to the raw users table because it drives behaviour (and lets tests
check the generator), but it is hidden: `churn.data.prepare` drops it, so it can never
become a feature (it was one in the reference: a leak).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np
import pandas as pd
from churn.config.settings import GeneratorSettings
from churn.raw.contract import EVENT_TYPES, PLANS
from churn.parallel.pool import context, ordered_map
from churn.raw.store import BatchWriter, EncodedPart, encode_events
from churn.storage.paths import DataPaths

log = logging.getLogger(__name__)

HIDDEN_USER_COLUMNS: tuple[str, ...] = ("engagement_score",)

_LOGIN, _ENROLL, _VIDEO, _QUIZ, _PAY_OK, _PAY_FAIL, _TICKET = range(7)  # positions in EVENT_TYPES
_DAY_S = 86_400
# Users per random stream: the unit of the event draws, so the data do not depend on the shard
# size; small enough that a shard holds several (a shard is a whole number of streams).
STREAM_USERS = 5_000


@dataclass(frozen=True)
class GenerateResult:
    """What `write_raw` produced (the CLI prints it; tests assert on it)."""

    users: int
    events: int
    user_days: int
    seconds: float
    users_path: str
    events_path: str


@dataclass(frozen=True)
class Population:
    """Per-user draws that events need but that are not user attributes."""

    users: pd.DataFrame
    first_day: np.ndarray  # first day index (0 = data start) the user can be active
    last_day: np.ndarray  # last active day index (churners stop after it)


def start_date(cfg: GeneratorSettings) -> dt.date:
    return dt.date.fromisoformat(cfg.start_date)


def churn_probability(cfg: GeneratorSettings, engagement: np.ndarray, is_paid: np.ndarray) -> np.ndarray:
    """Each user's probability of churning during the seed period (DOMAIN.md's churn process)."""
    base = cfg.churn_base * np.where(is_paid, cfg.paid_churn_multiplier, 1.0)
    return np.minimum(cfg.churn_max, base * (cfg.churn_offset + cfg.churn_scale * (1.0 - engagement) ** cfg.churn_power))


def draw_population(cfg: GeneratorSettings) -> Population:
    """Users, signup days and churn days from `default_rng(seed)` (reference order of draws).

    Public because a continued world (`churn.daily.world`) starts from these users and days."""
    rng = np.random.default_rng(cfg.seed)
    n, days = cfg.n_users, cfg.days
    start = np.datetime64(cfg.start_date, "D")
    before = rng.integers(0, cfg.signup_spread_days, size=n)
    is_paid = rng.random(n) < cfg.paid_share
    country = rng.integers(0, len(cfg.countries), size=n)
    source = rng.integers(0, len(cfg.marketing_sources), size=n)
    engagement = rng.beta(cfg.engagement_alpha, cfg.engagement_beta, size=n)

    late = rng.random(n) < cfg.late_signup_share
    late_day = rng.integers(0, days, size=n)
    first_day = np.where(late, late_day, 0).astype(np.int32)
    signup = np.where(late, start + late_day, start - before).astype("datetime64[s]")

    p_churn = churn_probability(cfg, engagement, is_paid)
    churns = rng.random(n) < p_churn
    span = days - first_day
    low = (span * cfg.churn_start_fraction).astype(np.int64)
    offset = low + np.floor(rng.random(n) * np.maximum(span - low, 1)).astype(np.int64)
    last_day = np.where(churns, np.minimum(first_day + offset, days - 1), days - 1).astype(np.int32)

    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1, dtype=np.int64),
            "signup_date": signup.astype("datetime64[us]"),
            "plan": pd.Categorical.from_codes(is_paid.astype(np.int8), categories=list(PLANS)),
            "is_paid": is_paid.astype(np.int8),
            "country": pd.Categorical.from_codes(country.astype(np.int8), categories=list(cfg.countries)),
            "marketing_source": pd.Categorical.from_codes(source.astype(np.int8), categories=list(cfg.marketing_sources)),
            "engagement_score": engagement.astype(np.float64),
        }
    )
    return Population(users, first_day, last_day)


def generate_users(cfg: GeneratorSettings) -> pd.DataFrame:
    """The users table (with the hidden engagement_score)."""
    return draw_population(cfg).users


def _shift_arrays(cfg: GeneratorSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-day multipliers (engagement, activity, watch); all ones unless the shift is on."""
    eng = np.ones(cfg.days)
    act = np.ones(cfg.days)
    watch = np.ones(cfg.days)
    if cfg.shift.enabled:
        tail = slice(max(cfg.days - cfg.shift.last_days, 0), cfg.days)
        eng[tail] = cfg.shift.engagement_multiplier
        act[tail] = cfg.shift.active_multiplier
        watch[tail] = cfg.shift.watch_multiplier
    return eng, act, watch


def chunk_events(cfg: GeneratorSettings, pop: Population, lo: int, hi: int, chunk_no: int) -> pd.DataFrame:
    """Events of users [lo, hi) as a DataFrame sorted by (user_id, event_time); no event_id yet.

    The user_id of an event is its user's position in the users table + 1; the random stream
    is `default_rng([seed, 1, chunk_no])` (a continued world passes one chunk number per day)."""
    parts, rng = _draw_parts(cfg, pop, lo, hi, chunk_no)
    return _assemble(cfg, lo, parts, rng)


def _draw_parts(cfg: GeneratorSettings, pop: Population, lo: int, hi: int, chunk_no: int) -> tuple[list, np.random.Generator]:
    """The event parts of `pop`'s rows [lo, hi) (before their times and order) and the stream
    to draw the rest from; how many events there are is known here."""
    rng = np.random.default_rng([cfg.seed, 1, chunk_no])
    days = cfg.days
    e = pop.users["engagement_score"].to_numpy()[lo:hi]
    paid = pop.users["is_paid"].to_numpy()[lo:hi].astype(bool)
    eng_mult, act_mult, watch_mult = _shift_arrays(cfg)

    # user x day activity
    e_ud = e[:, None] * eng_mult[None, :]
    p_active = (cfg.active_base + cfg.active_engagement * e_ud) * act_mult[None, :]
    day_idx = np.arange(days, dtype=np.int32)
    alive = (day_idx[None, :] >= pop.first_day[lo:hi, None]) & (day_idx[None, :] <= pop.last_day[lo:hi, None])
    active = (rng.random(e_ud.shape) < p_active) & alive
    au, ad = np.nonzero(active)  # row-major: sorted by (user, day)
    au = au.astype(np.int32)
    ad = ad.astype(np.int32)
    e_ad = e_ud[au, ad]

    # sessions
    n_sess = rng.integers(cfg.sessions_min, cfg.sessions_max + 1, size=au.size)
    su = np.repeat(au, n_sess)
    sd = np.repeat(ad, n_sess)
    se = np.repeat(e_ad, n_sess)
    course = rng.integers(0, len(cfg.courses), size=su.size).astype(np.int8)
    video = rng.random(su.size) < cfg.video_base + cfg.video_engagement * se
    quiz = rng.random(su.size) < cfg.quiz_base + cfg.quiz_engagement * se
    enroll = rng.random(su.size) < cfg.enroll_p

    v_mean = (cfg.watch_mean_base + cfg.watch_mean_engagement * se[video]) * watch_mult[sd[video]]
    watch = np.clip(rng.normal(v_mean, cfg.watch_sd), cfg.watch_min, cfg.watch_max)
    q_mean = cfg.quiz_mean_base + cfg.quiz_mean_engagement * se[quiz]
    score = np.clip(rng.normal(q_mean, cfg.quiz_sd), 0.0, 100.0)

    # per active day: payments (paid users, first days of a calendar month) and tickets
    dom = (np.datetime64(cfg.start_date, "D") + np.arange(days)).astype(object)
    pay_day = np.array([d.day <= cfg.payment_days_of_month for d in dom])
    pay = paid[au] & pay_day[ad]
    pay_ok = rng.random(int(pay.sum())) < cfg.payment_success_p
    amount = np.clip(rng.normal(cfg.amount_mean, cfg.amount_sd, size=pay_ok.size), cfg.amount_min, cfg.amount_max)
    ticket = rng.random(au.size) < cfg.ticket_p

    parts = [
        # (user, day, type, course, watch, score, amount)
        (su, sd, np.full(su.size, _LOGIN, np.int8), np.full(su.size, -1, np.int8), None, None, None),
        (su[video], sd[video], np.full(int(video.sum()), _VIDEO, np.int8), course[video], watch, None, None),
        (su[quiz], sd[quiz], np.full(int(quiz.sum()), _QUIZ, np.int8), course[quiz], None, score, None),
        (su[enroll], sd[enroll], np.full(int(enroll.sum()), _ENROLL, np.int8), course[enroll], None, None, None),
        (au[pay], ad[pay], np.where(pay_ok, _PAY_OK, _PAY_FAIL).astype(np.int8), np.full(pay_ok.size, -1, np.int8),
         None, None, amount),
        (au[ticket], ad[ticket], np.full(int(ticket.sum()), _TICKET, np.int8), np.full(int(ticket.sum()), -1, np.int8),
         None, None, None),
    ]
    return parts, rng


def _column(parts: list, i: int, fill: float) -> np.ndarray:
    return np.concatenate([p[i] if p[i] is not None else np.full(p[0].size, fill) for p in parts]).astype(np.float32)


def _assemble(cfg: GeneratorSettings, lo: int, parts: list, rng: np.random.Generator) -> pd.DataFrame:
    """Concatenate event parts, draw times within the day, sort by (user, time)."""
    user = np.concatenate([p[0] for p in parts])
    day = np.concatenate([p[1] for p in parts]).astype(np.int64)
    secs = day * _DAY_S + rng.integers(0, _DAY_S, size=user.size)
    order = np.argsort(user.astype(np.int64) * (cfg.days * _DAY_S) + secs, kind="stable")
    etype = np.concatenate([p[2] for p in parts])[order]
    course = np.concatenate([p[3] for p in parts])[order]
    start_s = np.datetime64(cfg.start_date, "s")
    return pd.DataFrame(
        {
            "user_id": (user[order] + lo + 1).astype(np.int64),
            "event_time": (start_s + secs[order].astype("timedelta64[s]")).astype("datetime64[us]"),
            "event_type": pd.Categorical.from_codes(etype, categories=list(EVENT_TYPES)),
            "course_id": pd.Categorical.from_codes(course, categories=list(cfg.courses)),
            "watch_minutes": _column(parts, 4, 0.0)[order],
            "quiz_score": _column(parts, 5, np.nan)[order],
            "amount": _column(parts, 6, np.nan)[order],
        },
        copy=False,  # fresh arrays: no stacking of the same-typed columns into one block (a copy)
    )


def _shard_bounds(n_users: int, shard_users: int) -> list[tuple[int, int]]:
    """[lo, hi) of each shard: the whole streams of about `shard_users` users (at least one)."""
    per = max(1, shard_users // STREAM_USERS) * STREAM_USERS
    return [(lo, min(lo + per, n_users)) for lo in range(0, n_users, per)]


def _shard_frame(cfg: GeneratorSettings, pop: Population, lo: int, hi: int) -> pd.DataFrame:
    """The events of users [lo, hi), stream by stream, without event ids (see `chunk_events`)."""
    streams = [chunk_events(cfg, pop, s, min(s + STREAM_USERS, hi), s // STREAM_USERS)
               for s in range(lo, hi, STREAM_USERS)]
    return pd.concat(streams, ignore_index=True) if len(streams) > 1 else streams[0]


def iter_event_chunks(cfg: GeneratorSettings, pop: Population | None = None,
                      shard_users: int = STREAM_USERS) -> Iterator[pd.DataFrame]:
    """Events a shard at a time, with global event ids 1..N (in user order).

    A shard is the whole streams of about `shard_users` users (at least one stream); the
    events are the same whatever the shard size, only the memory held at once changes."""
    pop = pop or draw_population(cfg)
    next_id = 1
    for lo, hi in _shard_bounds(cfg.n_users, shard_users):
        ev = _shard_frame(cfg, pop, lo, hi)
        ev.insert(0, "event_id", np.arange(next_id, next_id + len(ev), dtype=np.int64))
        next_id += len(ev)
        log.debug("generated users %d..%d: %d events", lo + 1, hi, len(ev))
        yield ev
        del ev  # before the next shard is drawn: one shard in memory at a time


@dataclass(frozen=True)
class _Shard:
    """What a worker needs to draw one shard: the settings and only its users' rows."""

    cfg: GeneratorSettings
    pop: Population  # users lo+1..hi (row 0 is user lo+1): what the event draws read
    lo: int
    hi: int
    index: int  # the shard's place in `_shard_bounds`: where its first event id is handed on


def _shards(cfg: GeneratorSettings, pop: Population, shard_users: int) -> list[_Shard]:
    cols = ["engagement_score", "is_paid"]
    return [_Shard(cfg, Population(pop.users[cols].iloc[lo:hi].reset_index(drop=True),
                                   pop.first_day[lo:hi].copy(), pop.last_day[lo:hi].copy()), lo, hi, k)
            for k, (lo, hi) in enumerate(_shard_bounds(cfg.n_users, shard_users))]


# a worker's view of the shards' first event ids (`_share_firsts`): firsts[k] is shard k's
# (0 = not known yet, -1 = an earlier shard failed), guarded by the condition
_FIRSTS: tuple[Any, Any] | None = None


def _share_firsts(firsts: Any, changed: Any) -> None:
    global _FIRSTS
    _FIRSTS = (firsts, changed)


def _hand_on(k: int, count: int | None) -> int:
    """Shard k's first event id, once shard k - 1 has handed it on, after handing on shard
    k + 1's (that id + `count`; the failure mark when `count` is None: shard k failed)."""
    assert _FIRSTS is not None, "_share_firsts not called in this process"
    firsts, changed = _FIRSTS
    with changed:
        if count is None:
            firsts[k + 1] = -1
            changed.notify_all()
            return -1
        while firsts[k] == 0:
            changed.wait()
        first = int(firsts[k])
        firsts[k + 1] = -1 if first < 0 else first + count
        changed.notify_all()
    if first < 0:
        raise RuntimeError(f"generate: a shard before shard {k} failed")
    return first


def _encode_shard(shard: _Shard) -> list[EncodedPart]:
    """The shard's events with their global ids, encoded as its day parts (a worker's piece).

    The draws give the shard's count of events, which is handed on as the next shard's first
    id before this one waits for its own (the previous shard's draws), then times, order and
    encoding: each event drawn once, in whichever process."""
    try:
        drawn = [(s, *_draw_parts(shard.cfg, shard.pop, s - shard.lo, min(s + STREAM_USERS, shard.hi) - shard.lo,
                                  s // STREAM_USERS))
                 for s in range(shard.lo, shard.hi, STREAM_USERS)]
    except BaseException:
        _hand_on(shard.index, None)  # the later shards stop waiting (the caller raises this one first)
        raise
    first = _hand_on(shard.index, sum(p[0].size for _, parts, _ in drawn for p in parts))
    streams = []
    while drawn:
        s, parts, rng = drawn.pop(0)  # each stream's parts freed once assembled
        streams.append(_assemble(shard.cfg, s, parts, rng))
    ev = pd.concat(streams, ignore_index=True) if len(streams) > 1 else streams[0]
    del streams
    ev.insert(0, "event_id", np.arange(first, first + len(ev), dtype=np.int64))
    return encode_events(ev)


def _encoded_in_workers(cfg: GeneratorSettings, pop: Population, shard_users: int,
                        workers: int) -> Iterator[list[EncodedPart]]:
    """The shards' encoded day parts, in shard order, computed by `workers` processes.

    A shard's first event id is 1 + the events of the shards before it: each worker hands it
    on to the next shard as soon as its draws are done (`_hand_on`, through an array shared by
    the workers), so every event is drawn once, in the workers. Before (session 12) this
    process counted every shard by drawing it first (`_count_shard`), while the workers
    waited: 20 s of 1,000,000 users' generate, a seventh of the draws done twice. The bytes
    are those of one process (`generate_test`); the caller writes."""
    shards = _shards(cfg, pop, shard_users)
    ctx = context()
    firsts = ctx.RawArray("q", len(shards) + 1)  # zeros: not known yet
    firsts[0] = 1
    yield from ordered_map(_encode_shard, shards, workers, setup=(_share_firsts, (firsts, ctx.Condition())))


def with_shift(cfg: GeneratorSettings, simulate_shift: bool | None) -> GeneratorSettings:
    """`cfg` with the shift switched on/off (None keeps `cfg.shift.enabled`)."""
    if simulate_shift is None:
        return cfg
    return replace(cfg, shift=replace(cfg.shift, enabled=simulate_shift))


def generate(cfg: GeneratorSettings, simulate_shift: bool | None = None,
             shard_users: int = STREAM_USERS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(users, events) in memory: for tests and small data (use `write_raw` for large runs)."""
    cfg = with_shift(cfg, simulate_shift)
    pop = draw_population(cfg)
    chunks = list(iter_event_chunks(cfg, pop, shard_users))
    events = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    return pop.users, events


def write_raw(cfg: GeneratorSettings, paths: DataPaths, simulate_shift: bool | None = None,
              shard_users: int = STREAM_USERS, workers: int = 1) -> GenerateResult:
    """Generate and write the raw data as one batch that replaces all earlier raw data.

    Events stream shard by shard (`shard_users`: `sharding.shard_users`) into the date
    partitions (`churn.raw.store`), one part per day and shard; nothing is visible until the
    batch commits. With `workers` > 1 (`sharding.raw_workers`) and more than one shard, the shards
    are drawn and encoded by that many processes (`churn.parallel.pool.ordered_map`) and this
    process writes their parts in shard order: the same files byte for byte, every write (and
    its storage fault points) in this process; memory about `workers` + 1 shards.
    """
    t0 = time.perf_counter()
    cfg = with_shift(cfg, simulate_shift)
    pop = draw_population(cfg)
    n_events = 0
    with BatchWriter(paths, "generate", replace=True) as writer:
        parallel = workers > 1 and len(_shard_bounds(cfg.n_users, shard_users)) > 1
        pieces: Iterator[pd.DataFrame] | Iterator[list[EncodedPart]] = (
            _encoded_in_workers(cfg, pop, shard_users, workers) if parallel else iter_event_chunks(cfg, pop, shard_users))
        with contextlib.closing(pieces):  # a failed write stops the workers now, not when the traceback goes
            for i, piece in enumerate(pieces):
                n_events += writer.add_encoded(piece) if parallel else writer.add_events(piece)
                del piece
                log.info("generate: shard %d of about %d users written (%d events so far, %.1fs)",
                         i + 1, shard_users, n_events, time.perf_counter() - t0)
        writer.set_users(pop.users)
        writer.commit({"seed": cfg.seed, "simulate_shift": cfg.shift.enabled})
    user_days = int(np.sum(cfg.days - pop.first_day))
    result = GenerateResult(cfg.n_users, n_events, user_days, time.perf_counter() - t0,
                            str(paths.raw / "users"), str(paths.raw / "events"))
    log.info("generate: %d users, %d events (shift=%s) in %.1fs -> %s",
             result.users, result.events, cfg.shift.enabled, result.seconds, paths.raw)
    return result
