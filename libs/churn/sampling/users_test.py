"""Stable per-user hashing: same values on every run, shards cover all, budgets keep whole users."""

from __future__ import annotations

import numpy as np

from churn.sampling.users import shard_of, splitmix64, users_within_budget


def test_splitmix64_is_stable_and_budget_keeps_whole_users():
    ids = np.arange(1, 6)
    assert splitmix64(ids).tolist() == splitmix64(ids.copy()).tolist()
    assert len(set(shard_of(np.arange(10_000), 4).tolist())) == 4
    users = np.repeat(np.arange(100), 10)
    keep = users_within_budget(users, 333, seed=1)
    assert keep.sum() == 330  # 33 whole users
    kept = np.unique(users[keep])
    assert all(keep[users == u].all() for u in kept)
    assert np.array_equal(keep, users_within_budget(users, 333, seed=1))
