"""Pure ASGI middlewares: request metrics and the request-body size limit.

Why pure ASGI and not `BaseHTTPMiddleware`: the latter runs each request through extra
tasks and memory streams and costs tens of microseconds per request, a large share of a
sub-millisecond prediction. These wrap `send`/`receive` only.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable, MutableMapping

from starlette.routing import Match

from apps.api.metrics import UNMATCHED_ROUTE, ApiMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status.

    A request whose client disconnected before it was answered (the server's `receive`
    said `http.disconnect`) is counted as aborted, not under a status nobody sent.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0  # no answer started yet
        disconnected = False

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receive_watching() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        try:
            await self.app(scope, receive_watching, send_with_status)
        finally:
            route = route_template(scope)
            if status == 0 and disconnected:
                self.metrics.observe_aborted(scope["method"], route)
            else:  # status 0 without a disconnect: the app failed and the server answers 500
                self.metrics.observe_request(scope["method"], route, status or 500, time.perf_counter() - start)


def route_template(scope: Scope) -> str:
    """The matched route's path template, or UNMATCHED_ROUTE (never the raw path)."""
    route = scope.get("route")
    if route is None:  # answered before routing (e.g. 413): match it ourselves
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, child_scope = candidate.matches(scope)
            if match == Match.FULL:  # included routers report the inner route in child_scope
                route = child_scope.get("route", candidate)
                break
    return getattr(route, "path", None) or UNMATCHED_ROUTE


class BodyLimitMiddleware:
    """Reads a request body within a size limit and a time limit before the app parses it.

    413 over the size limit of the route (`limits`: exact path -> (api key, bytes); any other
    path gets `default`), 408 when the body has not arrived `timeout` seconds after its
    headers. Why buffer here: FastAPI reads the whole body before validation anyway, and a
    limit enforced while streaming (Content-Length may be absent with chunked encoding)
    must be able to answer rather than fail inside a parser. Each hit is counted under its
    `api.*` key in `churn_api_limit_hits_total`.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, limits: dict[str, tuple[str, int]],
                 default: tuple[str, int], timeout: float) -> None:
        self.app = app
        self.metrics = metrics
        self.limits = limits
        self.default = default
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit, max_bytes = self.limits.get(scope["path"], self.default)
        body = await read_limited_body(scope, receive, send, self.metrics, limit, max_bytes, self.timeout)
        if body is not None:
            await self.app(scope, _replay(body, receive), send)


async def read_limited_body(scope: Scope, receive: Receive, send: Send, metrics: ApiMetrics, limit: str,
                            max_bytes: int, timeout: float) -> bytes | None:
    """The whole request body, or None when it was answered here (413, 408) or the client left.

    413 over `max_bytes` (declared or streamed), 408 when the body has not arrived `timeout`
    seconds after its headers; each hit counted under its `api.*` key `limit` (or
    "body_timeout"). The one body reader of BodyLimitMiddleware and the /predict fast path.
    """
    if _declared_length(scope) > max_bytes:
        await _too_large(send, metrics, limit, max_bytes)
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] != "http.request":  # client went away
                    return None
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    await _too_large(send, metrics, limit, max_bytes)
                    return None
                if not message.get("more_body", False):  # usually at once: the body came with its headers
                    return chunk if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        metrics.count_limit("body_timeout")
        await _answer(send, 408, f"request body not received within {timeout:g} s")
        return None


async def _too_large(send: Send, metrics: ApiMetrics, limit: str, max_bytes: int) -> None:
    metrics.count_limit(limit)
    await _answer(send, 413, f"request body larger than {max_bytes} bytes")


async def _answer(send: Send, status: int, detail: str) -> None:
    """A JSON error answer that also closes the connection (the rest of the body is unwanted)."""
    payload = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": payload})


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the buffered body once, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
