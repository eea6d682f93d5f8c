"""The immutable model being served, and how a registry version becomes one.

Why immutable: the reloader swaps models with one reference assignment; a request handler
reads that reference once and uses this object to the end, so an in-flight request always
finishes on the model it started with, and no lock is needed on the hot path.

The API serves a version's portable scorer (`churn.portable`: the model's arithmetic as
arrays, written and checked against predict_proba at registration), never the pickled
model: no scikit-learn, scipy, joblib or pickle in the serving process.

A version is served only after four checks, each a reason to refuse it:
1. its card names a portable scorer (`ModelRejected`: promotion refuses such versions too);
2. its card's feature schema equals the code's `feature_specs` (a model trained on other
   windows or categories would silently get misaligned inputs: `ModelRejected`);
3. its card has a threshold in [0, 1] (`ModelRejected`);
4. the scorer file matches the card's sha256, loads and scores sample rows with finite risks
   in [0, 1] (`ModelLoadFailed`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from apps.api.samples import sample_rows
from churn.errors import RegistryError
from churn.features.schema import FeatureSpec, encode_records, schema_from_json
from churn.portable.scorer import PortableFormError, PortableScorer, read_scorer


CARD_SCHEMA_KEY = "feature_schema"  # written by churn.training (schema_to_json of its specs)
CARD_SCORER_KEY = "scorer"  # {file, kind, sha256, ...}: written by churn.training at registration


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

    def card(self, version: str) -> dict[str, Any]: ...

    def version_dir(self, version: str) -> Any: ...


@dataclass(frozen=True)
class ServingModel:
    """One loaded, verified model version; never mutated after construction."""

    version: str
    card: Mapping[str, Any]
    card_json: bytes
    threshold: float
    specs: tuple[FeatureSpec, ...]
    predictor: PortableScorer
    loaded_at: float
    encode_one: Callable[[object], np.ndarray] = field(repr=False, compare=False)  # validated_row_encoder

    def risk(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Validated feature rows -> churn risk per row."""
        return self.predictor.risk(encode_records(self.specs, rows))

    def risk_one(self, features: object) -> float:
        """The risk of one validated `Features` object (the /predict hot path), equal to `risk`'s."""
        return self.predictor.risk_one(self.encode_one(features))


def validated_row_encoder(specs: Sequence[FeatureSpec]) -> Callable[[object], np.ndarray]:
    """A validated `Features` object -> its schema row (1-D float64), equal to `encode_records`'s.

    Why not `encode_records`: its per-value checks (NaN, required, unknown category) are
    already guaranteed by the request schema, and they cost a tenth of a /predict's CPU.
    Here a value is None -> NaN and a category -> its index (a dict lookup), nothing else.
    """
    columns = tuple((spec.name, {category: float(i) for i, category in enumerate(spec.categories)}
                     if spec.kind == "categorical" else None) for spec in specs)
    nan = math.nan

    def encode(features: object) -> np.ndarray:
        values = vars(features)
        return np.array([nan if (value := values[name]) is None else value if codes is None else codes.get(value, nan)
                         for name, codes in columns], dtype=np.float64)

    return encode


def load_serving_model(registry: Registry, version: str, specs: tuple[FeatureSpec, ...]) -> ServingModel:
    """Load `version`'s card and portable scorer and verify them; raises ModelRejected / ModelLoadFailed."""
    try:
        card = dict(registry.card(version))
    except Exception as exc:  # RegistryError: missing or corrupt card
        raise ModelLoadFailed(f"cannot read the card of version {version!r}: {exc}",
                              f"its card cannot be read ({type(exc).__name__})") from exc
    entry = card.get(CARD_SCORER_KEY)
    if not isinstance(entry, dict) or not entry.get("file") or not entry.get("sha256"):
        raise ModelRejected(f"version {version!r} (model_kind {card.get('model_kind')!r}) has no portable scorer "
                            f"with a sha256 in its card", "it has no portable scorer")
    check_card(card, specs)
    try:
        predictor = read_scorer(Path(registry.version_dir(version)) / str(entry["file"]), str(entry["sha256"]))
        check_predictions(predictor, specs)
    except ModelLoadFailed:
        raise
    except PortableFormError as exc:  # unreadable, not a scorer, digest differs from the card's
        raise ModelLoadFailed(f"version {version!r}: {exc}", f"its scorer cannot be used: {exc.problem}") from exc
    except Exception as exc:  # arithmetic errors on the sample rows
        raise ModelLoadFailed(f"version {version!r}: scorer not usable: {exc}",
                              f"its scorer cannot be used ({type(exc).__name__})") from exc
    return ServingModel(
        version=version,
        card=MappingProxyType(card),
        card_json=json.dumps(card, default=str).encode(),
        threshold=float(card["threshold"]),
        specs=specs,
        predictor=predictor,
        loaded_at=time.time(),
        encode_one=validated_row_encoder(specs),
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


def check_predictions(predictor: PortableScorer, specs: tuple[FeatureSpec, ...]) -> None:
    """ModelLoadFailed unless sample rows (typical, and all-null where allowed) score in [0, 1]."""
    risks = predictor.risk(encode_records(specs, sample_rows(specs)))
    if risks.shape != (2,) or not np.all(np.isfinite(risks)) or np.any((risks < 0.0) | (risks > 1.0)):
        raise ModelLoadFailed(f"sample predictions are not finite probabilities: {risks!r}")
