"""Independent pieces of work on the machine's cores, their results in the pieces' order.

Why processes: the heavy steps' kernels are numpy and pandas code that holds the interpreter
lock most of the time (the two model fits on two threads were no faster than one after the
other, README "Scale"), so two cores need two processes.
Why "spawn": a fork would copy the parent's threads (pyarrow's pools, the day files'
encoding thread, possibly mid-lock) and its open files and flock()ed locks into the child.
Why ordered and bounded: the callers write the results in the pieces' order (the day files'
row groups are ranges of user ids), and at most `workers` pieces are computed ahead of the
one being consumed, so memory is about `workers + 1` pieces, never all of them.

A piece's exception is raised in the caller with its class and message (a `ChurnError`
stays one line and its exit code), the worker's traceback chained as its cause; a worker
that dies (a kill, the OOM killer) raises `BrokenProcessPool` in the caller, which does not
wait for the other pieces.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int,
                setup: tuple[Callable[..., None], tuple[Any, ...]] | None = None) -> Iterator[R]:
    """`map(fn, items)` computed by up to `workers` processes, yielded in the items' order.

    `workers` <= 1, or one item, runs in this process (no process, the same results). `fn`
    and the items must be picklable (a module-level function; frames, paths, settings).
    `setup`: (a module-level function, its arguments), called once in each worker before
    its first piece (in this process when no worker is started): how the pieces get objects
    that are shared across the processes, which only pass to a process as it starts (made
    by `context()`: a `multiprocessing.Array`, a `Condition`).

    The pieces start in the items' order (a worker takes the next one when it is free), so
    a piece may wait for something an earlier piece publishes before it finishes (as
    `churn.data.generate` hands on the first event ids): every earlier piece is running
    or done, never queued behind it.
    """
    todo = list(items)
    if workers <= 1 or len(todo) <= 1:
        if setup:
            setup[0](*setup[1])
        yield from map(fn, todo)
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context(),
                               initializer=_start_worker, initargs=(*_parent_logging(), setup))
    pending: collections.deque[Future[R]] = collections.deque()
    ahead = iter(todo)
    try:
        for item in ahead:
            pending.append(pool.submit(fn, item))
            if len(pending) == workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(ahead, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield result
    finally:  # also when the caller stops early or a piece failed: nothing is left running
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()


def context() -> multiprocessing.context.SpawnContext:
    """The workers' start method ("spawn", above): objects shared with them are made by it."""
    return multiprocessing.get_context("spawn")


def _start_worker(level: int, fmt: str | None, setup: tuple[Callable[..., None], tuple[Any, ...]] | None) -> None:
    _log_like_parent(level, fmt)
    if setup:
        setup[0](*setup[1])


def _parent_logging() -> tuple[int, str | None]:
    """(root level, format of its first handler): a spawned worker starts without logging."""
    root = logging.getLogger()
    fmt = root.handlers[0].formatter if root.handlers and root.handlers[0].formatter else None
    return root.level, getattr(fmt, "_fmt", None)


def _log_like_parent(level: int, fmt: str | None) -> None:
    """A worker's log lines go to the stderr it shares with the parent, at the parent's level."""
    logging.basicConfig(level=level, format=fmt or logging.BASIC_FORMAT)
