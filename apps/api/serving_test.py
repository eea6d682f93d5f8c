"""The API serves the portable scorer written at registration, and the risk a client gets is
the model's own predict_proba; a model without a portable form is never served.

(That the forms equal predict_proba on many rows is proven beside them, in
libs/churn/compiled/scorer_test.py and libs/churn/portable/scorer_test.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline

from apps.api.app import create_app
from apps.api.samples import sample_rows, typical_row
from apps.api.schemas import build_request_schemas
from apps.api.serving import ModelLoadFailed, ModelRejected, load_serving_model, validated_row_encoder
from apps.api.testkit import (
    boosting_model,
    card_for,
    logistic_pipeline,
    register,
    serving_config_for,
    start_server,
    training_data,
    wait_for,
)
from churn.features.schema import encode_records, feature_specs
from churn.registry.registry import ModelRegistry

SPECS = feature_specs()
ROWS = sample_rows(SPECS) + [dict(typical_row(SPECS), logins_7d=float(n), active_days_7d=float(n % 8))
                             for n in range(30)]


def _forest() -> Any:
    matrix, label = training_data(SPECS)
    return make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(matrix, label)


MODELS = {
    "linear": lambda: logistic_pipeline(SPECS),
    "trees": lambda: boosting_model(SPECS),
}


def _expected(model: Any, rows: list[dict[str, object]]) -> np.ndarray:
    return model.predict_proba(encode_records(SPECS, rows))[:, 1]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_loaded_version_scores_through_the_verified_scorer(kind: str, tmp_path: Path) -> None:
    model = MODELS[kind]()
    version = register(tmp_path, model, card_for(SPECS))
    served = load_serving_model(ModelRegistry(tmp_path), version, SPECS)
    assert served.predictor.kind == kind
    np.testing.assert_allclose(served.risk(ROWS), _expected(model, ROWS), rtol=0, atol=1e-12)
    for row in ROWS[:5]:
        assert served.risk([row])[0] == pytest.approx(_expected(model, [row])[0], abs=1e-12)


def test_a_version_without_a_portable_scorer_is_rejected(tmp_path: Path) -> None:
    version = ModelRegistry(tmp_path).register(_forest(), {**card_for(SPECS, kind="random_forest"), "scorer": None})
    with pytest.raises(ModelRejected, match="no portable scorer"):
        load_serving_model(ModelRegistry(tmp_path), version, SPECS)


def test_a_scorer_file_other_than_the_cards_is_never_served(tmp_path: Path) -> None:
    """A valid scorer of another model in its place: the sha256 in the card refuses it."""
    registry = ModelRegistry(tmp_path)
    served = register(tmp_path, logistic_pipeline(SPECS, seed=1), card_for(SPECS), promote=False)
    other = register(tmp_path, logistic_pipeline(SPECS, seed=2), card_for(SPECS), promote=False)
    target = registry.version_dir(served) / "scorer.npz"
    target.write_bytes((registry.version_dir(other) / "scorer.npz").read_bytes())
    with pytest.raises(ModelLoadFailed, match="sha256 [0-9a-f]{12} differs from the card") as refused:
        load_serving_model(registry, served, SPECS)
    assert "sha256" in refused.value.public and str(tmp_path) not in refused.value.public


def test_predict_over_http_returns_the_tree_paths_risk(tmp_path: Path) -> None:
    model = boosting_model(SPECS)
    register(tmp_path, model, card_for(SPECS, kind="hist_gradient_boosting"))
    server = start_server(create_app(serving_config_for(tmp_path)))
    try:
        with httpx.Client(base_url=server.url) as client:
            assert wait_for(lambda: client.get("/ready").status_code == 200)
            for row in ROWS[:5]:
                risk = client.post("/predict", json={"features": row}).json()["churn_risk"]
                assert risk == pytest.approx(_expected(model, [row])[0], abs=1e-12)
    finally:
        server.stop()


def test_the_hot_path_encoder_equals_encode_records() -> None:
    """/predict encodes a validated row without encode_records' checks: the same matrix."""
    schemas = build_request_schemas(SPECS, 10, 1e9)
    rows = ROWS + [dict(typical_row(SPECS), **{s.name: None for s in SPECS if s.nullable})]
    encode = validated_row_encoder(SPECS)
    for row in rows:
        features = schemas.predict.model_validate({"features": row}).features
        assert np.array_equal(encode(features), encode_records(SPECS, [vars(features)])[0], equal_nan=True)
