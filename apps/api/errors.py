"""Error responses: 422 naming the field, JSON everywhere, and a last-resort 500 that logs.

Why trim pydantic's errors: they echo the offending input (which may be a megabyte of
garbage or personal data) and internal URLs; clients need the field path, a message and a
machine-readable type, nothing more. Why cut the list: a hostile body can produce tens of
thousands of errors; a 422 lists the first `api.max_errors` and `error_count` says how many
there were (each cut list counts in `churn_api_limit_hits_total{limit="max_errors"}`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from apps.api.logs import log_event
from apps.api.metrics import ApiMetrics
from apps.api.validation import Problem, Problems


def problems_response(problems: list[Problem], count: int, metrics: ApiMetrics, max_errors: int) -> JSONResponse:
    """The 422: the first `max_errors` problems and `error_count` (a cut list is counted)."""
    if count > len(problems[:max_errors]):
        metrics.count_limit("max_errors")
    return JSONResponse(status_code=422, content={"detail": problems[:max_errors], "error_count": count})


def http_error_response(exc: HTTPException) -> JSONResponse:
    """An HTTPException's JSON answer, as FastAPI's own handler renders it (all ours have a body)."""
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI, metrics: ApiMetrics, max_errors: int) -> None:
    """422 for our validator's `Problems` and FastAPI's own validation errors; JSON 500."""

    async def problems_error(request: Request, exc: Problems) -> JSONResponse:
        return problems_response(exc.problems, exc.count, metrics, max_errors)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return problems_response([_field_error(e) for e in errors[:max_errors]], len(errors), metrics, max_errors)

    app.add_exception_handler(Problems, problems_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


def _field_error(error: dict[str, Any]) -> Problem:
    loc = [part if isinstance(part, (str, int)) else str(part) for part in error.get("loc", ())]
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: log it with the route (never the body) and answer 500."""
    log_event("unhandled_error", logging.ERROR, method=request.method, path=request.url.path, error=repr(exc))
    return JSONResponse(status_code=500, content={"detail": "internal error"})
