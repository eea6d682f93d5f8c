"""Error responses: 422 naming the field, JSON everywhere, and a last-resort 500 that logs.

Why trim pydantic's errors: they echo the offending input (which may be a megabyte of
garbage or personal data) and internal URLs; clients need the field path, a message and a
machine-readable type, nothing more.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from apps.api.logs import log_event


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": [_field_error(e) for e in exc.errors()]})


def _field_error(error: dict[str, Any]) -> dict[str, Any]:
    loc = [part if isinstance(part, (str, int)) else str(part) for part in error.get("loc", ())]
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: log it with the route (never the body) and answer 500."""
    log_event("unhandled_error", logging.ERROR, method=request.method, path=request.url.path, error=repr(exc))
    return JSONResponse(status_code=500, content={"detail": "internal error"})
