"""Peak resident memory of this process and its descendants while a block runs (the
benchmarks' memory column).

Why sampling: ru_maxrss is a high-water mark over the whole process life, so it cannot say
which step of a run reached it; a thread reading /proc every 10 ms can.
Why the process tree: a step may compute its pieces on worker processes
(`churn.parallel.pool`, `sharding.workers`); the kernel's peaks (ru_maxrss, wait4) are those
of ONE process, so they would show the parent's share only. `tree_rss` sums the RSS of a
process and of every descendant (their children lists in /proc), so the peak is the memory
the step held on the machine at once. A sum of RSS counts the pages the processes share (the
interpreter's and the libraries' code) once per process: an upper bound, a few tens of MB per
worker above the proportional figure (PSS), which is too slow to read every 10 ms.
A child that has forked and not yet exec'd (subprocess's vfork: joblib runs `lscpu` once
from train to count the physical cores) shares all its parent's pages, so its RSS is the
parent's again: it is not counted (it is recognised by its command line, which is read from
the parent's memory until it execs; a spawned worker has its own), its descendants are.
"""

from __future__ import annotations

import gc
import os
import resource
import threading
from typing import Callable


class PeakSampler:
    """The largest value of `read()` seen while the `with` block ran (sampled every 10 ms by a
    thread), and the value at its start: the one sampling loop of the benches' peaks."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            self._stop.wait(0.01)

    def __enter__(self) -> "PeakSampler":
        self.base = self.peak = self.read()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.read())

    @property
    def growth(self) -> int:
        return self.peak - self.base


_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` plus those of all its descendants (now), a fork that has
    not exec'd yet excepted (the module's docstring); 0 when it has exited. A process that
    exits while it is read counts 0, not an error."""
    total, todo = 0, [(pid, b"")]
    while todo:
        p, parent_cmdline = todo.pop()
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                cmdline = fh.read()
            if cmdline != parent_cmdline:
                with open(f"/proc/{p}/statm") as fh:
                    total += int(fh.read().split()[1]) * _PAGE
            for task in os.listdir(f"/proc/{p}/task"):  # children are listed per thread
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend((int(c), cmdline) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    return total


class PeakRss(PeakSampler):
    """`peak_mb`: the largest RSS of this process and its descendants (`tree_rss`) seen while
    the `with` block ran; `growth_mb`: that minus the RSS at its start (what the block itself
    added)."""

    def __init__(self, pid: int | None = None) -> None:
        super().__init__(self._rss)
        self.pid = os.getpid() if pid is None else pid

    def _rss(self) -> int:
        return tree_rss(self.pid)

    def __enter__(self) -> "PeakRss":
        if self.pid == os.getpid():
            gc.collect()
        super().__enter__()
        return self

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @property
    def growth_mb(self) -> float:
        return self.growth / 2**20


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) and of its waited-for
    children so far: a step's figure is the difference around it.

    Why beside wall time: on the shared 2-core machine a step's wall time is partly waiting for
    a core; its CPU time is the step's own work (plus this module's 10 ms RSS sampler, about a
    millisecond a second), so two runs at different loads can be compared by it."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
