"""Teardown that runs whatever happens: LIFO callbacks from try/finally, atexit and SIGTERM."""

from __future__ import annotations

import atexit
import signal
import threading
import traceback
from typing import Callable

from harness.proc import log


class Cleanup:
    """Register undo actions as resources are created; `run()` executes them once, newest first."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], object]]] = []
        self._lock = threading.Lock()
        self.errors: list[str] = []
        atexit.register(self.run)
        # Bazel ends a test that hits its timeout with SIGTERM: turn it into SystemExit so
        # `finally` blocks and atexit run and nothing is left behind.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        log("SIGTERM: tearing down")
        raise SystemExit(128 + signum)

    def add(self, what: str, action: Callable[[], object]) -> None:
        with self._lock:
            self._actions.append((what, action))

    def run(self) -> list[str]:
        with self._lock:
            actions, self._actions = self._actions[::-1], []
        for what, action in actions:
            try:
                action()
                log(f"cleanup: {what}")
            except BaseException as exc:  # keep tearing down; report at the end
                self.errors.append(f"{what}: {exc!r}")
                log(f"cleanup FAILED: {what}: {exc!r}\n{traceback.format_exc()}")
        return self.errors
