"""An advisory inter-process lock on a file (fcntl.flock), which says who holds it.

Why: promotion, retraining and the bootstrap Job may run at the same time on a shared volume;
writers that must not interleave (registry alias swaps, history appends, an area's commit)
hold this lock. flock is released by the kernel if the holder dies, so a crashed Job never
wedges the others. The holder writes who it is (pid, host, command, since) into the lock
file and clears it on release; a waiter logs that holder when it starts waiting and every
`LOG_EVERY_S` seconds after. The file's content is only a hint for people: the flock is the
truth (a killed holder's line stays behind, but its lock is free and the next holder
overwrites it).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from churn.errors import LockTimeout

log = logging.getLogger(__name__)

LOG_EVERY_S = 30.0


def _me() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200],
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def describe_holder(path: Path) -> str:
    """What the lock file says about its holder ('unknown holder' if it says nothing)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "unknown holder"
    if not isinstance(info, dict) or "pid" not in info:
        return "unknown holder"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}) since {info.get('since')}"


class FileLock:
    """Exclusive lock on `path` (created if needed). Use as a context manager.

    `timeout` seconds to wait (None = forever, 0 = try once); polls every `poll` seconds.
    """

    def __init__(self, path: str | Path, timeout: float | None = 60.0, poll: float = 0.05) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.poll = poll
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: lock already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        start = time.monotonic()
        deadline = None if self.timeout is None else start + self.timeout
        next_log = start
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                os.close(fd)
                raise LockTimeout(f"{self.path}: lock not acquired within {self.timeout:g}s "
                                  f"(held by {describe_holder(self.path)})")
            if now >= next_log:
                log.warning("%s: waiting for the lock (%.0fs so far, timeout %s), held by %s", self.path,
                            now - start, "none" if self.timeout is None else f"{self.timeout:g}s",
                            describe_holder(self.path))
                next_log = now + LOG_EVERY_S
            time.sleep(self.poll)
        if time.monotonic() - start > self.poll * 2:
            log.info("%s: lock acquired after %.1fs", self.path, time.monotonic() - start)
        self._fd = fd  # held from here on: release() frees it whatever happens below
        try:  # the holder line is a hint for people: a full disk must not leak the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(_me(), sort_keys=True) + "\n").encode(), 0)
        except OSError as exc:
            log.warning("%s: holder not recorded in the lock file (%s)", self.path, exc)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # no stale holder left behind as "truth"
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
