"""Tests for churn.storage: layout, atomic writes (old file intact on failure), reads, digests, locks."""

from __future__ import annotations

import hashlib
import os
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
    digest_and_size,
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


def test_checked_bytes_reach_pyarrow_as_a_native_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python file object (io.BytesIO) handed to pyarrow's threaded reader made processes
    hang at exit after their work, intermittently (apache/arrow#50482; `ml_jobs daily` in CI,
    1 of 40 runs of a bare read here): every read of checked bytes must give pyarrow an Arrow
    buffer. The real reader runs; the wrapper only records what it was given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    real, given = pq.read_table, []

    def recording(source, *args, **kwargs):
        given.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", recording)
    atomic_write_parquet(pd.DataFrame({"x": [1, 2]}), tmp_path / "d.parquet")
    assert read_parquet(tmp_path / "d.parquet", columns=["x"])["x"].tolist() == [1, 2]
    assert given and all(isinstance(s, (pa.NativeFile, pa.Buffer, str, Path)) for s in given), given


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


def test_lock_wait_is_logged_with_the_holder_and_release_clears_it(tmp_path: Path, caplog) -> None:
    import json
    import logging
    import os

    path = tmp_path / "x.lock"
    holder = FileLock(path)
    holder.acquire()
    info = json.loads(path.read_text())
    assert info["pid"] == os.getpid() and "since" in info and "host" in info
    threading.Timer(0.3, holder.release).start()
    with caplog.at_level(logging.WARNING, logger="churn.storage.filelock"):
        with FileLock(path, timeout=5):
            pass
    assert f"held by pid {os.getpid()}" in caplog.text and "waiting for the lock" in caplog.text
    assert path.read_text() == ""  # released: no stale holder left as "truth"
    with FileLock(path, timeout=1):
        with pytest.raises(LockTimeout, match=f"held by pid {os.getpid()}"):
            FileLock(path, timeout=0.1).acquire()


def test_outputs_are_group_readable(tmp_path: Path) -> None:
    """Not 0600 (what a temp file is created with): the umask decides, as for any file."""
    import os
    import stat

    for umask, file_mode, dir_bits in ((0o022, 0o644, 0o755), (0o027, 0o640, 0o750)):
        old = os.umask(umask)
        try:
            target = atomic_write_text(tmp_path / f"u{umask:o}" / "f.txt", "x")
            table = atomic_write_parquet(pd.DataFrame({"a": [1]}), tmp_path / f"u{umask:o}" / "t.parquet")
        finally:
            os.umask(old)
        assert stat.S_IMODE(target.stat().st_mode) == file_mode
        assert stat.S_IMODE(table.stat().st_mode) == file_mode
        assert stat.S_IMODE(target.parent.stat().st_mode) == dir_bits


def test_sweep_removes_only_dead_writers_temp_files(tmp_path: Path) -> None:
    import fcntl
    import os

    from churn.storage.files import locked_temp, sweep_dead_temps

    live, fd = locked_temp(tmp_path, "live.parquet")
    dead, dead_fd = locked_temp(tmp_path, "dead.parquet")
    os.close(dead_fd)  # its writer "died": the kernel released the flock
    dead_dir, dir_fd = locked_temp(tmp_path, "staging", directory=True)
    (dead_dir / "half.parquet").write_bytes(b"x" * 100)
    os.close(dir_fd)
    assert sorted(sweep_dead_temps(tmp_path)) == sorted([dead, dead_dir])
    assert live.exists() and not dead.exists() and not dead_dir.exists()
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    assert sweep_dead_temps(tmp_path) == [live]


def test_full_disk_is_one_error_naming_the_file(tmp_path: Path) -> None:
    from churn.storage.faults import FailAt, injecting
    from churn.storage.files import StorageFullError

    target = tmp_path / "features.parquet"
    atomic_write_text(target, "old")
    for at in (1, 2):  # the write, then the rename
        with injecting(FailAt(at, "enospc")), pytest.raises(StorageFullError, match=f"{target}: no space left"):
            atomic_write_text(target, "new")
        assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["features.parquet"]


