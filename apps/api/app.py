"""The application factory: wires config, registry, model current, reloader, metrics, routes.

Why a factory: tests and the bench build apps on temporary data roots in one process; the
production entry point (main.py) builds exactly one from the config it read at startup.
"""

from __future__ import annotations

import dataclasses
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

from fastapi import FastAPI
from prometheus_client.registry import Collector

from apps.api.docs import install_docs
from apps.api.errors import install_error_handlers
from apps.api.fastpath import PredictFastPath
from apps.api.batchwork import BatchPool
from apps.api.current import CurrentModel
from apps.api.logs import log_event
from apps.api.metrics import ApiMetrics
from apps.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from apps.api.openapi import install_openapi
from apps.api.reloader import PRODUCTION, ModelReloader
from apps.api.routes import add_routes
from apps.api.schemas import build_request_schemas
from apps.api.settings import ServingConfig
from apps.api.validation import RequestValidator
from churn.features.schema import feature_names
from churn.registry.registry import ModelRegistry

DESCRIPTION = """Churn risk of e-learning users, from the model in the registry's `production` alias.

The request schema is generated from the feature schema the model was trained with; a newly
promoted model is picked up without a restart (see `/model` for the one serving now)."""


# Metrics are Prometheus (metrics.py); FastAPI's native OpenTelemetry hooks would only add
# per-request work (provider look-ups on every request even when nothing is configured).
NO_OPENTELEMETRY: dict[str, bool] = {"tracing": False, "metrics": False, "logs": False}


def create_app(config: ServingConfig, *, watch: bool = True, collectors: Sequence[Collector] = ()) -> FastAPI:
    """A ready-to-serve app; with `watch`, the reloader runs for the app's lifetime.

    `collectors`: extra Prometheus collectors exposed on /metrics beside the API's own (the
    place for other modules' metrics, e.g. facts of the batch jobs read from the data root).
    """
    api = config.api
    registry = ModelRegistry(config.registry_root)
    current = CurrentModel()
    metrics = ApiMetrics()
    for collector in collectors:
        metrics.register(collector)
    reloader = ModelReloader(
        registry,
        registry.aliases_dir / f"{PRODUCTION}.json",
        config.specs,
        current,
        metrics,
        config.api.reload_interval_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_event("api_starting", data_root=str(config.data_root), features=len(config.specs),
                  limits=dataclasses.asdict(api))
        batch_pool.start()  # forks: before the reloader's thread exists
        if watch:
            reloader.start()
        yield
        reloader.stop()
        batch_pool.stop()
        log_event("api_stopped")

    app = FastAPI(
        title="churn-mlops API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=NO_OPENTELEMETRY,
        docs_url=None,  # apps/api/docs.py serves them from pinned assets
        redoc_url=None,
        redirect_slashes=False,  # a redirect would echo the client's Host header back to it
    )
    schemas = build_request_schemas(config.specs, api.max_batch_size, api.max_feature_value)
    validator = RequestValidator(schemas, feature_names(config.specs), api.max_batch_size,
                                 api.batch_chunk_rows, api.max_errors)
    install_error_handlers(app, metrics, api.max_errors)
    batch_pool = BatchPool(config, validator, api.batch_workers, api.batch_chunk_rows)
    add_routes(app.router, current, metrics, validator, batch_pool)
    install_docs(app)
    install_openapi(app, schemas)
    app.add_middleware(BodyLimitMiddleware, metrics=metrics,
                       limits={"/predict": ("max_predict_body_bytes", api.max_predict_body_bytes)},
                       default=("max_body_bytes", api.max_body_bytes), timeout=api.body_timeout_seconds)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outside the body limit: sees 413s too
    app.add_middleware(PredictFastPath, current=current, metrics=metrics, validator=validator,  # added last =
                       max_bytes=api.max_predict_body_bytes, timeout=api.body_timeout_seconds,  # outermost
                       max_errors=api.max_errors)
    app.state.current = current
    app.state.reloader = reloader
    app.state.batch_pool = batch_pool
    app.state.metrics = metrics
    app.state.api = api  # the server's limits (apps/api/server.py) come from the same settings
    return app
