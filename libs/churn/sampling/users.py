"""Stable per-user hashing: deterministic subsampling and shard assignment.

Why not Python's hash(): it is salted per process for str and is not part of any contract;
a user must land in the same sample and the same shard on every run, machine and Python
version. splitmix64 is a fixed, well-mixed 64-bit finaliser, vectorised with numpy (uint64
arithmetic wraps modulo 2**64 by design).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """splitmix64 of each integer in `values` (offset by `seed`) as uint64."""
    z = np.asarray(values).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GOLDEN * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def shard_of(user_ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard index in [0, shards) of each user id (stable across runs and processes)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return (splitmix64(user_ids) % np.uint64(shards)).astype(np.int64)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 0 <= I < N; ValueError naming the bad value (every `--shard I/N`)."""
    if text is None:
        return None
    try:
        index, total = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects I/N (e.g. 0/4), got {text!r}") from None
    if total < 1 or not 0 <= index < total:
        raise ValueError(f"--shard {text!r}: need 0 <= I < N")
    return index, total


def shard_count(users: int, shard_users: int) -> int:
    """How many shards keep each one at about `shard_users` users (1 for a small population)."""
    return max(1, -(-users // max(shard_users, 1)))


def users_within_budget(user_ids: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """Bool mask over rows keeping whole users (in hash order) while the row count fits `max_rows`.

    Whole users, because splitting one user's days between kept and dropped rows would
    bias per-user patterns; hash order, so the kept set is a deterministic random sample.
    """
    ids = np.asarray(user_ids)
    if len(ids) <= max_rows:
        return np.ones(len(ids), dtype=bool)
    uniq, counts = np.unique(ids, return_counts=True)
    return np.isin(ids, budget_users(uniq, counts, max_rows, seed))


def budget_users(users: np.ndarray, rows: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """The users `users_within_budget` keeps, from each user's row count alone (`users` unique):
    so a reader can choose them before reading the rows."""
    order = np.argsort(splitmix64(users, seed), kind="stable")
    return users[order][np.cumsum(rows[order]) <= max_rows]
