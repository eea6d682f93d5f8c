"""Endpoints, model card, OpenAPI, metrics and logs of a real server (fixture `served`)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest

from apps.api.logs import JsonFormatter
from apps.api.metrics import ApiMetrics
from apps.api.samples import typical_row
from apps.api.testkit import metric_value
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


@pytest.mark.skipif(importlib.util.find_spec("pandas") is not None,
                    reason="pandas is installed here and scikit-learn imports it when present; "
                           "test_api_serves_with_pandas_unavailable covers this environment")
def test_serving_imports_no_pandas(client: httpx.Client) -> None:
    """Under Bazel the API's runfiles hold no pandas: importing and serving must not need it."""
    assert client.post("/predict", json={"features": ROW}).status_code == 200
    assert "pandas" not in sys.modules


def test_api_serves_with_pandas_unavailable(tmp_path: Any) -> None:
    """In a fresh interpreter where `import pandas` fails, the API loads a model and serves."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class NoPandas(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "pandas":
                    raise ImportError("pandas is not available to the API")
        sys.meta_path.insert(0, NoPandas())
        from pathlib import Path
        import httpx
        from apps.api.app import create_app
        from apps.api.samples import typical_row
        from apps.api.testkit import *
        root = Path({str(tmp_path)!r})
        specs = feature_specs()
        register(root, boosting_model(specs), card_for(specs))
        server = start_server(create_app(serving_config_for(root)))
        with httpx.Client(base_url=server.url) as client:
            assert wait_for(lambda: client.get("/ready").status_code == 200)
            status = client.post("/predict", json={{"features": typical_row(specs)}}).status_code
        server.stop()
        print(status, [m for m in sys.modules if m.split(".")[0] == "pandas"])
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "200 []"
