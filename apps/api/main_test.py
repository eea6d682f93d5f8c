"""The real entry point in its own process: flags, config, readiness, JSON logs, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from apps.api.testkit import card_for, free_port, logistic_pipeline, register, wait_for
from churn.features.schema import feature_specs


def test_main_serves_the_production_model_and_logs_json(tmp_path: Path) -> None:
    specs = feature_specs()
    version = register(tmp_path, logistic_pipeline(specs), card_for(specs))
    config = tmp_path / "config.yaml"
    config.write_text(f"paths:\n  root: {tmp_path}\n")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("CHURN_DATA_ROOT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.api.main", "--host", "127.0.0.1", "--port", str(port), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
            def ready() -> bool:
                try:
                    return client.get("/ready").status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_for(ready, timeout=30), "API did not become ready"
            assert client.get("/ready").json()["model_version"] == version
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown
    assert process.returncode in (0, -signal.SIGTERM), stderr[-2000:]
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    events = [line["event"] for line in lines]
    assert "api_config" in events and "model_loaded" in events and "api_stopped" in events
    assert all({"ts", "level", "event"} <= set(line) for line in lines)
