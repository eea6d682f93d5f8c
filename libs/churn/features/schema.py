"""The feature schema: names, types and ranges shared by training, batch scoring and the API.

Why a separate, numpy-only module: the API validates requests and encodes one row with it,
and must not import pandas. Models are trained on `encode_records`/`encode_frame` output, so
online and offline inputs are laid out identically (same order, same category codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

COUNTRIES: tuple[str, ...] = ("IN", "US", "UK", "CA", "AU", "SG")
MARKETING_SOURCES: tuple[str, ...] = ("organic", "referral", "ads", "youtube", "community")
WINDOWS_DAYS: tuple[int, ...] = (7, 14, 30)

# Per-window rolling sums over the user x day grid (days <= t).
WINDOW_COUNTS: tuple[str, ...] = (
    "active_days",
    "events",
    "logins",
    "enrolls",
    "watch_minutes",
    "quiz_attempts",
    "payment_success",
    "payment_failed",
    "tickets",
)


@dataclass(frozen=True)
class FeatureSpec:
    """One model input. `categories` is set only for categorical features.

    `nullable` features may be missing (None -> NaN): a quiz mean with no quiz in the window
    is unknown, not zero (imputing 0 was a defect of the reference project).
    """

    name: str
    kind: str  # "numeric" | "categorical"
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    categories: tuple[str, ...] = ()


def _window_specs(windows: Sequence[int]) -> list[FeatureSpec]:
    specs: list[FeatureSpec] = []
    for w in windows:
        for count in WINDOW_COUNTS:
            upper = float(w) if count == "active_days" else None
            specs.append(FeatureSpec(f"{count}_{w}d", "numeric", 0.0, upper))
        specs.append(FeatureSpec(f"quiz_mean_{w}d", "numeric", 0.0, 100.0, nullable=True))
    return specs


def feature_specs(windows: Sequence[int] = WINDOWS_DAYS) -> tuple[FeatureSpec, ...]:
    """All model inputs, in the column order of the encoded matrix."""
    static = [
        FeatureSpec("is_paid", "numeric", 0.0, 1.0),
        FeatureSpec("country", "categorical", categories=COUNTRIES),
        FeatureSpec("marketing_source", "categorical", categories=MARKETING_SOURCES),
        FeatureSpec("days_since_signup", "numeric", 0.0, None),
    ]
    tail = [
        FeatureSpec("payment_failure_rate_30d", "numeric", 0.0, 1.0, nullable=True),
        FeatureSpec("days_since_last_active", "numeric", 0.0, None, nullable=True),
    ]
    return tuple(static + _window_specs(windows) + tail)


def feature_names(specs: Sequence[FeatureSpec]) -> list[str]:
    return [s.name for s in specs]


def categorical_indices(specs: Sequence[FeatureSpec]) -> list[int]:
    return [i for i, s in enumerate(specs) if s.kind == "categorical"]


def numeric_indices(specs: Sequence[FeatureSpec]) -> list[int]:
    return [i for i, s in enumerate(specs) if s.kind == "numeric"]


def encode_value(spec: FeatureSpec, value: object) -> float:
    """One value -> float. Categories become their index in `spec.categories`, unknown -> NaN.

    Raises ValueError naming the feature for a value that is not allowed.
    """
    if value is None:
        if spec.nullable or spec.kind == "categorical":
            return math.nan
        raise ValueError(f"feature {spec.name!r} is required")
    if spec.kind == "categorical":
        try:
            return float(spec.categories.index(str(value)))
        except ValueError:
            return math.nan
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number):
        if spec.nullable:
            return number
        raise ValueError(f"feature {spec.name!r} is NaN")
    return number


def encode_records(specs: Sequence[FeatureSpec], records: Iterable[Mapping[str, object]]) -> np.ndarray:
    """Rows of {feature name: value} -> float64 matrix in schema order (the model's input)."""
    rows = [[encode_value(s, r.get(s.name)) for s in specs] for r in records]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(specs))


def schema_to_json(specs: Sequence[FeatureSpec]) -> list[dict[str, object]]:
    """The form stored in a model card, so a card says exactly what its model expects."""
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "minimum": s.minimum,
            "maximum": s.maximum,
            "nullable": s.nullable,
            "categories": list(s.categories),
        }
        for s in specs
    ]


def schema_from_json(items: Sequence[Mapping[str, object]]) -> tuple[FeatureSpec, ...]:
    return tuple(
        FeatureSpec(
            name=str(i["name"]),
            kind=str(i["kind"]),
            minimum=i.get("minimum"),  # type: ignore[arg-type]
            maximum=i.get("maximum"),  # type: ignore[arg-type]
            nullable=bool(i.get("nullable", False)),
            categories=tuple(i.get("categories") or ()),  # type: ignore[arg-type]
        )
        for i in items
    )
