"""Loopback ports and plain-HTTP calls (urllib: the test must not depend on a client library)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(method: str, url: str, body: Any = None, timeout: float = 5.0,
         headers: dict[str, str] | None = None) -> Response:
    """One request; any HTTP status is returned (not raised); network errors raise OSError."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def wait_until(what: str, probe: Callable[[], T | None], deadline_s: float, interval_s: float = 0.25,
               on_timeout: Callable[[], str] | None = None) -> T:
    """Call `probe` until it returns something truthy; TimeoutError naming `what` after the deadline."""
    end = time.monotonic() + deadline_s
    last: object = None
    while True:
        try:
            result = probe()
            if result:
                return result
            last = result
        except OSError as err:  # connection refused/reset while the server starts
            last = err
        if time.monotonic() > end:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise TimeoutError(f"{what}: not within {deadline_s:.0f} s (last: {last!r}){extra}")
        time.sleep(interval_s)
