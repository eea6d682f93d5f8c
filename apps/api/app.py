"""The application factory: wires config, registry, the current model, reloader, metrics, routes.

Why a factory: tests and the bench build apps on temporary data roots in one process; the
production entry point (main.py) builds exactly one from the config it read at startup.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from apps.api.current import CurrentModel
from apps.api.errors import install_error_handlers
from apps.api.logs import log_event
from apps.api.metrics import ApiMetrics
from apps.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from apps.api.reloader import PRODUCTION, ModelReloader
from apps.api.routes import add_routes
from apps.api.schemas import build_request_schemas
from apps.api.settings import ServingConfig
from churn.registry.registry import ModelRegistry

DESCRIPTION = """Churn risk of e-learning users, from the model in the registry's `production` alias.

The request schema is generated from the feature schema the model was trained with; a newly
promoted model is picked up without a restart (see `/model` for the one serving now)."""


# Metrics are Prometheus (metrics.py); FastAPI's native OpenTelemetry hooks would only add
# per-request work (provider look-ups on every request even when nothing is configured).
NO_OPENTELEMETRY: dict[str, bool] = {"tracing": False, "metrics": False, "logs": False}


def create_app(config: ServingConfig, *, watch: bool = True) -> FastAPI:
    """A ready-to-serve app; with `watch`, the reloader runs for the app's lifetime."""
    registry = ModelRegistry(config.registry_root)
    current = CurrentModel()
    metrics = ApiMetrics()
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
                  max_body_bytes=config.api.max_body_bytes, max_batch_size=config.api.max_batch_size,
                  reload_interval_seconds=config.api.reload_interval_seconds)
        if watch:
            reloader.start()
        yield
        reloader.stop()
        log_event("api_stopped")

    app = FastAPI(
        title="churn-mlops API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=NO_OPENTELEMETRY,
    )
    install_error_handlers(app)
    add_routes(app.router, current, metrics, build_request_schemas(config.specs, config.api.max_batch_size))
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.api.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last = outermost: sees 413s too
    app.state.current = current
    app.state.reloader = reloader
    app.state.metrics = metrics
    return app
