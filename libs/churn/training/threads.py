"""The models of one training run fitted (and checked) at once, on threads of this process.

Why threads, not `churn.parallel.pool`'s processes: at 100,000 users and more the two fits
are big array kernels (gradient boosting's histograms in Cython, the logistic regression's
matrix products in BLAS, the preprocessing in numpy) that release the interpreter lock, and
threads share the training matrix without a copy or a spawned interpreter (0.75-2.5 s of CPU
each, `churn.data.generate`). At 2,000 users the fits are mostly Python and gain nothing,
but lose nothing either (README, "Scale").

Why the thread limit is set twice: OpenMP's thread count is a setting of each thread (a new
thread starts at all cores, so each worker thread sets its own), BLAS's is one for the
process, which the caller's own `threadpool_limits` holds for the whole section (so a worker
restoring "its" previous limit at its end can only restore that same value).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from threadpoolctl import threadpool_limits

T = TypeVar("T")
R = TypeVar("R")


def map_on_threads(fn: Callable[[T], R], items: Iterable[T], threads: int, library_threads: int) -> list[R]:
    """`[fn(x) for x in items]`, computed by up to `threads` threads (1: one after the other,
    in this thread), each with OpenMP and BLAS limited to `library_threads` (0: the libraries'
    default). The first failing item's exception is raised once every item has ended."""
    todo = list(items)
    limits = library_threads or None
    with threadpool_limits(limits=limits):
        if threads <= 1 or len(todo) <= 1:
            return [fn(item) for item in todo]

        def limited(item: T) -> R:
            with threadpool_limits(limits=limits):
                return fn(item)

        with ThreadPoolExecutor(max_workers=min(threads, len(todo)), thread_name_prefix="fit") as pool:
            futures = [pool.submit(limited, item) for item in todo]
        return [future.result() for future in futures]
