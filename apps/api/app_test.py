"""Endpoints, model card, OpenAPI, metrics and logs of a real server (fixture `served`)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.api.logs import JsonFormatter
from apps.api.metrics import ApiMetrics
from apps.api.samples import typical_row
from apps.api.testkit import boosting_model, card_for, free_port, metric_value, register, wait_for
from churn.features.schema import feature_names, feature_specs, schema_to_json

SPECS = feature_specs()
ROW = typical_row(SPECS)


def test_live_and_ready(client: httpx.Client, served: Any) -> None:
    assert client.get("/live").json() == {"status": "alive"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == served[1]


def test_predict_returns_risk_version_threshold_label(client: httpx.Client, served: Any) -> None:
    body = client.post("/predict", json={"user_id": 42, "features": ROW}).json()
    assert set(body) == {"user_id", "churn_risk", "model_version", "threshold", "label"}
    assert body["user_id"] == 42 and body["model_version"] == served[1] and body["threshold"] == 0.5
    assert 0.0 <= body["churn_risk"] <= 1.0
    assert body["label"] == int(body["churn_risk"] >= body["threshold"])
    assert client.post("/predict", json={"features": ROW}).json()["user_id"] is None


def test_batch_keeps_order_and_matches_single_predictions(client: httpx.Client) -> None:
    rows = [dict(ROW, logins_7d=float(n), active_days_7d=float(n % 8)) for n in range(20)]
    batch = client.post("/predict/batch", json={"instances": [{"user_id": i, "features": r}
                                                              for i, r in enumerate(rows)]})
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert [p["user_id"] for p in predictions] == list(range(20))
    singles = [client.post("/predict", json={"features": r}).json()["churn_risk"] for r in rows]
    assert [p["churn_risk"] for p in predictions] == pytest.approx(singles, abs=1e-12)
    assert len({p["churn_risk"] for p in predictions}) > 1, "different inputs, different risks"


def test_model_endpoint_serves_the_card(client: httpx.Client, served: Any) -> None:
    card = client.get("/model").json()
    assert card["version"] == served[1]
    assert card["feature_schema"] == schema_to_json(SPECS)
    assert card["threshold"] == 0.5


def test_openapi_request_schema_is_generated_from_the_feature_schema(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    features = schemas["Features"]
    assert list(features["properties"]) == feature_names(SPECS)
    assert set(features["required"]) == set(feature_names(SPECS))
    assert features["additionalProperties"] is False
    assert features["properties"]["country"]["enum"] == list(SPECS[1].categories)
    assert features["properties"]["active_days_7d"]["maximum"] == 7
    nullable = features["properties"]["quiz_mean_7d"]["anyOf"]
    assert {"type": "null"} in nullable
    assert schemas["BatchPredictRequest"]["properties"]["instances"]["maxItems"] == 50


def test_metrics_use_route_templates_and_bounded_labels(client: httpx.Client) -> None:
    client.post("/predict", json={"features": ROW})
    for n in range(5):
        client.get(f"/no/such/path/{n}")
    client.request("PATCH", "/predict")
    text = client.get("/metrics").text
    assert metric_value(text, 'churn_api_requests_total{method="POST",route="/predict",status="200"}') >= 1
    assert metric_value(text, 'churn_api_requests_total{method="GET",route="<unmatched>",status="404"}') >= 5
    assert metric_value(text, 'churn_api_requests_total{method="PATCH",route="/predict",status="405"}') >= 1
    assert "/no/such/path" not in text
    assert metric_value(text, "churn_api_predictions_total") >= 1
    assert metric_value(text, 'churn_api_predicted_risk_bucket{le="0.5"}') is not None
    assert metric_value(text, 'churn_api_request_duration_seconds_bucket{le="0.0001",method="POST",route="/predict"}') \
        is not None
    assert metric_value(text, 'churn_model_reloads_total{result="failed"}') == 0.0


def test_unknown_methods_share_one_label() -> None:
    """h11 passes any method token to the app (httptools refuses them): still one label."""
    metrics = ApiMetrics()
    for method in ("BREW", "PROPFIND", "X" * 100):
        metrics.observe_request(method, "/predict", 405, 0.001)
    text = metrics.render().decode()
    assert metric_value(text, 'churn_api_requests_total{method="OTHER",route="/predict",status="405"}') == 3.0
    assert "BREW" not in text


def test_body_limit_is_counted_under_its_route(client: httpx.Client) -> None:
    client.post("/predict", content=b" " * (70 * 1024), headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert metric_value(text, 'churn_api_requests_total{method="POST",route="/predict",status="413"}') >= 1


def test_log_lines_are_json_objects_with_event_and_fields() -> None:
    record = logging.LogRecord("churn.api", logging.INFO, __file__, 1, "model_loaded", None, None)
    record.fields = {"version": "v1", "predictor": "linear"}
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "model_loaded" and line["level"] == "info" and line["version"] == "v1"
    assert line["ts"].endswith("Z")


# What the API image leaves out (tests/images checks the image; this checks the code): the
# training and data stack. All of them are importable in this test (its deps), as in a
# developer's environment, so an import anywhere in the serving path shows up here.
TRAINING_STACK = ("joblib", "matplotlib", "pandas", "pyarrow", "scipy", "sklearn", "threadpoolctl")
# uvicorn re-raises the SIGTERM it handled once it has shut down: a handler that exits lets
# the atexit report run.
ENTRY_POINT = """
import atexit, runpy, signal, sys
stack = set(sys.argv[1].split(","))
atexit.register(lambda: print("imported:", sorted({m.split(".")[0] for m in sys.modules} & stack),
                              "pydantic.v1" if sys.modules.get("pydantic.v1") else "", flush=True))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sys.argv = ["api", "--host", "127.0.0.1", "--port", sys.argv[2]]
