"""Stage timings of the scenario, printed as a table at the end (also when a stage fails)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterator

from harness.proc import log


@dataclass
class Stage:
    name: str
    seconds: float
    status: str  # "ok" | "FAILED"


@dataclass
class Timings:
    stages: list[Stage] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block; a stage that raises is recorded as FAILED and the error propagates."""
        log(f"=== stage: {name}")
        t0 = time.monotonic()
        status = "FAILED"
        try:
            yield
            status = "ok"
        finally:
            self.stages.append(Stage(name, time.monotonic() - t0, status))
            log(f"=== stage: {name}: {status} in {time.monotonic() - t0:.1f} s")

    def total(self) -> float:
        return time.monotonic() - self.started

    def table(self) -> str:
        width = max([len(s.name) for s in self.stages] + [len("total")])
        lines = [f"{'stage':<{width}}  {'seconds':>8}  status", f"{'-' * width}  {'-' * 8}  ------"]
        lines += [f"{s.name:<{width}}  {s.seconds:8.1f}  {s.status}" for s in self.stages]
        lines.append(f"{'total (wall)':<{width}}  {self.total():8.1f}")
        return "\n".join(lines)
