"""Pure ASGI middlewares: request metrics and the request-body size limit.

Why pure ASGI and not `BaseHTTPMiddleware`: the latter runs each request through extra
tasks and memory streams and costs tens of microseconds per request, a large share of a
sub-millisecond prediction. These wrap `send`/`receive` only.
"""

from __future__ import annotations

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
    """Counts and times every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before answering, the server answers 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = route_template(scope)
            self.metrics.observe_request(scope["method"], route, status, time.perf_counter() - start)


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
    """Answers 413 to a request body over `max_bytes` before the app parses it.

    Why buffer here: FastAPI reads the whole body before validation anyway, and a limit
    enforced while streaming (Content-Length may be absent with chunked encoding) must be
    able to answer 413 rather than a parsing error.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._too_large(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, send: Send) -> None:
        payload = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
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
