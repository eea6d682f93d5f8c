"""The HTTP endpoints. Handlers read the served model reference ONCE per request.

No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at
definition time, and the request models are built per app (they depend on the config).

Features are read with `vars()` (the validated model's field dict; extra fields are
forbidden, so it holds exactly the schema's names): iterating a pydantic model costs ~40 us.

`/predict` is `async` (a few microseconds of numpy: cheaper on the event loop than a thread
hop); `/predict/batch` is a plain `def`, so up to `max_batch_size` rows are encoded and
scored in the thread pool without stalling other requests.
"""

from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from apps.api.current import CurrentModel
from apps.api.metrics import METRICS_CONTENT_TYPE, ApiMetrics
from apps.api.schemas import (
    BatchItem,
    BatchPredictResponse,
    ErrorResponse,
    LiveResponse,
    PredictResponse,
    ReadyResponse,
    RequestSchemas,
    ValidationErrorResponse,
)
from apps.api.serving import ServingModel

RETRY_AFTER_SECONDS = "2"
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "Request body over the configured size limit."},
    422: {"model": ValidationErrorResponse, "description": "Invalid input; each error names its field."},
    503: {"model": ErrorResponse, "description": "No model loaded yet."},
}


def add_routes(router: APIRouter, current: CurrentModel, metrics: ApiMetrics, schemas: RequestSchemas) -> None:
    """Add all routes of the API to `router` (the app's own: see below), bound to this app.

    Why on the app's router and not an included sub-router: routes added directly are plain
    `APIRoute`s, whose template the metrics middleware can resolve even for requests answered
    before routing (413).
    """
    PredictRequest = schemas.predict
    BatchPredictRequest = schemas.batch

    @router.get("/live", response_model=LiveResponse, tags=["health"], summary="Liveness")
    async def live() -> LiveResponse:
        """200 while the process runs (restart only if this fails)."""
        return LiveResponse()

    @router.get("/ready", response_model=ReadyResponse, tags=["health"], summary="Readiness",
                responses={503: {"model": ReadyResponse, "description": "No model loaded (reason given)."}})
    async def ready() -> Any:
        """200 when a verified model is being served; 503 with the reason otherwise."""
        model = current.model
        if model is None:
            body = ReadyResponse(status="not_ready", reason=current.not_ready_reason)
            return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
        return ReadyResponse(status="ready", model_version=model.version)

    @router.get("/metrics", tags=["operations"], summary="Prometheus metrics",
                response_class=Response, responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}})
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of this process's metrics."""
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @router.get("/model", tags=["model"], summary="Serving model card",
                responses={200: {"content": {"application/json": {}}, "description": "The model card."},
                           503: {"model": ErrorResponse}})
    async def model_card() -> Response:
        """The card of the model answering predictions now (schema, metrics, threshold, ...)."""
        return Response(_serving(current).card_json, media_type="application/json")

    @router.post("/predict", response_model=PredictResponse, tags=["predict"], summary="Score one user",
                 responses=PREDICT_ERRORS)
    async def predict(request: PredictRequest) -> PredictResponse:  # type: ignore[valid-type]
        """Churn risk of one user from their features."""
        model = _serving(current)
        risks = _finite(model.risk([vars(request.features)]), ["body", "features"])  # type: ignore[attr-defined]
        risk = float(risks[0])
        metrics.observe_risks([risk])
        return PredictResponse(
            user_id=request.user_id,  # type: ignore[attr-defined]
            churn_risk=risk,
            model_version=model.version,
            threshold=model.threshold,
            label=int(risk >= model.threshold),
        )

    @router.post("/predict/batch", response_model=BatchPredictResponse, tags=["predict"],
                 summary="Score many users", responses=PREDICT_ERRORS)
    def predict_batch(request: BatchPredictRequest) -> BatchPredictResponse:  # type: ignore[valid-type]
        """Churn risks of up to `api.max_batch_size` users, in request order, from one model."""
        model = _serving(current)
        instances = request.instances  # type: ignore[attr-defined]
        risks = _finite(model.risk([vars(item.features) for item in instances]), ["body", "instances"]).tolist()
        metrics.observe_risks(risks)
        items = [
            BatchItem(user_id=item.user_id, churn_risk=risk, label=int(risk >= model.threshold))
            for item, risk in zip(instances, risks)
        ]
        return BatchPredictResponse(model_version=model.version, threshold=model.threshold, predictions=items)


def _finite(risks: np.ndarray, loc: list[str | int]) -> np.ndarray:
    """422 if valid but extreme inputs (e.g. 1e308 counts) overflow the model to NaN/inf.

    Why: such a score is meaningless, and returning it would fail response validation (500).
    """
    bad = np.flatnonzero(~np.isfinite(risks))
    if bad.size:
        where = loc + [int(bad[0])] if loc[-1] == "instances" else loc
        raise RequestValidationError([{
            "loc": where, "type": "non_finite_risk",
            "msg": "feature values far outside the training range give no finite risk",
        }])
    return risks


def _serving(current: CurrentModel) -> ServingModel:
    """The model for this request, read once; 503 (never 500) while there is none."""
    model = current.model
    if model is None:
        raise HTTPException(503, detail=f"no model loaded: {current.not_ready_reason}",
                            headers={"Retry-After": RETRY_AFTER_SECONDS})
    return model
