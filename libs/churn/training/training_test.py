"""Training: honest split, leakage guards, metrics on a known example, models, gate, cards."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline

from churn.config.settings import Settings
from churn.errors import RegistryError
from churn.features.matrix import frame_matrix
from churn.features.schema import encode_records, feature_names, feature_specs
from churn.portable.scorer import read_scorer
from churn.registry.registry import ModelRegistry
from churn.revision import code_revision
from churn.training.metrics import evaluate, lift_at
from churn.training.models import build_baseline, build_candidate, predict_risk
from churn.training.split import SplitError, assert_no_forbidden_columns, time_split
from churn.training.train import holdout_gate, register_run, train_models

SPECS = feature_specs()
START = dt.date(2025, 3, 1)


def synthetic_training_set(n_users: int = 300, n_days: int = 70, seed: int = 0,
                           signal: float = 1.0) -> pd.DataFrame:
    """Feature rows whose label depends on recent activity (strength `signal`)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(1, n_users + 1), n_days)
    dates = np.tile(pd.date_range(START, periods=n_days, freq="D").to_numpy(), n_users)
    n = len(users)
    frame = pd.DataFrame({"user_id": users, "as_of_date": dates})
    for spec in SPECS:
        if spec.kind == "categorical":
            frame[spec.name] = rng.choice(list(spec.categories), size=n)
        else:
            values = rng.gamma(2.0, 3.0, size=n)
            if spec.nullable:
                values[rng.random(n) < 0.2] = np.nan
            frame[spec.name] = values
    frame["active_days_30d"] = rng.integers(0, 31, size=n).astype(float)
    logit = signal * (2.0 - frame["active_days_30d"].to_numpy() / 5.0) + rng.normal(0, 1, n)
    frame["churn_label"] = (logit > 0).astype(np.int8)
    return frame


def small_settings(**training) -> Settings:
    s = Settings()
    return dataclasses.replace(
        s, split=dataclasses.replace(s.split, gap_days=30, test_days=10, min_train_days=7),
        training=dataclasses.replace(s.training, **training))


# ------------------------------------------------------------------ split


def test_time_split_has_gap_and_no_date_overlap():
    dates = pd.date_range(START, periods=70, freq="D")
    split = time_split(dates, test_days=10, gap_days=30, min_train_days=7, window_days=30)
    assert split.test_dates[0] - split.train_dates[-1] == dt.timedelta(days=30)
    assert split.gap_days == 30
    assert len(split.test_dates) == 10
    assert not set(split.train_dates) & set(split.test_dates)
    assert split.train_dates[-1] + dt.timedelta(days=30) <= split.test_dates[0]


def test_time_split_refuses_gap_shorter_than_label_window_and_too_little_data():
    dates = pd.date_range(START, periods=70, freq="D")
    with pytest.raises(SplitError, match="gap_days"):
        time_split(dates, test_days=10, gap_days=10, min_train_days=7, window_days=30)
    with pytest.raises(SplitError, match="min_train_days"):
        time_split(dates[:45], test_days=10, gap_days=30, min_train_days=7, window_days=30)


def test_engagement_score_is_refused():
    with pytest.raises(SplitError, match="engagement_score"):
        assert_no_forbidden_columns(["user_id", "engagement_score"])
    frame = synthetic_training_set(50, 60)
    frame["engagement_score"] = 0.5
    with pytest.raises(SplitError, match="engagement_score"):
        train_models(frame, small_settings(), kinds=("logistic_regression",))


def test_split_arrays_have_no_user_date_leakage():
    frame = synthetic_training_set(80, 70)
    run = train_models(frame, small_settings(), kinds=("logistic_regression",))
    train_keys = set(zip(run.train.user_ids.tolist(), run.train.as_of.tolist()))
    test_keys = set(zip(run.test.user_ids.tolist(), run.test.as_of.tolist()))
    assert train_keys and test_keys and not train_keys & test_keys
    assert run.test.as_of.min() - run.train.as_of.max() >= np.timedelta64(30, "D")


# ------------------------------------------------------------------ metrics


