"""The HTTP server: uvicorn + httptools, with the connection-level limits uvicorn lacks.

Why not plain uvicorn: it bounds neither the size nor the number of request headers on the
httptools parser, nor how long a client may take to send them (an idle or trickling
connection stays open forever, a 32 MB unfinished header is buffered), and it answers and
logs malformed HTTP without counting it. Why not another server (requirements.in has the
measurements): granian enforces header size, count and read time in Rust but offers no hook
to count what it refused and has no body timeout; hypercorn is pure Python.

So `limited_protocol` subclasses uvicorn's httptools protocol, each limit from `ApiSettings`
with its own answer and a `churn_api_limit_hits_total{limit}` count:

- `max_connections`: one more connection is answered 503 and closed;
- `max_header_bytes` (request line + headers) and `max_headers`: 431 and close;
- `header_timeout_seconds`: from connection (or the first byte of the next request) to the
  end of its headers; 408 and close (idle new connections are closed without an answer);
- `keepalive_timeout_seconds`: idle time between requests (uvicorn's own timer, counted);
- `body_timeout_seconds`: enforced where the body is read (middleware.BodyLimitMiddleware,
  408), and here the connection is closed when a response was sent before its body ended.

Malformed HTTP is answered 400 (JSON, like every answer), counted in
`churn_api_protocol_errors_total` and logged at most once per
`protocol_error_log_interval_seconds` with the number of lines held back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from apps.api.logs import log_event
from apps.api.metrics import ApiMetrics
from churn.config.settings import ApiSettings


class RateLimitedLog:
    """One log line per `interval` seconds for a noisy event, carrying how many were held back.

    Why: every malformed request used to write a line, so a scanner could fill the log volume.
    """

    def __init__(self, event: str, interval: float) -> None:
        self.event = event
        self.interval = interval
        self._last = -float("inf")
        self._held = 0
        self._lock = threading.Lock()

    def __call__(self, **fields: Any) -> bool:
        """Log now (True) or count the line as held back (False)."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval:
                self._held += 1
                return False
            held, self._held, self._last = self._held, 0, now
        log_event(self.event, logging.WARNING, suppressed_since_last=held, **fields)
        return True


def error_response(status: int, reason: bytes, detail: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON `{"detail": ...}` body that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))


HEADER_TOO_LARGE = 431, b"Request Header Fields Too Large"
TIMEOUT = 408, b"Request Timeout"
UNAVAILABLE = 503, b"Service Unavailable"
BAD_REQUEST = 400, b"Bad Request"


class CoalescingTransport:
    """A connection's transport whose writes during one turn of the event loop go out in one send.

    Why: uvicorn writes a response's head and its body separately, two send() system calls
    per request; on loopback each also runs the peer's receive path, and the two were about
    a third of a /predict's server CPU (bench/api_bench.py). Writes are joined and handed to
    the real transport at the end of the turn (or at once before a close), in order.
    Everything else is the real transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that was already answered."""


def limited_protocol(api: ApiSettings, metrics: ApiMetrics) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `api`'s connection limits, counted in `metrics`."""
    log_protocol_error = RateLimitedLog("http_protocol_error", api.protocol_error_log_interval_seconds)

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """Per connection: header bytes/count/time, connection count, protocol errors."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0  # bytes received for the current request's head so far
            self._head_started = False  # a byte of the current request arrived
            self._head_size = 0  # request line + header bytes the parser reported
            self._body_done = True
            self._counted = False  # in churn_api_open_connections
            self._refused = False  # answered by a limit: ignore what the parser says next

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
            if len(self.connections) > api.max_connections:
                metrics.count_limit("max_connections")
                self._refuse(UNAVAILABLE, f"more than {api.max_connections} open connections")
                return
            metrics.connections.inc()
            self._counted = True
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._counted:
                metrics.connections.dec()
                self._counted = False
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            if self._head_timer is None and self._between_requests():
                self._arm_head_timer()  # the next request's head must arrive within the limit
            self._head_started = True
            if self._refused:
                return
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError as exc:
                if self._refused:  # a limit raised _Refused inside a callback and answered
                    return
                metrics.protocol_errors.inc()
                log_protocol_error(error=str(exc)[:200])
                self._refuse(BAD_REQUEST, "malformed HTTP request")
                return
            if self._head_timer is not None:  # still inside a head: all of `data` was head
                self._head_bytes += len(data)
                if self._head_bytes > api.max_header_bytes:
                    self._header_too_large("max_header_bytes", f"request headers over {api.max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_size = 0
            self._body_done = False

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._head_size += len(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self._head_size += len(name) + len(value) + 4

        def on_headers_complete(self) -> None:
            self._cancel_head_timer()
            if self._head_size > api.max_header_bytes:
                self._header_too_large("max_header_bytes", f"request headers over {api.max_header_bytes} bytes")
                raise _Refused
            if len(self.headers) > api.max_headers:
                self._header_too_large("max_headers", f"more than {api.max_headers} request headers")
                raise _Refused
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._body_done = True
            super().on_message_complete()

        def on_response_complete(self) -> None:
            if not self._body_done and not self.transport.is_closing():
                self.transport.close()  # answered before its body ended: do not wait for the rest
            super().on_response_complete()

        def timeout_keep_alive_handler(self) -> None:
            if not self.transport.is_closing():
                metrics.count_limit("keepalive_timeout")
            super().timeout_keep_alive_handler()

        def _between_requests(self) -> bool:
            return self.cycle is None or (self.cycle.response_complete and self._body_done)

        def _arm_head_timer(self) -> None:
            self._head_bytes, self._head_started = 0, False
            self._head_timer = self.loop.call_later(api.header_timeout_seconds, self._head_timeout)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            metrics.count_limit("header_timeout")
            if self._head_started:
                self._refuse(TIMEOUT, f"request headers not received within {api.header_timeout_seconds} s")
            else:
                self.transport.close()  # never sent a byte: nobody to answer

        def _header_too_large(self, limit: str, detail: str) -> None:
            metrics.count_limit(limit)
            self._refuse(HEADER_TOO_LARGE, detail)

        def _refuse(self, status: tuple[int, bytes], detail: str) -> None:
            self._refused = True
            self._cancel_head_timer()
            if not self.transport.is_closing():
                self.transport.write(error_response(status[0], status[1], detail))
                self.transport.close()

    return LimitedHttpToolsProtocol


def server_config(app: Any, api: ApiSettings, metrics: ApiMetrics, host: str, port: int) -> uvicorn.Config:
    """The one uvicorn configuration of the API (main.py, tests and the bench use it)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=limited_protocol(api, metrics),
        ws="none",  # no WebSocket routes; "auto" tries to import two libraries the image lacks
        loop="asyncio",  # "auto" tries uvloop first (not installed: README, Benchmarks)
        timeout_keep_alive=api.keepalive_timeout_seconds,  # type: ignore[arg-type] (call_later takes a float)
        backlog=min(2048, api.max_connections * 2),
        log_config=None,  # keep our JSON handler
        access_log=False,  # per-request lines cost throughput; metrics count requests instead
        server_header=False,
        date_header=True,
        lifespan="on",
    )
