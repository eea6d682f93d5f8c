"""Request and response models. The feature model is GENERATED from the feature schema.

Why generated: the reference API hand-wrote its request fields, which drifted from the
training features. Here every feature of `feature_specs()` becomes one required field:
numerics are strict finite floats (ints accepted; strings, booleans, NaN and infinities
refused) within the schema's range, nullable ones also accept null, categoricals are a
Literal of their categories, and unknown fields are refused (extra="forbid"). So every
malformed input is a 422 that names its field, before any model code runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Sequence

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from apps.api.samples import typical_row
from churn.features.schema import FeatureSpec

# Exclusive bound 2^63: exact for readers that parse JSON numbers as integers and as doubles
# (an inclusive 2^63 - 1 reads as 2^63 in a double, a value the API would then refuse).
USER_ID_BOUND = 2**63


def _integral_float_to_int(value: Any) -> Any:
    """JSON Schema's "integer" includes 42.0; strict pydantic would refuse it, so convert it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


UserId = Annotated[int, Field(strict=True, ge=0, lt=USER_ID_BOUND), BeforeValidator(_integral_float_to_int)]


@dataclass(frozen=True)
class RequestSchemas:
    """The request models of one app (they depend on the schema and the batch limit)."""

    features: type[BaseModel]
    predict: type[BaseModel]
    batch: type[BaseModel]


def build_request_schemas(specs: Sequence[FeatureSpec], max_batch_size: int,
                          max_feature_value: float) -> RequestSchemas:
    """Pydantic models for /predict and /predict/batch from the feature schema.

    A numeric feature without a maximum in the schema (counts, days) is capped at
    `max_feature_value` (`api.max_feature_value`): larger values describe no user, and a
    model's answer for them would be a confident extrapolation.
    """
    example = typical_row(specs)
    features = create_model(  # type: ignore[call-overload]
        "Features",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [example]}),
        __doc__="One user's features as of a date, exactly as `churn.features` computes them.",
        **{spec.name: _feature_field(spec, max_feature_value) for spec in specs},
    )
    predict = create_model(  # type: ignore[call-overload]
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user_id": 42, "features": example}]}),
        __doc__="Score one user.",
        user_id=(
            Optional[UserId],
            Field(None, description="Optional; echoed back.", examples=[42]),
        ),
        features=(features, Field(description="All model features; nullable ones may be null.")),
    )
    batch = create_model(  # type: ignore[call-overload]
        "BatchPredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Score up to {max_batch_size} users in one request.",
        instances=(
            list[predict],  # type: ignore[valid-type]
            Field(min_length=1, max_length=max_batch_size, description=f"1 to {max_batch_size} users."),
        ),
    )
    return RequestSchemas(features=features, predict=predict, batch=batch)


def _feature_field(spec: FeatureSpec, max_feature_value: float) -> tuple[Any, Any]:
    if spec.kind == "categorical":
        return (Literal[spec.categories], Field(description=f"One of {', '.join(spec.categories)}."))  # type: ignore[valid-type]
    maximum = spec.maximum if spec.maximum is not None else max_feature_value
    number = Annotated[
        float,
        Field(strict=True, allow_inf_nan=False, ge=spec.minimum, le=maximum),
    ]
    described = Field(description=_describe_range(spec, maximum))
    if spec.nullable:
        return (Optional[number], described)
    return (number, described)


def _describe_range(spec: FeatureSpec, maximum: float) -> str:
    low = "-inf" if spec.minimum is None else f"{spec.minimum:g}"
    high = f"{maximum:g}"
    nullable = "; null when unknown" if spec.nullable else ""
    return f"Number in [{low}, {high}]{nullable}."


class PredictResponse(BaseModel):
    """The churn risk of one user under the model being served."""

    user_id: Optional[int] = Field(None, description="The request's user_id, if any.", examples=[42])
    churn_risk: float = Field(description="Probability that the user churns (no activity in the churn window).",
                              ge=0.0, le=1.0, examples=[0.73])
    model_version: str = Field(description="Registry version that produced the score.",
                               examples=["20250101T000000Z-1a2b3c4d"])
    threshold: float = Field(description="Decision threshold of that model (from its card).", examples=[0.5])
    label: Literal[0, 1] = Field(description="1 when churn_risk >= threshold (predicted to churn).", examples=[1])


class BatchItem(BaseModel):
    """One user's result inside a batch (same order as the request)."""

    user_id: Optional[int] = Field(None, examples=[42])
    churn_risk: float = Field(ge=0.0, le=1.0, examples=[0.73])
    label: Literal[0, 1] = Field(examples=[1])


class BatchPredictResponse(BaseModel):
    """Risks for every instance, all from one model version."""

    model_version: str = Field(examples=["20250101T000000Z-1a2b3c4d"])
    threshold: float = Field(examples=[0.5])
    predictions: list[BatchItem]


class LiveResponse(BaseModel):
    status: Literal["alive"] = "alive"


class ReadyResponse(BaseModel):
    """Readiness: a model is loaded (200) or the reason it is not (503)."""

    status: Literal["ready", "not_ready"] = Field(examples=["ready"])
    model_version: Optional[str] = Field(None, examples=["20250101T000000Z-1a2b3c4d"])
    reason: Optional[str] = Field(None, description="Why the API is not ready.", examples=[None])


class ErrorResponse(BaseModel):
    """A non-validation error (400, 404, 405, 408, 413, 431, 503, ...)."""

    detail: str = Field(examples=["no model loaded: the registry has no production model yet"])


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Path of the offending field.", examples=[["body", "features", "is_paid"]])
    msg: str = Field(examples=["Input should be less than or equal to 1"])
    type: str = Field(examples=["less_than_equal"])


class ValidationErrorResponse(BaseModel):
    """422: the first `api.max_errors` problems, each with the field it concerns, and their count."""

    detail: list[FieldError]
    error_count: int = Field(ge=1, description="How many problems the request has in all.", examples=[1])
