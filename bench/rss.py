"""Peak resident memory of this process while a block runs (the benchmarks' memory column).

Why sampling: ru_maxrss is a high-water mark over the whole process life, so it cannot say
which step of a run reached it; a thread reading /proc/self/statm every 10 ms can.
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


class PeakRss(PeakSampler):
    """`peak_mb`: the largest RSS seen while the `with` block ran; `growth_mb`: that minus the RSS
    at its start (what the block itself added)."""

    def __init__(self) -> None:
        super().__init__(self._rss)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def __enter__(self) -> "PeakRss":
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
