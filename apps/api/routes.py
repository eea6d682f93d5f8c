"""The HTTP endpoints. Handlers read the served model reference ONCE per request.

No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at
definition time, and the request models are built per app (they depend on the config).

Request bodies are validated by `apps.api.validation` (bounded work, first N errors and a
count) from the raw bytes; the OpenAPI document still names the generated request models
(`request_body`), and `apps.api.openapi` adds them to its components. Answers are
serialized here with `json.dumps` (the response models document them; FastAPI's
re-validation of our own output would cost more than the prediction).

`/predict` runs on the event loop (tens of microseconds of numpy: cheaper than any hop; its
body is at most `api.max_predict_body_bytes`); `/predict/batch` is parsed, validated and
scored in `api.batch_workers` worker processes (batchwork.py), so a large or hostile batch
never holds the loop.
Every GET route also answers HEAD.
"""

import json
import math
from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Request, Response

from apps.api.batchwork import BatchPool, BatchWorkerLost
from apps.api.current import CurrentModel
from apps.api.metrics import METRICS_CONTENT_TYPE, ApiMetrics
from apps.api.schemas import (
    BatchPredictResponse,
    ErrorResponse,
    LiveResponse,
    PredictResponse,
    ReadyResponse,
    ValidationErrorResponse,
)
from apps.api.serving import ServingError, ServingModel
from apps.api.validation import Problems, RequestValidator, non_finite_problem

JSON = "application/json"
Endpoint = Callable[..., Any]
RETRY_AFTER_SECONDS = "2"
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    408: {"model": ErrorResponse, "description": "Request body not received within `api.body_timeout_seconds`."},
    413: {"model": ErrorResponse, "description": "Request body over the configured size limit."},
    415: {"model": ErrorResponse, "description": "A Content-Type other than application/json."},
    422: {"model": ValidationErrorResponse, "description": "Invalid input; each error names its field."},
    503: {"model": ErrorResponse,
          "description": "No model loaded yet, too many open connections, or (batch) its worker process stopped."},
}


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """Register `endpoint` for GET and, as its own OpenAPI operation, for HEAD (same answers)."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=["GET"], **options)
        router.add_api_route(path, endpoint, methods=["HEAD"], operation_id=f"{endpoint.__name__}_head",
                             **options)
        return endpoint

    return register


async def json_body(request: Request) -> bytes:
    """The raw body, or 415 when the client says it is not JSON (no Content-Type is accepted)."""
    if not is_json(request.headers.get("content-type")):
        raise HTTPException(415, detail=f"expected Content-Type {JSON}")
    return await request.body()


def request_body(model_name: str) -> dict[str, Any]:
    """The OpenAPI requestBody of a route that validates its raw body with `model_name`."""
    schema = {"$ref": f"#/components/schemas/{model_name}"}
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def add_routes(router: APIRouter, current: CurrentModel, metrics: ApiMetrics, validator: RequestValidator,
               batch_pool: BatchPool) -> None:
    """Add all routes of the API to `router` (the app's own: see below), bound to this app.

    Why on the app's router and not an included sub-router: routes added directly are plain
    `APIRoute`s, whose template the metrics middleware can resolve even for requests answered
    before routing (413).
    """
    @get_and_head(router, "/live", response_model=LiveResponse, tags=["health"], summary="Liveness")
    async def live() -> Response:
        """200 while the process runs (restart only if this fails)."""
        return Response(b'{"status":"alive"}', media_type=JSON)

    @get_and_head(router, "/ready", response_model=ReadyResponse, tags=["health"], summary="Readiness",
                  responses={503: {"model": ReadyResponse, "description": "No model loaded (reason given)."}})
    async def ready() -> Response:
        """200 when a verified model is being served; 503 with the reason otherwise."""
        model = current.model
        if model is None:
            body = ReadyResponse(status="not_ready", reason=current.not_ready_reason)
            return Response(body.model_dump_json(), status_code=503, media_type=JSON,
                            headers={"Retry-After": RETRY_AFTER_SECONDS})
        return Response(ReadyResponse(status="ready", model_version=model.version).model_dump_json(),
                        media_type=JSON)

    @get_and_head(router, "/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response,
                  responses={200: {"content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
                                   "description": "Prometheus text exposition."}})
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of this process's metrics."""
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @get_and_head(router, "/model", tags=["model"], summary="Serving model card",
                  responses={200: {"content": {JSON: {"schema": {"type": "object"}}}, "description": "The model card."},
                             503: {"model": ErrorResponse, "description": "No model loaded yet."}})
    async def model_card() -> Response:
        """The card of the model answering predictions now (schema, metrics, threshold, ...)."""
        return Response(_serving(current).card_json, media_type=JSON)

    @router.post("/predict", response_model=PredictResponse, tags=["predict"], summary="Score one user",
                 responses=PREDICT_ERRORS, openapi_extra=request_body("PredictRequest"))
    async def predict(request: Request) -> Response:
        """Churn risk of one user from their features."""
        return Response(predict_answer(await json_body(request), current, metrics, validator), media_type=JSON)

    @router.post("/predict/batch", response_model=BatchPredictResponse, tags=["predict"],
                 summary="Score many users", responses=PREDICT_ERRORS,
                 openapi_extra=request_body("BatchPredictRequest"))
    async def predict_batch(request: Request) -> Response:
        """Churn risks of up to `api.max_batch_size` users, in request order, from one model."""
        body = await json_body(request)
        model = _serving(current)
        try:
            payload, risks = await batch_pool.answer(body, model.version)
        except ServingError as exc:  # the worker could not load the version the API serves
            raise HTTPException(503, detail=f"no model loaded: {exc.public}",
                                headers={"Retry-After": RETRY_AFTER_SECONDS}) from None
        except BatchWorkerLost:
            raise HTTPException(503, detail="the batch worker stopped; retry",
                                headers={"Retry-After": RETRY_AFTER_SECONDS}) from None
        metrics.observe_risks(risks)
        return Response(payload, media_type=JSON)


def predict_answer(body: bytes, current: CurrentModel, metrics: ApiMetrics, validator: RequestValidator) -> bytes:
    """The 200 body of /predict for a JSON `body`, or Problems (422) / HTTPException (503).

    The one implementation of /predict: the route above and the fast path (fastpath.py) call it.
    """
    row = validator.one(body)
    model = _serving(current)
    risk = model.risk_one(row.features)
    if not math.isfinite(risk):  # valid but extreme inputs overflow the model: a meaningless score
        raise Problems([non_finite_problem(["body", "features"])], 1)
    metrics.observe_risk(risk)
    return json.dumps({
        "user_id": row.user_id, "churn_risk": risk, "model_version": model.version,
        "threshold": model.threshold, "label": int(risk >= model.threshold),
    }).encode()


def is_json(content_type: str | None) -> bool:
    """True for application/json, application/*+json and no Content-Type at all."""
    media_type = (JSON if content_type is None else content_type).split(";", 1)[0].strip().lower()
    return media_type == JSON or (media_type.startswith("application/") and media_type.endswith("+json"))


def _serving(current: CurrentModel) -> ServingModel:
    """The model for this request, read once; 503 (never 500) while there is none."""
    model = current.model
    if model is None:
        raise HTTPException(503, detail=f"no model loaded: {current.not_ready_reason}",
                            headers={"Retry-After": RETRY_AFTER_SECONDS})
    return model
