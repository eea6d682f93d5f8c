"""The immutable model being served, and how a registry version becomes one.

Why immutable: the reloader swaps models with one reference assignment; a request handler
reads that reference once and uses this object to the end, so an in-flight request always
finishes on the model it started with, and no lock is needed on the hot path.

A version is served only after three checks, each a reason to refuse it:
1. its card's feature schema equals the code's `feature_specs` (a model trained on other
   windows or categories would silently get misaligned inputs: `ModelRejected`);
2. its card has a threshold in [0, 1] (`ModelRejected`);
3. it loads and predicts sample rows with finite risks in [0, 1] (`ModelLoadFailed`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from apps.api.samples import sample_rows
from churn.compiled.check_rows import valid_rows
from churn.compiled.scorer import Scorer, compile_scorer
from churn.errors import RegistryError
from churn.features.schema import FeatureSpec, encode_records, schema_from_json


CARD_SCHEMA_KEY = "feature_schema"  # written by churn.training (schema_to_json of its specs)


class ServingError(RegistryError):
    """Why a version is not served: `str()` for the log, `public` for callers (no paths)."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public if public is not None else message


class ModelRejected(ServingError):
    """The version is incompatible with this API (schema or card); reload result "rejected"."""


class ModelLoadFailed(ServingError):
    """The version could not be loaded or did not predict sanely; reload result "failed"."""


class Registry(Protocol):
    """The part of `churn.registry.ModelRegistry` the API uses."""

    def get_alias(self, alias: str) -> str | None: ...

    def load(self, version: str) -> Any: ...

    def version_dir(self, version: str) -> Any: ...


@dataclass(frozen=True)
class ServingModel:
    """One loaded, verified model version; never mutated after construction."""

    version: str
    card: Mapping[str, Any]
    card_json: bytes
    threshold: float
    specs: tuple[FeatureSpec, ...]
    predictor: Scorer
    loaded_at: float

    def risk(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Validated feature rows -> churn risk per row."""
        return self.predictor.risk(encode_records(self.specs, rows))


def load_serving_model(registry: Registry, version: str, specs: tuple[FeatureSpec, ...]) -> ServingModel:
    """Load `version` from the registry and verify it; raises ModelRejected / ModelLoadFailed."""
    try:
        loaded = registry.load(version)
    except Exception as exc:  # RegistryError, unpickling errors, missing files: all "failed"
        raise ModelLoadFailed(f"cannot load version {version!r}: {exc}",
                              f"its files cannot be read ({type(exc).__name__})") from exc
    card = dict(loaded.card)
    check_card(card, specs)
    try:
        # threads=0: no per-call thread cap on the request path (applying one costs per call)
        predictor = compile_scorer(loaded.model, valid_rows(specs), threads=0)
        check_predictions(predictor, specs)
    except ModelLoadFailed:
        raise
    except Exception as exc:
        raise ModelLoadFailed(f"version {version!r} fails to predict: {exc!r}",
                              f"it fails to predict ({type(exc).__name__})") from exc
    return ServingModel(
        version=str(loaded.version),
        card=MappingProxyType(card),
        card_json=json.dumps(card, default=str).encode(),
        threshold=float(card["threshold"]),
        specs=specs,
        predictor=predictor,
        loaded_at=time.time(),
    )


def check_card(card: Mapping[str, Any], specs: tuple[FeatureSpec, ...]) -> None:
    """ModelRejected unless the card's schema and threshold fit this API."""
    try:
        card_specs = schema_from_json(card[CARD_SCHEMA_KEY])
    except Exception as exc:
        raise ModelRejected(f"card has no readable feature schema: {exc!r}", "its card has no readable feature schema") from exc
    if card_specs != specs:
        raise ModelRejected(f"card feature schema differs from the API's: {_schema_difference(card_specs, specs)}")
    threshold = card.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ModelRejected(f"card threshold must be a number in [0, 1], got {threshold!r}")


def _schema_difference(card_specs: Sequence[FeatureSpec], specs: Sequence[FeatureSpec]) -> str:
    for position, (theirs, ours) in enumerate(zip(card_specs, specs)):
        if theirs != ours:
            return f"column {position}: card {theirs!r} != api {ours!r}"
    return f"card has {len(card_specs)} features, api expects {len(specs)}"


def check_predictions(predictor: Scorer, specs: tuple[FeatureSpec, ...]) -> None:
    """ModelLoadFailed unless sample rows (typical, and all-null where allowed) score in [0, 1]."""
    risks = predictor.risk(encode_records(specs, sample_rows(specs)))
    if risks.shape != (2,) or not np.all(np.isfinite(risks)) or np.any((risks < 0.0) | (risks > 1.0)):
        raise ModelLoadFailed(f"sample predictions are not finite probabilities: {risks!r}")
