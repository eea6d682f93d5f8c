"""POST /predict answered at the ASGI level, without FastAPI's routing and middleware stack.

Why: a single-row prediction costs a few tens of microseconds of numpy; FastAPI's route
matching over every route, its dependency solving, the Request object and two middlewares
cost more than that again, and they capped one worker at about 2,900 req/s
(bench/api_bench.py). The answers are exactly the route's: the body is read by the same
`read_limited_body` (413, 408), the Content-Type checked by the same `is_json` (415), the
answer computed by the same `predict_answer` (200, 422 from `Problems`, 503), the errors
rendered by the same handlers as FastAPI's, and the request counted as `MetricsMiddleware`
counts it (aborted when the client left). FastAPI still declares the route: the OpenAPI
document, other methods (405) and every other path are FastAPI's.

Added as the outermost user middleware, so only Starlette's ServerErrorMiddleware (the JSON
500 of errors.py for a bug) is around it.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException
from starlette.responses import Response

from apps.api.current import CurrentModel
from apps.api.errors import http_error_response, problems_response
from apps.api.metrics import ApiMetrics
from apps.api.middleware import ASGIApp, Receive, Scope, Send, read_limited_body
from apps.api.routes import JSON, is_json, predict_answer
from apps.api.validation import Problems, RequestValidator

PATH = "/predict"
ROUTE = "/predict"  # its route template, as MetricsMiddleware labels it


class PredictFastPath:
    """Answers POST /predict itself; everything else goes to `app` (FastAPI's stack)."""

    def __init__(self, app: ASGIApp, *, current: CurrentModel, metrics: ApiMetrics, validator: RequestValidator,
                 max_bytes: int, timeout: float, max_errors: int) -> None:
        self.app = app
        self.current = current
        self.metrics = metrics
        self.validator = validator
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_errors = max_errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless an answer is sent: the exception goes on to ServerErrorMiddleware
        try:
            status = await self._answer(scope, receive, send)
        finally:
            if status:
                self.metrics.observe_request("POST", ROUTE, status, time.perf_counter() - start)
            else:
                self.metrics.observe_aborted("POST", ROUTE)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Send the answer; its status, or 0 when the client left before one was sent."""
        sent = _StatusOf(send)
        body = await read_limited_body(scope, receive, sent, self.metrics, "max_predict_body_bytes",
                                       self.max_bytes, self.timeout)
        if body is None:
            return sent.status  # 413 / 408 answered there, or 0: the client left
        if not is_json(_header(scope, b"content-type")):  # after the body limits, as on FastAPI's path
            return await self._send_error(HTTPException(415, detail=f"expected Content-Type {JSON}"),
                                          scope, receive, send)
        try:
            payload = predict_answer(body, self.current, self.metrics, self.validator)
        except Problems as exc:
            answer = problems_response(exc.problems, exc.count, self.metrics, self.max_errors)
            return await _send(answer, scope, receive, send)
        except HTTPException as exc:
            return await self._send_error(exc, scope, receive, send)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(payload)), (b"content-type", JSON.encode())]})
        await send({"type": "http.response.body", "body": payload})
        return 200

    async def _send_error(self, exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> int:
        return await _send(http_error_response(exc), scope, receive, send)


class _StatusOf:
    """A `send` that remembers the status it sent (0: none)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


async def _send(response: Response, scope: Scope, receive: Receive, send: Send) -> int:
    await response(scope, receive, send)
    return response.status_code


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (as Starlette's `headers.get`), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None

