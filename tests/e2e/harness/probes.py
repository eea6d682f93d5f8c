"""The API seen from outside: probe polling, a request built from /model, a load thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from apps.api.samples import typical_row
from churn.features.schema import schema_from_json
from harness.net import Response, http, wait_until


def wait_status(base: str, path: str, status: int, deadline_s: float, on_timeout=None,
                alive: Callable[[], str | None] | None = None) -> Response:
    """Poll GET base+path until it answers `status` (what a kubelet does with an httpGet probe).

    `alive()` (called after a failed poll, at most once a second) returns a reason to give up
    at once, e.g. the container has exited.
    """
    last_check = [0.0]

    def probe() -> Response | None:
        try:
            resp = http("GET", base + path, timeout=2)
            if resp.status == status:
                return resp
        except OSError:
            pass
        if alive is not None and time.monotonic() - last_check[0] > 1.0:
            last_check[0] = time.monotonic()
            dead = alive()
            if dead:
                raise RuntimeError(f"GET {path}: giving up, {dead}" + (f"\n{on_timeout()}" if on_timeout else ""))
        return None
    return wait_until(f"GET {path} -> {status}", probe, deadline_s, 0.25, on_timeout)


def predict_body(card: dict[str, Any], user_id: int = 42) -> dict[str, Any]:
    """A POST /predict body with every feature of the serving model's schema (GET /model)."""
    features = card.get("feature_schema") or card.get("features")
    if not features or not isinstance(features, list):
        raise AssertionError(f"GET /model card has no 'feature_schema' list; keys: {sorted(card)}")
    return {"user_id": user_id, "features": typical_row(schema_from_json(features))}


@dataclass
class PredictPoller:
    """A client thread calling POST /predict back to back; records every answer and failure."""

    base: str
    body: dict[str, Any]
    timeout: float = 5.0
    versions: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="predict-poller", daemon=True)

    def start(self) -> "PredictPoller":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.requests += 1
            try:
                resp = http("POST", self.base + "/predict", self.body, timeout=self.timeout)
                if resp.status != 200:
                    self.failures.append(f"HTTP {resp.status}: {resp.text[:300]}")
                else:
                    version = str(resp.json()["model_version"])
                    if not self.versions or self.versions[-1][1] != version:
                        self.versions.append((time.monotonic(), version))
            except Exception as exc:  # connection errors count as failed requests
                self.failures.append(repr(exc))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def seen(self) -> list[str]:
        return [v for _, v in self.versions]
