"""The compiled risk functions must equal sklearn's predict_proba, or not be used at all."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from churn.compiled import scorer
from churn.compiled.check_rows import edge_rows, valid_rows
from churn.compiled.scorer import compile_scorer, sklearn_scorer
from churn.compiled.testing import boosting_model, logistic_pipeline, training_data
from churn.features.schema import feature_specs
from churn.portable import scorer as portable

SPECS = feature_specs()
MANY_ROWS = valid_rows(SPECS, rows=5000, seed=123)


def _reference(model: object, matrix: np.ndarray) -> np.ndarray:
    return model.predict_proba(matrix)[:, 1]  # type: ignore[attr-defined]


def test_linear_fast_path_equals_predict_proba_on_many_rows() -> None:
    model = logistic_pipeline(SPECS)
    compiled = compile_scorer(model, valid_rows(SPECS))
    assert compiled.kind == "linear"
    np.testing.assert_allclose(compiled.risk(MANY_ROWS), _reference(model, MANY_ROWS), rtol=0, atol=1e-12)


def test_linear_fast_path_handles_a_plain_imputer_scaler_chain() -> None:
    matrix, label = training_data(SPECS)
    model = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(with_mean=False), LogisticRegression()).fit(
        matrix, label)
    compiled = compile_scorer(model, valid_rows(SPECS))
    assert compiled.kind == "linear"
    np.testing.assert_allclose(compiled.risk(MANY_ROWS), _reference(model, MANY_ROWS), rtol=0, atol=1e-12)


@pytest.mark.parametrize("categorical", [True, False], ids=["categorical-splits", "numeric-only"])
def test_tree_fast_path_equals_predict_proba_on_many_rows_with_missing_values(categorical: bool) -> None:
    model = boosting_model(SPECS, categorical=categorical)
    compiled = compile_scorer(model, valid_rows(SPECS))
    assert compiled.kind == "trees"
    assert np.isnan(MANY_ROWS).any()
    np.testing.assert_allclose(compiled.risk(MANY_ROWS), _reference(model, MANY_ROWS), rtol=0, atol=1e-12)


def test_tree_fast_path_treats_unknown_categories_like_sklearn() -> None:
    """Codes the API never sends (unknown, negative, NaN) still follow sklearn's rules."""
    model = boosting_model(SPECS)
    compiled = compile_scorer(model, valid_rows(SPECS))
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
        compiled = compile_scorer(model, valid_rows(SPECS))
        for row in MANY_ROWS[:200]:
            one = row.reshape(1, -1)
            assert compiled.risk(one)[0] == pytest.approx(_reference(model, one)[0], abs=1e-12)


@pytest.mark.parametrize("kind", ["linear", "trees"])
def test_compiled_paths_equal_predict_proba_on_edge_rows(kind: str) -> None:
    """Batch scoring checks on edge rows too: NaN in any column, negative and unknown codes."""
    model = logistic_pipeline(SPECS) if kind == "linear" else boosting_model(SPECS)
    compiled = compile_scorer(model, edge_rows(SPECS))
    assert compiled.kind == kind
    odd = edge_rows(SPECS, rows=5000, seed=9)
    np.testing.assert_allclose(compiled.risk(odd), _reference(model, odd), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "trees"])
def test_a_rows_risk_does_not_depend_on_the_batch_it_is_in(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit for bit: shards must equal a full run, a request the same row in a batch; also
    across the chunks a large batch is cut into."""
    monkeypatch.setattr(portable, "CHUNK_ROWS", 1000)
    model = logistic_pipeline(SPECS) if kind == "linear" else boosting_model(SPECS)
    compiled = compile_scorer(model, valid_rows(SPECS))
    assert compiled.kind == kind
    whole = compiled.risk(MANY_ROWS)
    for start, stop in ((0, 5), (995, 1005), (1000, 2000), (4990, 5000)):
        assert np.array_equal(compiled.risk(MANY_ROWS[start:stop]), whole[start:stop]), (start, stop)
    for i in range(0, len(MANY_ROWS), 250):
        assert np.array_equal(compiled.risk(MANY_ROWS[i:i + 1]), whole[i:i + 1]), i


def test_large_batches_keep_only_the_paths_that_are_faster_there() -> None:
    linear = compile_scorer(logistic_pipeline(SPECS), valid_rows(SPECS), large_batches=True)
    boosting = boosting_model(SPECS)
    trees = compile_scorer(boosting, valid_rows(SPECS), large_batches=True)
    assert (linear.kind, trees.kind) == ("linear", "sklearn")
    np.testing.assert_array_equal(trees.risk(MANY_ROWS), _reference(boosting, MANY_ROWS))


def test_unknown_model_shapes_fall_back_to_sklearn() -> None:
    matrix, label = training_data(SPECS)
    forest = make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(matrix, label)
    compiled = compile_scorer(forest, valid_rows(SPECS))
    assert compiled.kind == "sklearn"
    np.testing.assert_array_equal(compiled.risk(MANY_ROWS), _reference(forest, MANY_ROWS))


@pytest.mark.parametrize("threads", [0, 1])
def test_the_sklearn_fall_back_scores_in_chunks(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portable, "CHUNK_ROWS", 1000)
    matrix, label = training_data(SPECS)
    forest = make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(matrix, label)
    np.testing.assert_array_equal(sklearn_scorer(forest, threads)(MANY_ROWS), _reference(forest, MANY_ROWS))


def test_a_fast_path_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard itself: a compiler that returns a wrong function must be ignored."""
    wrong = ("linear", lambda model: lambda matrix: np.zeros(matrix.shape[0]))  # logit 0 = risk 0.5
    monkeypatch.setattr(scorer, "COMPILERS", (wrong,))
    model = logistic_pipeline(SPECS)
    compiled = compile_scorer(model, valid_rows(SPECS))
    assert compiled.kind == "sklearn"
    np.testing.assert_array_equal(compiled.risk(MANY_ROWS[:100]), _reference(model, MANY_ROWS[:100]))