runpy.run_module("apps.api.main", run_name="__main__")
"""


def test_the_api_process_never_imports_the_training_stack(tmp_path: Path) -> None:
    """The API's entry point, started as in its image, loads a boosting model, answers every
    route and stops; its interpreter never imported scikit-learn, scipy, joblib, threadpoolctl,
    pandas, pyarrow or matplotlib, although each one is importable here, nor pydantic.v1
    (main.block_pydantic_v1: FastAPI imports it only to rule out v1 models)."""
    assert all(importlib.util.find_spec(name) for name in TRAINING_STACK)  # else the check is void
    register(tmp_path, boosting_model(SPECS), card_for(SPECS))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), CHURN_DATA_ROOT=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", ENTRY_POINT, ",".join(TRAINING_STACK), str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            assert wait_for(lambda: _ready(api), timeout=60), "the API did not become ready"
            assert api.post("/predict", json={"features": ROW}).status_code == 200
            assert api.post("/predict/batch", json={"instances": [{"features": ROW}] * 3}).status_code == 200
            for path in ("/model", "/metrics", "/openapi.json", "/docs", "/redoc"):
                assert api.get(path).status_code == 200, path
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert "imported: [] " in out.splitlines(), f"stdout: {out[-2000:]}\nstderr: {err[-3000:]}"


def _ready(api: httpx.Client) -> bool:
    try:
        return api.get("/ready").status_code == 200
    except httpx.TransportError:
        return False


def test_a_killed_batch_worker_costs_at_most_one_503_then_batches_are_served_again(
        client: httpx.Client, served: Any) -> None:
    """Batches run in forked worker processes; one killed (e.g. for memory) is replaced."""
    pool = served[0].server.config.app.state.batch_pool
    before = pool.pids()
    assert before and os.getpid() not in before
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    batch = {"instances": [{"features": ROW}] * 3}
    statuses = [client.post("/predict/batch", json=batch).status_code for _ in range(3)]
    assert statuses.count(503) <= 1 and statuses[-1] == 200, statuses
    assert pool.pids() and not set(pool.pids()) & set(before)
    for pid in pool.pids():  # forked from a serving process: no copy of a client connection or the port
        sockets = [fd for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")]
        assert not sockets, (pid, sockets)
