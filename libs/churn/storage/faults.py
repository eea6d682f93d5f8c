"""The storage layer's fault-injection hook: every write, rename, link and removal calls `point`.

Why a hook in the storage layer (and not strace): every step publishes through this layer, so
a test can enumerate the injection points of any step, present or future, by counting the
calls of one run, then fail the N-th call of a second run. Two ways to fail (docs/consistency.md):

- `error`: the operation raises OSError (ENOSPC or EIO): the step's own error handling runs,
  exactly as for a real I/O error or a full disk.
- `crash`: the operation raises `SimulatedCrash` (a BaseException, so no `except Exception`
  swallows it) and every later storage operation raises it again, so no clean-up reaches the
  disk: the files are left as a `kill -9` at that point would leave them.

In production `_injector` is None and `point` is one comparison.

`checked` is a second hook, not a point (no step's count changes): called after a published
file's bytes were compared with its MANIFEST and before a reader parses them
(`churn.storage.verified`), so a test can write into the file exactly in between.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

Injector = Callable[[str, Path], None]

_injector: Injector | None = None
_after_check: Injector | None = None


class SimulatedCrash(BaseException):
    """The process 'died' at a storage operation (fault-injection tests only)."""


def point(op: str, path: str | os.PathLike[str]) -> None:
    """Called before every mutating storage operation `op` on `path` (a no-op in production)."""
    if _injector is not None:
        _injector(op, Path(path))


@contextlib.contextmanager
def _installed(name: str, hook: Injector | None) -> Iterator[None]:
    """Set the module's hook `name` for the duration of the block, then restore it."""
    previous, globals()[name] = globals()[name], hook
    try:
        yield
    finally:
        globals()[name] = previous


def injecting(injector: Injector | None) -> contextlib.AbstractContextManager[None]:
    """Install `injector` for the duration of the block (tests)."""
    return _installed("_injector", injector)


def checked(path: Path) -> None:
    """Called between the check of a published file and its read (a no-op in production)."""
    if _after_check is not None:
        _after_check("checked", path)


def after_check(hook: Injector | None) -> contextlib.AbstractContextManager[None]:
    """Install `hook(op, path)` to run between each check and read for the block (tests)."""
    return _installed("_after_check", hook)


@dataclass
class Recorder:
    """Counts the points of one run (`ops` = [(op, path)]) without failing any."""

    ops: list[tuple[str, Path]] = field(default_factory=list)

    def __call__(self, op: str, path: Path) -> None:
        self.ops.append((op, path))


@dataclass
class FailAt:
    """Fail the `at`-th point (1-based): `mode` is 'crash', 'enospc' or 'eio'."""

    at: int
    mode: str = "crash"
    seen: int = 0
    fired: tuple[str, Path] | None = None

    def __call__(self, op: str, path: Path) -> None:
        if self.fired is not None and self.mode == "crash":
            raise SimulatedCrash(f"dead since {self.fired[0]} {self.fired[1]}")
        self.seen += 1
        if self.seen != self.at:
            return
        self.fired = (op, path)
        if self.mode == "crash":
            raise SimulatedCrash(f"injected crash at {op} {path}")
        code = errno.ENOSPC if self.mode == "enospc" else errno.EIO
        raise OSError(code, os.strerror(code), str(path))
