"""Tests for churn.data.generate: determinism, reference-like counts, chunking, shift, files."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config.settings import GeneratorSettings
from churn.data import generate as gen
from churn.data.generate import EVENT_TYPES, STREAM_USERS, generate, iter_event_chunks, write_raw
from churn.parallel.pool import context
from churn.raw.store import raw_digest, read_events, read_users
from churn.storage.paths import DataPaths

SMALL = GeneratorSettings(n_users=300, days=60, seed=7)


@pytest.fixture(scope="module")
def defaults() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(GeneratorSettings())


def test_same_seed_same_frames() -> None:
    u1, e1 = generate(SMALL)
    u2, e2 = generate(SMALL)
    pd.testing.assert_frame_equal(u1, u2)
    pd.testing.assert_frame_equal(e1, e2)
    u3, e3 = generate(dataclasses.replace(SMALL, seed=8))
    assert not u1["engagement_score"].equals(u3["engagement_score"])
    assert len(e1) != len(e3)


def test_reference_like_counts_at_defaults(defaults: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    users, events = defaults
    assert len(users) == 2000
    assert abs(len(events) - 480_536) <= 0.10 * 480_536, len(events)
    assert 0.30 <= users["is_paid"].mean() <= 0.40
    assert users["user_id"].tolist() == list(range(1, 2001))
    assert (users["signup_date"] < pd.Timestamp("2025-01-01") + pd.Timedelta(days=1)).all()
    assert set(events["event_type"].astype(str).unique()) == set(EVENT_TYPES)
    e = users["engagement_score"]
    assert 0 <= e.min() and e.max() <= 1 and abs(e.mean() - 2 / 4.5) < 0.02  # Beta(2, 2.5)


def test_event_values_follow_the_model(defaults: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    users, events = defaults
    t = events["event_type"].astype(str)
    assert events["event_id"].tolist() == list(range(1, len(events) + 1))
    assert events.groupby("user_id")["event_time"].apply(lambda s: s.is_monotonic_increasing).all()
    w = events.loc[t == "video_watch", "watch_minutes"]
    assert w.between(2, 180).all() and (events.loc[t != "video_watch", "watch_minutes"] == 0).all()
    q = events.loc[t == "quiz_attempt", "quiz_score"]
    assert q.between(0, 100).all() and events.loc[t != "quiz_attempt", "quiz_score"].isna().all()
    pay = t.isin(["payment_success", "payment_failed"])
    assert events.loc[pay, "amount"].between(199, 999).all() and events.loc[~pay, "amount"].isna().all()
    assert (events.loc[pay, "event_time"].dt.day <= 3).all()
    paid_ids = set(users.loc[users["is_paid"] == 1, "user_id"])
    assert set(events.loc[pay, "user_id"]) <= paid_ids
    assert 0.90 <= (t[pay] == "payment_success").mean() <= 0.96
    assert events.loc[t == "login", "course_id"].isna().all()
    assert events.loc[t == "video_watch", "course_id"].notna().all()
    assert events["event_time"].min() >= pd.Timestamp("2025-01-01")
    assert events["event_time"].max() < pd.Timestamp("2025-05-01")


def test_engaged_users_are_more_active(defaults: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    users, events = defaults
    per_user = events.groupby("user_id").size().reindex(users["user_id"], fill_value=0).to_numpy()
    corr = np.corrcoef(users["engagement_score"], per_user)[0, 1]
    assert corr > 0.5


def test_shards_give_the_same_events_as_one_piece() -> None:
    """Memory follows the shard size (sharding.shard_users), the data do not (#16)."""
    cfg = dataclasses.replace(SMALL, n_users=2 * STREAM_USERS + 700, days=20)
    users, whole = generate(cfg, shard_users=10**9)
    shards = list(iter_event_chunks(cfg, shard_users=STREAM_USERS))
    assert len(shards) == 3 and [s["user_id"].max() for s in shards[:2]] == [STREAM_USERS, 2 * STREAM_USERS]
    pd.testing.assert_frame_equal(pd.concat(shards, ignore_index=True), whole)
    assert whole["event_id"].tolist() == list(range(1, len(whole) + 1))
    assert whole["user_id"].is_monotonic_increasing


def test_late_signups_have_no_event_before_signup() -> None:
    users, events = generate(dataclasses.replace(SMALL, late_signup_share=0.5))
    late = users["signup_date"] >= pd.Timestamp("2025-01-01")
    assert 0.4 < late.mean() < 0.6
    signup = events["user_id"].map(users.set_index("user_id")["signup_date"])
    assert (events["event_time"] >= signup).all()


def test_simulated_shift_lowers_recent_activity() -> None:
    cfg = dataclasses.replace(SMALL, n_users=1000)
    _, base = generate(cfg)
    _, shifted = generate(cfg, simulate_shift=True)
    cut = pd.Timestamp("2025-01-01") + pd.Timedelta(days=cfg.days - cfg.shift.last_days)

    def stats(ev: pd.DataFrame, recent: bool) -> tuple[int, float]:
        part = ev[(ev["event_time"] >= cut) == recent]
        logins = int((part["event_type"] == "login").sum())
        watch = float(part.loc[part["event_type"] == "video_watch", "watch_minutes"].mean())
        return logins, watch

    old_l, old_w = stats(base, True)
    new_l, new_w = stats(shifted, True)
    assert new_l < 0.7 * old_l and new_w < 0.7 * old_w
    before_old, _ = stats(base, False)
    before_new, _ = stats(shifted, False)
    assert abs(before_new - before_old) < 0.05 * before_old


def test_write_raw_streams_atomic_files(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    cfg = SMALL
    res = write_raw(cfg, paths, shard_users=100)
    users, events = generate(cfg)
    got_users = read_users(paths)
    got_events = read_events(paths).sort_values("event_id", ignore_index=True)  # stored by day
    assert res.users == 300 and res.events == len(events) and res.user_days == 300 * 60
    pd.testing.assert_frame_equal(got_users, users)
    pd.testing.assert_frame_equal(got_events, events, check_categorical=False)
    assert got_events["event_type"].astype(str).tolist() == events["event_type"].astype(str).tolist()
    assert sorted(p.name for p in paths.raw.iterdir()) == ["events", "manifest.json", "users"]
    assert sorted(p.name for p in (paths.raw / "events").iterdir())[0] == "date=2025-01-01"
    assert not list(paths.raw.rglob("*.tmp"))


def _raw_bytes(paths: DataPaths) -> dict[str, bytes]:
    """Every file under raw/ (the manifest without its commit times)."""
    out = {p.relative_to(paths.raw).as_posix(): p.read_bytes() for p in sorted(paths.raw.rglob("*")) if p.is_file()}
    manifest = json.loads(out.pop("manifest.json"))
    for b in manifest["batches"]:
        b.pop("at")
    out["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return out


def test_workers_write_the_same_raw_bytes_as_one_process(tmp_path: Path) -> None:
    """Shards drawn and encoded by two processes (sharding.raw_workers), written by this one: the
    same parts, digests and manifest as one process (#16)."""
    cfg = dataclasses.replace(SMALL, n_users=3 * STREAM_USERS + 700, days=20)
    one, two = DataPaths.from_root(tmp_path / "one"), DataPaths.from_root(tmp_path / "two")
    res1 = write_raw(cfg, one, shard_users=STREAM_USERS, workers=1)
    res2 = write_raw(cfg, two, shard_users=STREAM_USERS, workers=2)
    assert (res1.users, res1.events) == (res2.users, res2.events)
    got1, got2 = _raw_bytes(one), _raw_bytes(two)
    assert sum(name.startswith("events/") for name in got1) == 4 * 20  # 4 shards x 20 days
    assert sorted(got1) == sorted(got2)
    for name in got1:
        assert got1[name] == got2[name], f"{name} differs between workers=1 and workers=2"
    assert raw_digest(one) == raw_digest(two)
    events = read_events(two).sort_values("event_id", ignore_index=True)
    assert events["event_id"].tolist() == list(range(1, res2.events + 1))


def test_first_event_ids_are_handed_on_from_shard_to_shard_and_a_failure_stops_the_wait() -> None:
    """`_hand_on`: a shard waits for its first id until the shard before hands it on (its
    own first + its count), and a failed shard releases the ones after it (an error, not a
    hang: the caller raises the failed shard's own error first)."""
    ctx = context()
    firsts = ctx.RawArray("q", 5)
    firsts[0] = 1
    gen._share_firsts(firsts, ctx.Condition())
    got: dict[int, int] = {}
    later = threading.Thread(target=lambda: got.update({1: gen._hand_on(1, 20)}))
    later.start()
    later.join(0.3)
    assert later.is_alive() and firsts[2] == 0, "shard 1 waits for shard 0"
    assert gen._hand_on(0, 10) == 1
    later.join(5)
    assert got == {1: 11} and list(firsts[:3]) == [1, 11, 31]
    gen._hand_on(2, None)  # shard 2 failed in its draws
    with pytest.raises(RuntimeError, match="a shard before shard 3 failed"):
        gen._hand_on(3, 5)
    assert firsts[4] == -1
