"""`ordered_map`: results in order, at most `workers` pieces ahead, failures raised in the caller."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from churn.errors import DataError
from churn.parallel.pool import context, ordered_map


def _square_noting_start(item: tuple[Path, int]) -> tuple[int, int]:
    folder, i = item
    (folder / f"started-{i}").touch()
    return i, i * i


def _fail_on_three(i: int) -> int:
    if i == 3:
        raise DataError(f"piece {i}: bad rows")
    return i


def _die(i: int) -> int:
    os._exit(3)


def _warn(i: int) -> int:
    logging.getLogger("churn.parallel.test").warning("piece %d warns from pid %d", i, os.getpid())
    return os.getpid()


_CHAIN: tuple | None = None  # (array, condition) shared by the pieces of a test (`_share`)


def _share(values: object, changed: object) -> None:
    global _CHAIN
    _CHAIN = (values, changed)


def _add_to_previous(i: int) -> tuple[int, int]:
    """values[i + 1] = values[i] + i, once the piece before has set values[i]: a piece that
    waits for an earlier one, as generate's shards wait for their first event ids."""
    values, changed = _CHAIN
    with changed:
        while values[i] == 0:
            changed.wait()
        values[i + 1] = values[i] + i
        changed.notify_all()
        return values[i], os.getpid()


def _chain(workers: int) -> list[tuple[int, int]]:
    ctx = context()
    values = ctx.RawArray("q", 7)
    values[0] = 100
    return list(ordered_map(_add_to_previous, range(6), workers, setup=(_share, (values, ctx.Condition()))))


def test_setup_shares_objects_with_the_workers_and_a_piece_may_wait_for_an_earlier_one() -> None:
    got = _chain(workers=2)
    assert [v for v, _ in got] == [100, 100, 101, 103, 106, 110]
    assert os.getpid() not in {pid for _, pid in got}


def test_setup_runs_in_this_process_without_workers() -> None:
    assert _chain(workers=1) == [(v, os.getpid()) for v in [100, 100, 101, 103, 106, 110]]


def test_results_equal_map_in_order_with_at_most_workers_ahead(tmp_path: Path) -> None:
    items = [(tmp_path, i) for i in range(9)]
    seen = []
    for i, square in ordered_map(_square_noting_start, items, workers=2):
        time.sleep(0.3)  # time for the workers to run ahead, if they were allowed to
        started = {int(p.name.split("-")[1]) for p in tmp_path.glob("started-*")}
        assert max(started) <= i + 2, f"result {i}: pieces {sorted(started)} started (more than 2 ahead)"
        seen.append((i, square))
    assert seen == [(i, i * i) for i in range(9)]


def test_one_worker_runs_in_this_process(tmp_path: Path) -> None:
    assert list(ordered_map(_warn, [0, 1], workers=1)) == [os.getpid()] * 2


def test_several_workers_are_other_processes() -> None:
    pids = list(ordered_map(_warn, range(4), workers=2))
    assert os.getpid() not in pids and len(set(pids)) <= 2


def test_a_pieces_churn_error_is_raised_with_its_class_and_message() -> None:
    got = []
    with pytest.raises(DataError, match="piece 3: bad rows") as err:
        for r in ordered_map(_fail_on_three, range(8), workers=2):
            got.append(r)
    assert got == [0, 1, 2]
    assert "_fail_on_three" in str(err.value.__cause__), "the worker's traceback is chained"


def test_a_worker_that_dies_fails_the_caller_without_hanging() -> None:
    with pytest.raises(BrokenProcessPool):
        list(ordered_map(_die, range(4), workers=2))


def test_workers_log_to_the_parents_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    list(ordered_map(_warn, range(2), workers=2))
    err = capfd.readouterr().err
    assert "WARNING churn.parallel.test: piece 0 warns" in err and "piece 1 warns" in err