def test_metrics_on_a_known_example():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = evaluate(y, p, threshold=0.5)
    assert m["pr_auc"] == pytest.approx(0.8333333, abs=1e-6)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["precision_at_threshold"] == 1.0
    assert m["recall_at_threshold"] == 0.5
    assert m["positive_rate"] == 0.5 and m["rows"] == 4


def test_lift_top_decile():
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)  # the 10 positives have the top scores
    assert lift_at(y, p, 0.1) == pytest.approx(10.0)
    assert lift_at(y, p[::-1], 0.1) == 0.0


def test_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(np.array([0, 1]), np.array([0.2, np.nan]), 0.5)
    with pytest.raises(ValueError, match="length"):
        evaluate(np.array([0, 1]), np.array([0.2]), 0.5)


# ------------------------------------------------------------------ models


def test_models_take_schema_matrix_with_nan_and_unknown_categories():
    frame = synthetic_training_set(60, 5)
    X = frame_matrix(frame, SPECS)
    y = frame["churn_label"].to_numpy()
    record = {name: None for name in feature_names(SPECS)}
    record.update(is_paid=1, days_since_signup=10, country="XX")  # unknown category -> NaN code
    for name in feature_names(SPECS):
        if record[name] is None and not next(s for s in SPECS if s.name == name).nullable \
                and name not in ("country", "marketing_source"):
            record[name] = 1.0
    row = encode_records(SPECS, [record])
    assert np.isnan(row[0, 1])
    for model in (build_baseline(SPECS), build_candidate(SPECS)):
        model.fit(X, y)
        risk = predict_risk(model, row)
        assert risk.shape == (1,) and 0.0 <= risk[0] <= 1.0


def test_frame_matrix_matches_encode_records():
    frame = synthetic_training_set(5, 2)
    frame["country"] = frame["country"].astype("category")
    frame.loc[0, "marketing_source"] = "unknown-source"
    X = frame_matrix(frame, SPECS)
    records = frame[feature_names(SPECS)].astype(object).where(frame.notna(), None).to_dict("records")
    assert np.array_equal(X, encode_records(SPECS, records), equal_nan=True)


# ------------------------------------------------------------------ training + gate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    frame = synthetic_training_set(300, 70)
    settings = small_settings()
    run = train_models(frame, settings)
    registry = ModelRegistry(tmp_path_factory.mktemp("data"))
    versions = register_run(run, registry, settings, data_digest="d" * 64)
    return run, registry, versions, settings


def test_training_produces_useful_models_and_complete_cards(trained):
    run, registry, versions, _ = trained
    assert [m.kind for m in run.models] == ["logistic_regression", "hist_gradient_boosting"]
    for version, model in zip(versions, run.models):
        assert model.metrics["pr_auc"] > model.metrics["positive_rate"] + 0.2
        card = registry.card(version)
        for key in ("version", "created_at", "model_kind", "feature_schema", "training_data", "metrics",
                    "threshold", "libraries", "code_revision", "model_sha256"):
            assert key in card, key
        assert card["training_data"]["gap_days"] >= 30
        assert card["training_data"]["digest"] == "d" * 64
        assert card["code_revision"] == code_revision()  # the build's stamp (churn.revision)
        assert {"python", "numpy", "sklearn", "pandas"} <= set(card["libraries"])
        png = (registry.models_dir / version / "evaluation.png").read_bytes()
        assert png.startswith(b"\x89PNG")


