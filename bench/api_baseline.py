"""The benchmark's baseline server: the reference project's serving design, made fair.

The reference served `predict_proba` of the pickled scikit-learn pipeline behind a plain
FastAPI endpoint that builds a one-row pandas DataFrame per request. This keeps that design
and gives it what the churn API has, so the comparison measures the design, not a handicap:
- the same production model (the registry's alias, loaded with joblib as the reference did);
- thread pools capped as the API's are: FastAPI's sync endpoints run in at most
  `api.batch_workers` threads (the API's batch pool), and OpenMP/BLAS get one thread each
  (the benchmark sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS for both servers; an
  oversubscribed OpenMP spins, which made the first baseline's p99 seconds long);
- uvicorn with the same accelerators (httptools when importable), one worker.
It lives only in bench/: `bazel run //bench:api_bench` starts it as a process, and
`//bench:baseline_image` packages it like the API's image (for the image-size figure).

Usage: api_baseline --root DATA_ROOT --port PORT
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio.to_thread
import pandas as pd
import uvicorn
from fastapi import FastAPI

from churn.config.settings import load_config
from churn.features.schema import encode_records, feature_specs
from churn.registry.registry import ModelRegistry


def baseline_app(root: str) -> FastAPI:
    """The reference-style app over the production alias of `root`."""
    settings = load_config()
    registry = ModelRegistry(root)
    loaded = registry.load(registry.get_alias("production") or "")
    specs = feature_specs(tuple(settings.features.windows_days))
    names = [s.name for s in specs]

    @asynccontextmanager
    async def cap_threads(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api.batch_workers
        yield

    app = FastAPI(lifespan=cap_threads)

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(payload: dict[str, Any]) -> dict[str, Any]:
        frame = pd.DataFrame([payload["features"]])[names]
        matrix = encode_records(specs, frame.to_dict("records"))
        risk = float(loaded.model.predict_proba(matrix)[0, 1])
        return {"user_id": payload.get("user_id"), "churn_risk": risk, "model_version": loaded.version}

    @app.post("/predict/batch")
    def predict_batch(payload: dict[str, Any]) -> dict[str, Any]:
        frame = pd.DataFrame([item["features"] for item in payload["instances"]])[names]
        matrix = encode_records(specs, frame.to_dict("records"))
        risks = loaded.model.predict_proba(matrix)[:, 1]
        return {"predictions": [{"churn_risk": float(r)} for r in risks], "model_version": loaded.version}

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="data root whose production alias is served")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(baseline_app(args.root), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
