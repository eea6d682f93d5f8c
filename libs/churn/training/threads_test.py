"""map_on_threads: results in the items' order, items at once, each thread's library limits."""

from __future__ import annotations

import threading

import pytest
from threadpoolctl import threadpool_info

import churn.training.models  # noqa: F401  (loads scikit-learn's OpenMP runtime)
from churn.training.threads import map_on_threads


def _openmp_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]


def test_items_run_at_once_and_come_back_in_their_order():
    both_started = threading.Barrier(2, timeout=30)  # one after the other would never pass it

    def meet(item: int) -> int:
        both_started.wait()
        return item * 10

    assert map_on_threads(meet, [1, 2], threads=2, library_threads=1) == [10, 20]


def test_one_thread_runs_the_items_in_order_in_this_thread():
    seen = []
    assert map_on_threads(lambda i: seen.append(threading.get_ident()) or i, [3, 1, 2], 1, 1) == [3, 1, 2]
    assert seen == [threading.get_ident()] * 3


def test_every_worker_thread_has_the_openmp_limit():
    fresh: list[list[int]] = []
    thread = threading.Thread(target=lambda: fresh.append(_openmp_threads()))
    thread.start()
    thread.join()
    assert fresh[0] and max(fresh[0]) > 1, f"a new thread's OpenMP default must exceed 1 here: {fresh}"
    barrier = threading.Barrier(2, timeout=30)

    def limits(_: int) -> list[int]:
        barrier.wait()
        return _openmp_threads()

    assert map_on_threads(limits, [0, 1], threads=2, library_threads=1) == [[1], [1]]


def test_a_failing_item_raises_after_the_others_ended():
    ended = []

    def work(item: int) -> int:
        if item == 0:
            raise ValueError("item 0 is bad")
        ended.append(item)
        return item

    with pytest.raises(ValueError, match="item 0 is bad"):
        map_on_threads(work, [0, 1, 2], threads=2, library_threads=1)
    assert sorted(ended) == [1, 2]
