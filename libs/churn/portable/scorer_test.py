"""Portable scorers: exported from real models equal predict_proba, round-trip through files
without pickle, and refuse what they cannot represent or what was tampered with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline

from churn.compiled.check_rows import edge_rows, valid_rows
from churn.compiled.scorer import NoPortableForm, export_portable
from churn.compiled.testing import boosting_model, logistic_pipeline, training_data
from churn.features.schema import feature_specs
from churn.portable.scorer import PortableFormError, read_scorer, scorer_from_bytes

SPECS = feature_specs()
HOLDOUT = valid_rows(SPECS, rows=3000, seed=7)
MODELS = {
    "linear": lambda: logistic_pipeline(SPECS),
    "trees": lambda: boosting_model(SPECS),
    "trees without categorical splits": lambda: boosting_model(SPECS, categorical=False),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_exported_scorer_equals_predict_proba_on_the_holdout(name: str, tmp_path: Path) -> None:
    model = MODELS[name]()
    export = export_portable(model, HOLDOUT, {"model_kind": name})
    assert export.card_entry["max_abs_diff"] <= 1e-9 and export.card_entry["checked_rows"] == len(HOLDOUT)
    path = tmp_path / export.card_entry["file"]
    path.write_bytes(export.data)
    scorer = read_scorer(path, export.card_entry["sha256"])
    assert scorer.kind == name.split()[0] and scorer.meta["model_kind"] == name
    expected = model.predict_proba(HOLDOUT)[:, 1]
    assert np.max(np.abs(scorer.risk(HOLDOUT) - expected)) <= 1e-9
    for i in range(0, 3000, 300):  # one row alone scores the same as in the batch
        assert scorer.risk(HOLDOUT[i:i + 1])[0] == scorer.risk(HOLDOUT)[i]
    edges = edge_rows(SPECS)  # NaN anywhere, unknown codes: still the model's answer
    assert np.max(np.abs(scorer.risk(edges) - model.predict_proba(edges)[:, 1])) <= 1e-9


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_one_row_path_is_bit_for_bit_the_batch_path(name: str) -> None:
    """`risk_one` (the API's /predict) answers exactly what `risk` answers, edge rows included."""
    scorer = scorer_from_bytes(export_portable(MODELS[name](), HOLDOUT, {}).data)
    rows = np.vstack([HOLDOUT[:500], edge_rows(SPECS)])
    assert [scorer.risk_one(row) for row in rows] == scorer.risk(rows).tolist()
    extreme = HOLDOUT[:1].copy()
    extreme[0, np.flatnonzero(~np.isnan(extreme[0]))] = 1e300  # a logit beyond exp's range: no warning, same answer
    with np.errstate(all="raise"):
        assert scorer.risk_one(extreme[0]) == scorer.risk(extreme)[0]


def test_the_file_is_deterministic_and_holds_no_pickle() -> None:
    model = logistic_pipeline(SPECS)
    first, second = export_portable(model, HOLDOUT), export_portable(model, HOLDOUT)
    assert first.data == second.data and first.card_entry["sha256"] == second.card_entry["sha256"]
    with np.load(__import__("io").BytesIO(first.data), allow_pickle=False) as archive:
        assert all(archive[key].dtype != object for key in archive.files)


def test_a_model_without_a_portable_form_is_named_in_the_error() -> None:
    matrix, label = training_data(SPECS)
    forest = make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(matrix, label)
    with pytest.raises(NoPortableForm, match="SimpleImputer -> RandomForestClassifier has no portable scorer"):
        export_portable(forest, HOLDOUT)


def test_a_tampered_or_foreign_file_is_refused_naming_it(tmp_path: Path) -> None:
    export = export_portable(logistic_pipeline(SPECS), HOLDOUT)
    path = tmp_path / "scorer.npz"
    path.write_bytes(export.data[:-10])
    with pytest.raises(PortableFormError, match="sha256 [0-9a-f]{12} differs from the card"):
        read_scorer(path, export.card_entry["sha256"])
    with pytest.raises(PortableFormError, match="not a portable scorer file"):
        read_scorer(path)
    with pytest.raises(PortableFormError, match="cannot read"):
        read_scorer(tmp_path / "missing.npz")
    with pytest.raises(PortableFormError, match="not a portable scorer file"):
        scorer_from_bytes(b"\x80\x04 a pickle")
