"""Test helpers: real tiny models in a real registry, and a real uvicorn server on loopback.

Why real: the contract under test is "a promoted model is picked up over HTTP without
dropping requests"; fakes would test the fakes. A model trains in ~50 ms on random rows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import uvicorn
from fastapi import FastAPI
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from apps.api.server import server_config
from apps.api.settings import ServingConfig
from churn.compiled.check_rows import valid_rows
from churn.compiled.scorer import SCORER_FILE, PortableExport, export_portable
from churn.compiled.testing import boosting_model, logistic_pipeline, training_data  # noqa: F401 (re-exported)
from churn.config.settings import ApiSettings
from churn.features.schema import FeatureSpec, feature_specs, schema_from_json, schema_to_json
from churn.portable.scorer import LinearForm, scorer_bytes, sha256_hex
from churn.registry.registry import ModelRegistry
from tools.testing.loopback import free_port  # noqa: F401 (re-exported)
from tools.testing.metrics import metric_value  # noqa: F401 (re-exported)


def serving_config_for(root: Path, **api: Any) -> ServingConfig:
    """A config on `root` with a fast reload interval for tests."""
    settings = replace(ApiSettings(reload_interval_seconds=0.1), **api)
    return ServingConfig(data_root=root, specs=feature_specs(), api=settings)


def card_for(specs: Sequence[FeatureSpec], kind: str = "logistic_regression", threshold: float = 0.5) -> dict[str, Any]:
    return {"feature_schema": schema_to_json(specs), "model_kind": kind, "metrics": {"pr_auc": 0.5}, "threshold": threshold}


def register(root: Path, model: Any, card: dict[str, Any], promote: bool = True,
             scorer: PortableExport | None = None) -> str:
    """Register `model` with its portable scorer (as training does, checked on schema rows)
    and (by default) force it to production, like `ml_jobs promote --force`.

    `scorer` replaces the exported one (e.g. a form that predicts NaN, which no real model
    exports)."""
    specs = schema_from_json(card["feature_schema"])
    export = scorer or export_portable(model, valid_rows(specs), {"feature_schema": card["feature_schema"]})
    registry = ModelRegistry(root)
    version = registry.register(model, {**card, "scorer": export.card_entry},
                                files={export.card_entry["file"]: export.data})
    if promote:
        registry.promote(version, reason="test", gate=None)
    return version


@dataclass
class LiveServer:
    """A uvicorn server in a thread on 127.0.0.1; `url` is its base URL."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_server(app: FastAPI, timeout: float = 10.0) -> LiveServer:
    """The app behind the production server configuration (apps/api/server.py), on loopback."""
    port = free_port()
    server = uvicorn.Server(server_config(app, app.state.api, app.state.metrics, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return LiveServer(server, thread, f"http://127.0.0.1:{port}")


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout`; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def overflowing_model(specs: Sequence[FeatureSpec]) -> Pipeline:
    """Imputer + a real LogisticRegression whose weights (+1e300, -1e300 on two unbounded
    features) turn valid but extreme inputs (1e9, api.max_feature_value) into inf - inf = NaN."""
    unbounded = [i for i, s in enumerate(specs) if s.kind == "numeric" and s.maximum is None and not s.nullable]
    model = LogisticRegression()
    model.classes_ = np.array([0, 1])
    model.coef_ = np.zeros((1, len(specs)))
    model.coef_[0, unbounded[0]], model.coef_[0, unbounded[1]] = 1e300, -1e300
    model.intercept_ = np.zeros(1)
    model.n_features_in_ = len(specs)
    imputer = SimpleImputer(strategy="constant", fill_value=0.0).fit(valid_rows(specs))
    return Pipeline([("impute", imputer), ("clf", model)])


def nan_scorer() -> PortableExport:
    """A portable scorer that reads fine but predicts NaN: must never be served."""
    data = scorer_bytes(LinearForm(float("nan")), {})
    return PortableExport(data, {"file": SCORER_FILE, "kind": "linear", "sha256": sha256_hex(data)})