def test_every_version_is_registered_with_its_portable_scorer(trained):
    """The file the API serves: its sha256 in the card, equal to predict_proba on the holdout."""
    run, registry, versions, _ = trained
    for version, trained_model in zip(versions, run.models):
        entry = registry.card(version)["scorer"]
        path = registry.version_dir(version) / entry["file"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["checked_rows"] == len(run.test.X) and entry["max_abs_diff"] <= 1e-9
        scorer = read_scorer(path, entry["sha256"])
        assert scorer.kind == {"logistic_regression": "linear", "hist_gradient_boosting": "trees"}[trained_model.kind]
        expected = trained_model.model.predict_proba(run.test.X)[:, 1]
        np.testing.assert_allclose(scorer.risk(run.test.X), expected, rtol=0, atol=1e-9)


def test_models_fitted_at_once_equal_models_fitted_one_after_the_other(trained, tmp_path):
    """training.parallel_models: 2 fits (and checks) the two kinds on two threads; the models,
    metrics, figures and portable scorers are those of fits one after the other."""
    run, registry, versions, settings = trained
    assert settings.training.parallel_models == 2
    alone = small_settings(parallel_models=1)
    serial = train_models(synthetic_training_set(300, 70), alone)
    serial_versions = register_run(serial, ModelRegistry(tmp_path), alone, data_digest="d" * 64)
    for at_once, one_by_one in zip(run.models, serial.models):
        assert pickle.dumps(at_once.model) == pickle.dumps(one_by_one.model), at_once.kind
        assert at_once.metrics == one_by_one.metrics and at_once.png == one_by_one.png
    for version, serial_version in zip(versions, serial_versions):
        scorer = registry.card(version)["scorer"]
        assert scorer == ModelRegistry(tmp_path).card(serial_version)["scorer"]


def test_a_model_without_a_portable_form_is_registered_but_never_promoted(trained, tmp_path):
    run, _, _, settings = trained
    forest = make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=5, random_state=0))
    forest.fit(run.train.X, run.train.y)
    odd = dataclasses.replace(run, models=[dataclasses.replace(run.models[0], kind="random_forest", model=forest)])
    registry = ModelRegistry(tmp_path)
    (version,) = register_run(odd, registry, settings, data_digest="f" * 64)
    assert registry.card(version)["scorer"] is None
    with pytest.raises(RegistryError, match=r"model_kind 'random_forest'\) has no portable scorer"):
        registry.promote(version, reason="forced", gate=None)
    assert registry.get_alias() is None


def test_gate_accepts_first_and_better_refuses_worse_on_same_holdout(trained, tmp_path):
    run, registry, (baseline, candidate), settings = trained
    gate = holdout_gate("pr_auc", 0.0)
    first = registry.promote(baseline, reason="first", gate=gate)
    assert first.promoted and first.decision.reason == "no production model yet"

    # a worse model: trained on shuffled labels, registered with the SAME holdout file
    noise = synthetic_training_set(300, 70, seed=5, signal=0.0)
    weak_run = train_models(noise, settings, kinds=("logistic_regression",))
    weak_run.test = run.test  # evaluate on the same holdout rows
    (weak,) = register_run(weak_run, registry, settings, data_digest="e" * 64)
    refused = registry.promote(weak, reason="weak", gate=gate)
    assert not refused.promoted and registry.get_alias() == baseline
    figures = refused.decision.metrics
    assert figures["production"] > figures["candidate"]
    assert figures["holdout_rows"] == run.test.rows

    # production re-scored on the candidate's holdout must equal its own card figure there
    assert figures["production"] == pytest.approx(registry.card(baseline)["metrics"]["pr_auc"])

    # an impossible bar refuses even the better candidate; a zero bar decides by the figures
    strict = registry.promote(candidate, reason="strict", gate=holdout_gate("pr_auc", 1.0))
    assert not strict.promoted
    # with the weak model in production, the baseline's lead over it on the same rows decides:
    # a bar just above the lead refuses it, a bar just below promotes it
    assert registry.promote(weak, reason="weak in production", gate=None).promoted
    lead = figures["production"] - figures["candidate"]
    assert lead > 0
    above = registry.promote(baseline, reason="bar above", gate=holdout_gate("pr_auc", lead + 1e-6))
    assert not above.promoted and registry.get_alias() == weak
    below = registry.promote(baseline, reason="bar below", gate=holdout_gate("pr_auc", lead - 1e-6))
    assert below.promoted and registry.get_alias() == baseline
    assert below.decision.metrics["candidate"] - below.decision.metrics["production"] == pytest.approx(lead)
    history = registry.history()
    assert [h["action"] for h in history][:3] == ["promote", "refused", "refused"]
    assert history[1]["metrics"]["candidate"] == figures["candidate"]
