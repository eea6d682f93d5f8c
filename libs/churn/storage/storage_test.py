"""Tests for churn.storage: layout, atomic writes (old file intact on failure), reads, digests, locks."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from churn.storage.files import (
    DataError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    dataset_digest,
    file_digest,
    read_json,
)
from churn.storage.filelock import FileLock, LockTimeout
from churn.storage.paths import DataPaths
from churn.storage.tables import atomic_write_parquet, read_parquet


def test_layout(tmp_path: Path) -> None:
    p = DataPaths.from_root(tmp_path).ensure()
    for name in ("raw", "processed", "features", "labels", "registry", "predictions", "monitoring"):
        assert (tmp_path / name).is_dir()
    assert p.user_days == tmp_path / "processed" / "user_days.parquet"


def test_atomic_writes_roundtrip(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1, 2]})
    assert read_json(tmp_path / "j.json") == {"a": [1, 2], "b": 1}
    df = pd.DataFrame({"x": [1, 2, 3], "s": pd.Categorical(["a", "b", "a"])})
    atomic_write_parquet(df, tmp_path / "d.parquet")
    back = read_parquet(tmp_path / "d.parquet")
    assert back["x"].tolist() == [1, 2, 3] and back["s"].astype(str).tolist() == ["a", "b", "a"]
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []


def test_failed_write_leaves_old_file_intact_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_json(target, {"v": 1})
    before = target.read_bytes()

    def half_then_crash(fh) -> None:  # type: ignore[no-untyped-def]
        fh.write(b'{"v": 2, "trunc')
        raise RuntimeError("writer died midway")

    with pytest.raises(RuntimeError, match="midway"):
        atomic_write_with(target, half_then_crash)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_failed_parquet_write_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "d.parquet"
    atomic_write_parquet(pd.DataFrame({"x": [1]}), target)
    before = target.read_bytes()
    bad = pd.DataFrame({"x": [object()]})  # pyarrow cannot convert -> raises during write
    with pytest.raises(Exception):
        atomic_write_parquet(bad, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet"]


def test_read_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothere.parquet: file not found"):
        read_parquet(tmp_path / "nothere.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="bad.parquet: cannot read Parquet"):
        read_parquet(tmp_path / "bad.parquet")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="bad.json"):
        read_json(tmp_path / "bad.json")


def test_digests(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert file_digest(a) == "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
    d1 = dataset_digest([a, b])
    assert d1 == dataset_digest([b, a])  # order-independent
    b.write_bytes(b"two!")
    assert dataset_digest([a, b]) != d1
    with pytest.raises(DataError, match="missing"):
        file_digest(tmp_path / "missing")


def test_lock_excludes_and_times_out(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "registry.lock"
    with FileLock(path, timeout=1):
        with pytest.raises(LockTimeout, match="registry.lock: lock not acquired within 0.2s"):
            FileLock(path, timeout=0.2).acquire()
    with FileLock(path, timeout=0) as lk:  # free again
        assert lk.locked


def test_lock_waits_for_release(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = FileLock(path)
    holder.acquire()
    threading.Timer(0.3, holder.release).start()
    t0 = time.monotonic()
    with FileLock(path, timeout=5):
        waited = time.monotonic() - t0
    assert 0.2 < waited < 5
