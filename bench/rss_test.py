"""tree_rss: a spawned child's memory is counted, a fork that has not exec'd is not (its pages
are its parent's)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.rss import tree_rss

MB = 2**20


def _own_rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_fork_before_exec_is_not_counted_twice():
    held = bytearray(b"x") * (200 * MB)  # resident in this process
    alone = tree_rss(os.getpid())
    child = os.fork()
    if child == 0:  # the child shares `held` copy-on-write until it would exec; it never does
        time.sleep(3)
        os._exit(0)
    try:
        time.sleep(0.5)
        forked = tree_rss(os.getpid())
    finally:
        os.waitpid(child, 0)
    assert len(held) == 200 * MB and alone >= 200 * MB
    assert abs(forked - alone) < 50 * MB, (alone / MB, forked / MB)


def test_a_spawned_child_s_memory_is_counted():
    code = "import sys, time; b = bytearray(b'y') * (150 << 20); sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        both = tree_rss(os.getpid())
    finally:
        proc.kill()
        proc.wait()
    assert both - _own_rss() >= 150 * MB, (both / MB, _own_rss() / MB)
