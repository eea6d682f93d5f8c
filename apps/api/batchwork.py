"""/predict/batch parsed, validated and scored in worker processes, never on the event loop.

Why processes: in threads, a batch's work shares the interpreter lock with the event loop, and
some of it is one C call that no switch interval can interrupt: parsing a 768 KB body with
60,000 keys holds the lock for 8-24 ms, validating 100 rows 1-3 ms. Two hostile batch
clients then pushed well-behaved clients' p99 to 40 ms (bench/api_bench.py). In a worker
process the loop only moves the body's bytes to a pipe and the answer's bytes back, so what
one batch request can do to the others is bounded by that copy (a memcpy of at most
`api.max_body_bytes`) and by the CPU the machine has, not by the batch's content.

The workers are forked from the API process when the app starts, before any other thread
exists (the reloader starts after), so they share its imported modules copy-on-write: each
costs its private pages only (bench/api_bench.py counts the server's RSS plus the workers'
private pages). They run at a lower CPU priority (nice +10) than the server: when both
want the CPU, the kernel runs the event loop first. A worker loads the version it is asked for with the same checks as
the reloader (`load_serving_model`) and keeps it until another version is asked for. If a
worker dies (e.g. killed for memory), the request that was running gets a 503 and the pool
is made again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import stat
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from apps.api.logs import log_event
from apps.api.serving import ServingModel, load_serving_model
from apps.api.settings import ServingConfig
from apps.api.validation import Problem, Problems, RequestValidator, non_finite_problem
from churn.registry.registry import ModelRegistry

WORKER_NICENESS = 10  # lower CPU priority of the workers than the server's (Linux nice increment)
Outcome = tuple[bytes, list[float]]  # the 200 body and the risks (for the metrics)


class BatchWorkerLost(Exception):
    """The worker process scoring a request died; the pool was made again (answer 503)."""


def batch_answer(body: bytes, model: ServingModel, validator: RequestValidator, chunk_rows: int) -> Outcome:
    """The 200 body of /predict/batch and its risks, or Problems (422): the one implementation."""
    rows = validator.batch(body)
    risks = np.concatenate([
        model.risk([vars(row.features) for row in rows[start:start + chunk_rows]])
        for start in range(0, len(rows), chunk_rows)
    ])
    bad = np.flatnonzero(~np.isfinite(risks))
    if bad.size:
        raise Problems([non_finite_problem(["body", "instances", int(bad[0])])], int(bad.size))
    risk_list = risks.tolist()
    threshold = model.threshold
    payload = json.dumps({
        "model_version": model.version, "threshold": threshold,
        "predictions": [{"user_id": row.user_id, "churn_risk": risk, "label": int(risk >= threshold)}
                        for row, risk in zip(rows, risk_list)],
    }).encode()
    return payload, risk_list


class BatchPool:
    """`workers` forked processes answering /predict/batch bodies for a model version."""

    def __init__(self, config: ServingConfig, validator: RequestValidator, workers: int, chunk_rows: int) -> None:
        self._config = config
        self._validator = validator
        self._workers = workers
        self._chunk_rows = chunk_rows
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Fork the workers now (call before starting any thread); their start is not waited for.

        Why not wait: with the fork context the executor forks every worker inside the first
        `submit`, so the fork happens here, before the reloader's thread exists; the workers'
        own start (closing inherited sockets, nice) then runs on another core while the API
        loads its model and starts listening (waiting for it was 15-50 ms of the API's start).
        A worker that fails to start breaks the pool: the first batch request gets the 503 of
        a lost worker and a new pool (`answer`).
        """
        self._executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(self._config, self._validator, self._chunk_rows),
        )
        for _ in range(self._workers):
            self._executor.submit(_ping)

    def pids(self) -> list[int]:
        """Process ids of the workers (operations and tests)."""
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def answer(self, body: bytes, version: str) -> Outcome:
        """`batch_answer` for `version` in a worker; Problems (422), ServingError, BatchWorkerLost."""
        if self._executor is None:
            self.start()
        assert self._executor is not None
        try:
            kind, first, second = await asyncio.wrap_future(self._executor.submit(_answer, body, version))
        except BrokenProcessPool as exc:
            log_event("batch_worker_lost", logging.ERROR, error=str(exc))
            self._executor.shutdown(wait=False, cancel_futures=True)
            self.start()
            raise BatchWorkerLost(str(exc)) from None
        if kind == "problems":
            raise Problems(first, second)
        return first, second


# ---------------------------------------------------------------- in the worker process

_state: dict[str, Any] = {}


def _init_worker(config: ServingConfig, validator: RequestValidator, chunk_rows: int) -> None:
    _close_inherited_sockets()
    os.nice(WORKER_NICENESS)  # the event loop first when both want the CPU (no privilege needed)
    _state.update(registry=ModelRegistry(config.registry_root), specs=config.specs, validator=validator,
                  chunk_rows=chunk_rows, model=None)


def _close_inherited_sockets() -> None:
    """Close every socket the fork copied (a replacement worker is forked from a serving API).

    Why: a worker holding a copy of a client connection keeps it open after the API closed
    it, and a copy of the listening socket would keep the port bound. The worker talks to
    the API through pipes only, so it needs no socket.
    """
    for name in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                os.close(int(name))
        except OSError:  # the directory's own descriptor, already closed
            pass


def _ping() -> bool:
    return True


def _answer(body: bytes, version: str) -> tuple[str, Any, Any]:
    """("ok", payload, risks) or ("problems", problems, count); ServingError propagates."""
    model: ServingModel | None = _state["model"]
    if model is None or model.version != version:
        model = _state["model"] = load_serving_model(_state["registry"], version, _state["specs"])
    try:
        payload, risks = batch_answer(body, model, _state["validator"], _state["chunk_rows"])
    except Problems as exc:
        problems: list[Problem] = exc.problems
        return "problems", problems, exc.count
    return "ok", payload, risks
