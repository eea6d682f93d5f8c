"""The fast risk functions must equal sklearn's predict_proba, or not be used at all."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from apps.api import fastpath
from apps.api.fastpath import compile_predictor
from apps.api.samples import probe_matrix
from apps.api.testkit import boosting_model, logistic_pipeline, training_data
from churn.features.schema import feature_specs

SPECS = feature_specs()
MANY_ROWS = probe_matrix(SPECS, rows=5000, seed=123)


def _reference(model: object, matrix: np.ndarray) -> np.ndarray:
    return model.predict_proba(matrix)[:, 1]  # type: ignore[attr-defined]


def test_linear_fast_path_equals_predict_proba_on_many_rows() -> None:
    model = logistic_pipeline(SPECS)
    compiled = compile_predictor(model, probe_matrix(SPECS))
    assert compiled.kind == "linear"
    np.testing.assert_allclose(compiled.risk(MANY_ROWS), _reference(model, MANY_ROWS), rtol=0, atol=1e-12)


def test_linear_fast_path_handles_a_plain_imputer_scaler_chain() -> None:
    matrix, label = training_data(SPECS)
    model = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(with_mean=False), LogisticRegression()).fit(
        matrix, label)
    compiled = compile_predictor(model, probe_matrix(SPECS))
    assert compiled.kind == "linear"
    np.testing.assert_allclose(compiled.risk(MANY_ROWS), _reference(model, MANY_ROWS), rtol=0, atol=1e-12)


@pytest.mark.parametrize("categorical", [True, False], ids=["categorical-splits", "numeric-only"])
def test_tree_fast_path_equals_predict_proba_on_many_rows_with_missing_values(categorical: bool) -> None:
    model = boosting_model(SPECS, iterations=60, categorical=categorical)
    compiled = compile_predictor(model, probe_matrix(SPECS))
    assert compiled.kind == "trees"
    assert np.isnan(MANY_ROWS).any()
    np.testing.assert_allclose(compiled.risk(MANY_ROWS), _reference(model, MANY_ROWS), rtol=0, atol=1e-12)


def test_tree_fast_path_treats_unknown_categories_like_sklearn() -> None:
    """Codes the API never sends (unknown, negative, NaN) still follow sklearn's rules."""
    model = boosting_model(SPECS, iterations=60)
    compiled = compile_predictor(model, probe_matrix(SPECS))
    odd = MANY_ROWS[:400].copy()
    odd[:100, 1] = 17.0
    odd[100:200, 1] = -3.0
    odd[200:300, 2] = np.nan
    odd[300:, 2] = 300.0
    np.testing.assert_allclose(compiled.risk(odd), _reference(model, odd), rtol=0, atol=1e-12)
    for row in odd[::50]:
        assert compiled.risk(row.reshape(1, -1))[0] == pytest.approx(_reference(model, row.reshape(1, -1))[0],
                                                                      abs=1e-12)


def test_single_rows_agree_too() -> None:
    """The API scores one row at a time: check that shape explicitly."""
    for model in (logistic_pipeline(SPECS), boosting_model(SPECS)):
        compiled = compile_predictor(model, probe_matrix(SPECS))
        for row in MANY_ROWS[:200]:
            one = row.reshape(1, -1)
            assert compiled.risk(one)[0] == pytest.approx(_reference(model, one)[0], abs=1e-12)


def test_unknown_model_shapes_fall_back_to_sklearn() -> None:
    matrix, label = training_data(SPECS)
    forest = make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(matrix, label)
    compiled = compile_predictor(forest, probe_matrix(SPECS))
    assert compiled.kind == "sklearn"
    np.testing.assert_array_equal(compiled.risk(MANY_ROWS), _reference(forest, MANY_ROWS))


def test_a_fast_path_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard itself: a compiler that returns a wrong function must be ignored."""
    wrong = ("linear", lambda model: lambda matrix: np.zeros(matrix.shape[0]))  # logit 0 = risk 0.5
    monkeypatch.setattr(fastpath, "COMPILERS", (wrong,))
    model = logistic_pipeline(SPECS)
    compiled = compile_predictor(model, probe_matrix(SPECS))
    assert compiled.kind == "sklearn"
    np.testing.assert_array_equal(compiled.risk(MANY_ROWS[:100]), _reference(model, MANY_ROWS[:100]))
