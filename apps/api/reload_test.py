"""Hot reload over real HTTP: swaps drop no request, bad versions are never served.

Every test runs its own uvicorn on 127.0.0.1 with a 0.1 s alias poll, on its own data root.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from apps.api.app import create_app
from apps.api.samples import typical_row
from apps.api.testkit import (
    LiveServer,
    nan_scorer,
    boosting_model,
    card_for,
    logistic_pipeline,
    metric_value,
    register,
    serving_config_for,
    start_server,
    wait_for,
)
from churn.features.schema import feature_specs
from churn.registry.registry import ModelRegistry
from churn.storage.files import atomic_write_json

SPECS = feature_specs()
REQUEST = {"user_id": 1, "features": typical_row(SPECS)}


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture()
def server(root: Path) -> Iterator[LiveServer]:
    live = start_server(create_app(serving_config_for(root)))
    yield live
    live.stop()


def _served_version(client: httpx.Client) -> str | None:
    response = client.get("/ready")
    return response.json().get("model_version") if response.status_code == 200 else None


def _reloads(client: httpx.Client, result: str) -> float | None:
    return metric_value(client.get("/metrics").text, f'churn_model_reloads_total{{result="{result}"}}')


def _point_alias_at(root: Path, version: str) -> None:
    """Write the production pointer directly (as a hand edit or a buggy job would)."""
    atomic_write_json(ModelRegistry(root).aliases_dir / "production.json", {"version": version})


def test_promotion_under_load_drops_no_request_and_changes_the_version(root: Path, server: LiveServer) -> None:
    first = register(root, logistic_pipeline(SPECS, seed=1), card_for(SPECS))
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    versions: list[str] = []

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                try:
                    response = client.post("/predict", json=REQUEST)
                except httpx.HTTPError as exc:
                    outcomes[f"error {type(exc).__name__}"] += 1
                    continue
                outcomes[str(response.status_code)] += 1
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])

    with httpx.Client(base_url=server.url) as client:
        assert wait_for(lambda: _served_version(client) == first)
        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            assert wait_for(lambda: len(versions) > 50)
            second = register(root, boosting_model(SPECS, seed=2), card_for(SPECS, kind="hist_gradient_boosting"))
            assert wait_for(lambda: bool(versions) and versions[-1] == second)
            seen_before = len(versions)
            assert wait_for(lambda: len(versions) > seen_before + 50)
        finally:
            stop.set()
            thread.join(10)
    assert set(outcomes) == {"200"}, outcomes
    assert set(versions) == {first, second}
    switch = versions.index(second)
    assert all(v == second for v in versions[switch:]), "no request may go back to the old model"


def test_corrupt_model_file_is_never_served_and_counted(root: Path, server: LiveServer) -> None:
    first = register(root, logistic_pipeline(SPECS), card_for(SPECS))
    with httpx.Client(base_url=server.url) as client:
        assert wait_for(lambda: _served_version(client) == first)
        bad = register(root, logistic_pipeline(SPECS, seed=3), card_for(SPECS), promote=False)
        model_file = ModelRegistry(root).version_dir(bad) / "scorer.npz"
        model_file.write_bytes(b"PK\x03\x04 definitely not a scorer")
        _point_alias_at(root, bad)
        assert wait_for(lambda: _reloads(client, "failed") == 1.0)
        assert client.get("/ready").status_code == 200
        assert _served_version(client) == first
        assert client.post("/predict", json=REQUEST).json()["model_version"] == first
        assert _reloads(client, "failed") == 1.0, "one bad promotion is counted once, not per poll"


def test_model_that_predicts_nan_is_never_served(root: Path, server: LiveServer) -> None:
    first = register(root, logistic_pipeline(SPECS), card_for(SPECS))
    with httpx.Client(base_url=server.url) as client:
        assert wait_for(lambda: _served_version(client) == first)
        register(root, logistic_pipeline(SPECS, seed=2), card_for(SPECS), scorer=nan_scorer())
        assert wait_for(lambda: _reloads(client, "failed") == 1.0)
        assert _served_version(client) == first


def test_model_with_another_feature_schema_is_rejected(root: Path, server: LiveServer) -> None:
    first = register(root, logistic_pipeline(SPECS), card_for(SPECS))
    with httpx.Client(base_url=server.url) as client:
        assert wait_for(lambda: _served_version(client) == first)
        other = feature_specs((7, 14))
        register(root, logistic_pipeline(other), card_for(other))
        assert wait_for(lambda: _reloads(client, "rejected") == 1.0)
        assert _served_version(client) == first
        assert client.get("/model").json()["version"] == first


def test_starts_without_a_model_then_becomes_ready_on_promotion(root: Path, server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/live").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready" and "no production model" in ready.json()["reason"]
        for method, path, payload in (("POST", "/predict", REQUEST), ("GET", "/model", None),
                                      ("POST", "/predict/batch", {"instances": [REQUEST]})):
            response = client.request(method, path, json=payload)
            assert response.status_code == 503, (path, response.text)
            assert "no model loaded" in response.json()["detail"]
        version = register(root, logistic_pipeline(SPECS), card_for(SPECS))
        assert wait_for(lambda: client.get("/ready").status_code == 200)
        assert client.post("/predict", json=REQUEST).json()["model_version"] == version
        assert _reloads(client, "loaded") == 1.0
        assert metric_value(client.get("/metrics").text, f'churn_model_info{{version="{version}"}}') == 1.0


def _alias_served(client: httpx.Client) -> float | None:
    return metric_value(client.get("/metrics").text, 'churn_model_alias_served{alias="production"}')


def test_a_repaired_version_is_served_without_touching_the_alias(root: Path, server: LiveServer) -> None:
    """Corrupt file -> 503 whose reason holds no path -> file repaired -> served; alias vs served exported."""
    bad = register(root, logistic_pipeline(SPECS), card_for(SPECS), promote=False)
    model_file = ModelRegistry(root).version_dir(bad) / "scorer.npz"
    good_bytes = model_file.read_bytes()
    model_file.write_bytes(b"PK\x03\x04 definitely not a scorer")
    with httpx.Client(base_url=server.url) as client:
        _point_alias_at(root, bad)
        assert wait_for(lambda: _reloads(client, "failed") == 1.0)
        for response in (client.get("/ready"), client.post("/predict", json=REQUEST)):
            assert response.status_code == 503
            text = response.text
            assert str(root) not in text and "/tmp" not in text and ".npz" not in text, text
        assert _alias_served(client) == 0.0
        text = client.get("/metrics").text
        assert metric_value(text, f'churn_model_alias_info{{alias="production",version="{bad}"}}') == 1.0
        model_file.write_bytes(good_bytes)  # the alias file is not touched
        assert wait_for(lambda: _served_version(client) == bad)
        assert _alias_served(client) == 1.0


def test_every_alias_change_and_disappearance_is_logged(root: Path, server: LiveServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="churn.api")
    first = register(root, logistic_pipeline(SPECS), card_for(SPECS))
    with httpx.Client(base_url=server.url) as client:
        assert wait_for(lambda: _served_version(client) == first)
        (ModelRegistry(root).aliases_dir / "production.json").unlink()
        assert wait_for(lambda: any(r.getMessage() == "model_alias_missing" for r in caplog.records))
        assert _served_version(client) == first, "the last good model keeps serving"
        text = client.get("/metrics").text
        assert metric_value(text, 'churn_model_alias_info{alias="production",version=""}') == 1.0
        assert _alias_served(client) == 0.0
        second = register(root, logistic_pipeline(SPECS, seed=2), card_for(SPECS))
        assert wait_for(lambda: _served_version(client) == second)
    changes = [r.fields for r in caplog.records if r.getMessage() == "model_alias_changed"]  # type: ignore[attr-defined]
    assert [(c["previous"], c["version"]) for c in changes] == [(None, first), (None, second)]