def test_a_killed_writers_temp_file_is_swept_and_a_live_ones_is_not(tmp_path: Path) -> None:
    """A real process killed with SIGKILL mid-write: the kernel frees its flock, the sweep sees it."""
    import os
    import signal
    import subprocess
    import sys

    from churn.storage.files import locked_temp, sweep_dead_temps

    code = ("import sys, time\nfrom pathlib import Path\nfrom churn.storage.files import locked_temp\n"
            "tmp, fd = locked_temp(Path(sys.argv[1]), 'features.parquet')\n"
            "tmp.write_bytes(b'half' * 1000)\nprint(tmp, flush=True)\ntime.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        tmp = Path(writer.stdout.readline().strip())
        assert tmp.is_file() and tmp.name.startswith(".tmp-features.parquet-")
        assert sweep_dead_temps(tmp_path) == []  # its writer lives: untouched
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        assert sweep_dead_temps(tmp_path) == [tmp] and not tmp.exists()
    finally:
        writer.kill()
        writer.wait()


def test_a_file_outside_a_generation_is_never_checked_against_a_stray_manifest(tmp_path: Path) -> None:
    (tmp_path / "MANIFEST").write_text("not json")  # e.g. some tool's file in a parent directory
    atomic_write_json(tmp_path / "sub" / "card.json", {"a": 1})
    assert read_json(tmp_path / "sub" / "card.json") == {"a": 1}



def test_a_full_disk_while_recording_the_holder_does_not_leak_the_lock(tmp_path: Path, monkeypatch) -> None:
    """Found on a real full tmpfs: the holder line's ENOSPC left the flock held by a lost fd,
    and the next acquire in the same process waited its whole timeout."""
    import errno
    import os

    def full(*_args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path = tmp_path / "x.lock"
    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", full)
        with FileLock(path, timeout=1):
            pass
    with FileLock(path, timeout=0.5):  # free again
        pass


def _day_tables(folder: Path, days: int = 5) -> list[Path]:
    return [folder / f"2025-01-0{d + 1}.txt" for d in range(days)]


def test_durable_renames_fsync_every_temp_before_the_first_rename_and_each_folder_once(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    """The order that keeps each file atomic and durable: all temps written and fsynced, then
    renamed, then one fsync per folder (2 per file before: the file and its folder)."""
    import os

    from churn.storage.faults import injecting
    from churn.storage.files import DurableRenames

    targets = _day_tables(tmp_path / "a", 4) + _day_tables(tmp_path / "b", 3)
    for t in targets:
        atomic_write_text(t, "old")
    events: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        events.append(("fsync-dir" if path.is_dir() else "fsync", path.name if not path.is_dir() else str(path)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with injecting(lambda op, path: events.append((op, path.name))):
        with DurableRenames(max_open=100) as group:
            for t in targets:
                group.path(t).write_text(f"new {t.name}")
    kinds = [k for k, _ in events]
    assert kinds.count("write") == kinds.count("fsync") == kinds.count("rename") == len(targets)
    last_fsync, first_rename = max(i for i, k in enumerate(kinds) if k == "fsync"), kinds.index("rename")
    assert max(i for i, k in enumerate(kinds) if k == "write") < first_rename and last_fsync < first_rename
    assert sorted(p for k, p in events if k == "fsync-dir") == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert min(i for i, k in enumerate(kinds) if k == "fsync-dir") > max(i for i, k in enumerate(kinds) if k == "rename")
    assert all(t.read_text() == f"new {t.name}" for t in targets)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(t.name for t in targets[:4])
    with DurableRenames(max_open=2) as group:  # more files than temps held open: groups of 2
        for t in targets:
            group.path(t).write_text("third")
    assert all(t.read_text() == "third" for t in targets) and group.renamed == targets


def test_durable_renames_a_full_disk_replaces_nothing_and_a_crash_leaves_old_or_new(tmp_path: Path) -> None:
    from churn.storage.faults import FailAt, SimulatedCrash, injecting
    from churn.storage.files import DurableRenames, StorageFullError, sweep_dead_temps

    targets = _day_tables(tmp_path)
    for t in targets:
        atomic_write_text(t, "old")
    calls: list[str] = []

    def full_at_third_write(op: str, path: Path) -> None:
        calls.append(op)
        if calls.count("write") == 3 and op == "write":
            raise OSError(28, "No space left on device", str(path))

    with injecting(full_at_third_write), pytest.raises(StorageFullError, match=f"{targets[2]}: no space left"):
        with DurableRenames() as group:
            for t in targets:
                group.path(t).write_text("new")
    assert [t.read_text() for t in targets] == ["old"] * 5, "nothing replaced before every file was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(t.name for t in targets), "no temp left"

    with pytest.raises(StorageFullError, match=f"{targets[1]}: no space left"):
        with DurableRenames() as group:
            for i, t in enumerate(targets):
                tmp = group.path(t)
                if i == 1:
                    raise OSError(28, "No space left on device")
                tmp.write_text("new")
    assert [t.read_text() for t in targets] == ["old"] * 5 and len(list(tmp_path.iterdir())) == 5

    crash = FailAt(len(targets) + 2, "crash")  # 5 writes, then the second rename: a kill -9 there
    with injecting(crash), pytest.raises(SimulatedCrash):
        with DurableRenames() as group:
            for t in targets:
                group.path(t).write_text("new")
    assert crash.fired == ("rename", targets[1])
    assert [t.read_text() for t in targets] == ["new"] + ["old"] * 4, "each file complete, old or new"
    assert len(sweep_dead_temps(tmp_path)) == 4, "the dead run's temps are swept"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(t.name for t in targets)


def test_one_digest_loop_by_path_and_from_an_fd(tmp_path: Path) -> None:
    """`digest_and_size`: the same (sha256, size) by path and from an open fd (read from its
    start, the fd's offset put back), what `verified` and `generations` hash with."""
    data = os.urandom(3 << 20) + b"tail"
    f = tmp_path / "blob"
    f.write_bytes(data)
    expected = (hashlib.sha256(data).hexdigest(), len(data))
    assert digest_and_size(f) == expected and digest_and_size(f, sync=True) == expected
    assert file_digest(f) == expected[0]
    fd = os.open(f, os.O_RDONLY)
    try:
        os.lseek(fd, 12345, os.SEEK_SET)
        assert digest_and_size(fd) == expected
        assert os.lseek(fd, 0, os.SEEK_CUR) == 12345
        assert file_digest(fd) == expected[0]
    finally:
        os.close(fd)
