"""Run commands with a log line per call and errors that carry the command's output."""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Mapping, Sequence


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a server child (preexec_fn): get SIGTERM when the test process dies, even by SIGKILL (Linux prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def stop_server(proc: "subprocess.Popen[bytes]", what: str, grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; logs the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    log(f"{what} pid {proc.pid} stopped (exit {proc.returncode})")


class CommandFailed(Exception):
    """A command exited non-zero (or timed out); the message holds its stdout and stderr tails."""


def log(message: str) -> None:
    """One timestamped line on stderr (pytest shows it for a failed test; Bazel keeps it in test.log)."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 300,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` and capture its output; raise CommandFailed when `check` and it fails."""
    started = time.monotonic()
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=full_env,
                              input=input, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"timed out after {timeout} s: {shlex.join(cmd)}\n"
                            f"{_tail(str(exc.stdout or ''))}\n{_tail(str(exc.stderr or ''))}") from None
    if not quiet:
        log(f"$ {shlex.join(cmd)}  -> exit {proc.returncode} in {time.monotonic() - started:.1f} s")
    if check and proc.returncode != 0:
        raise CommandFailed(f"exit {proc.returncode}: {shlex.join(cmd)}\n"
                            f"--- stdout\n{_tail(proc.stdout)}\n--- stderr\n{_tail(proc.stderr)}")
    return proc
