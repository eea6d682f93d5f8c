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


LEAN_START = """
import json, sys
from apps.api import main
main.block_pydantic_v1()
main.disable_pydantic_plugins()
main.import_fastapi_deferring_openapi_models()
uvicorn = main.import_uvicorn_server()
from apps.api.app import create_app
from apps.api.server import server_config
import fastapi.openapi.models as models
deferred = not models.OpenAPI.__pydantic_complete__
print(json.dumps({
    "deferred": deferred,
    "loaded": sorted(name for name in ("click", "uvicorn.main", "uvicorn.supervisors", "numpy.ma", "yaml")
                     if sys.modules.get(name) is not None),
    "server": [uvicorn.Config.__module__, uvicorn.Server.__module__],
    "plugins": __import__("os").environ["PYDANTIC_DISABLE_PLUGINS"],
    "document": models.OpenAPI.model_validate({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}}).openapi,
}))
"""


def test_the_start_imports_only_what_serving_needs() -> None:
    """The start-time savings of main.py hold (README, Benchmarks): FastAPI's OpenAPI models
    are built on first use, uvicorn's command line and supervisors are not imported, and the
    deferred models still validate a document when asked."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    result = subprocess.run([sys.executable, "-c", LEAN_START], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads(result.stdout)
    assert facts["deferred"], "FastAPI's OpenAPI models were built at import"
    assert facts["loaded"] == ["yaml"], facts["loaded"]  # yaml: the config file is YAML
    assert facts["server"] == ["uvicorn.config", "uvicorn.server"]
    assert facts["plugins"] == "__all__"
    assert facts["document"] == "3.1.0"
