"""Drift: no false alarm on identical small samples, FAIL on a simulated shift, clear errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from churn.config.settings import MonitoringSettings
from churn.features.schema import feature_specs
from churn.monitoring.drift import (
    FAIL, OK, DriftConfigError, bin_counts, bin_edges, compare_feature, drift_check, one_row_per_user, psi,
    select_specs,
)
from churn.monitoring.report import write_report
from churn.pipeline import steps
from churn.pipeline.testing import tiny_settings
from churn.registry.registry import ModelRegistry
from churn.scoring.batch import load_production
from churn.storage.paths import DataPaths

CFG = MonitoringSettings()


def _draw(spec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Realistic shapes: categorical codes, point masses (ties) at 0, counts, NaNs."""
    if spec.kind == "categorical":
        return rng.integers(0, len(spec.categories), n).astype(float)
    values = np.where(rng.random(n) < 0.3, 0.0, rng.poisson(4.0, n)).astype(float)
    if spec.nullable:
        values[rng.random(n) < 0.25] = np.nan
    return values


def test_identical_distributions_at_small_n_are_ok_where_fixed_psi_cries_wolf():
    specs, _ = select_specs((), (7, 14, 30))
    alpha = CFG.ks_alpha / len(specs)
    naive_alarms = statuses = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        for spec in specs:
            result = compare_feature(spec, _draw(spec, 200, rng), _draw(spec, 200, rng), CFG, alpha)
            statuses += result.status != OK
            naive_alarms += result.psi >= CFG.psi_warn
            assert result.baseline_n == result.recent_n == 200
    assert statuses == 0
    assert naive_alarms > 0  # the fixed 0.10 threshold alone would have fired on identical data


def test_a_real_shift_in_a_small_sample_fails():
    spec = next(s for s in feature_specs() if s.name == "active_days_14d")
    rng = np.random.default_rng(0)
    base = rng.binomial(14, 0.5, 200).astype(float)
    recent = rng.binomial(14, 0.25, 200).astype(float)
    result = compare_feature(spec, base, recent, CFG, CFG.ks_alpha / 31)
    assert result.status == FAIL and result.ks_p_value < 1e-6


def test_ties_and_nan_get_their_own_bins():
    base = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, np.nan])
    edges = bin_edges(base, 10)
    assert edges[0] == 0.0  # the point mass at 0 is one bin, not nine empty ones
    counts = bin_counts(base, edges, categorical=False, n_categories=0)
    assert counts.sum() == len(base) and counts[-1] == 1 and counts.max() == 6
    value, used, _ = psi(counts, counts)
    assert value == 0.0


def test_unknown_feature_names_are_an_error_naming_them():
    with pytest.raises(DriftConfigError, match="no_such_feature"):
        select_specs(("logins_7d", "no_such_feature"), (7, 14, 30))
    specs, skipped = select_specs(("days_since_signup",), (7, 14, 30))
    assert [s.name for s in specs] == ["days_since_signup"] and skipped == {}
    _, skipped = select_specs((), (7, 14, 30))
    assert "days_since_signup" in skipped and "payment_success_7d" in skipped
    assert "payment_success_30d" not in skipped


def test_one_row_per_user_is_deterministic():
    import pandas as pd

    frame = pd.DataFrame({"user_id": np.repeat([1, 2, 3], 5),
                          "as_of_date": np.tile(pd.date_range("2025-01-01", periods=5), 3)})
    a, b = one_row_per_user(frame), one_row_per_user(frame.sample(frac=1, random_state=1))
    assert a["user_id"].tolist() == [1, 2, 3]
    assert a["as_of_date"].tolist() == b["as_of_date"].tolist()


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory):
    settings = tiny_settings(tmp_path_factory.mktemp("data"))
    assert all(r.exit_code == 0 for r in steps.bootstrap(settings))
    return settings


def test_drift_on_generated_data_ok_then_fail_after_simulated_shift(bootstrapped, tmp_path):
    settings = tiny_settings(tmp_path / "root")
    shutil.copytree(bootstrapped.paths.root, settings.paths.root)
    paths = DataPaths.from_root(settings.paths.root)
    card = load_production(ModelRegistry(paths.root)).card
    args = (settings.monitoring, settings.features.windows_days, settings.churn.window_days)

    before = drift_check(paths.features_file, card, *args)
    assert before.status != FAIL
    assert before.recent_window[0] > before.training_window[1]  # windows never overlap
    assert before.training_window == card["training_data"]["train_as_of"]

    steps.step_generate(settings, simulate_shift=True)
    for step in (steps.step_validate, steps.step_prepare, steps.step_features):
        assert step(settings).exit_code == 0
    after = drift_check(paths.features_file, card, *args)
    assert after.status == FAIL
    assert {"active_days_14d", "watch_minutes_14d"} <= {f.name for f in after.drifted()}
    json_path, html_path = write_report(after, paths.monitoring)
    assert json.loads(json_path.read_text())["status"] == FAIL
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == len(after.drifted())
    assert f"{after.baseline_n} users" in page


def test_drift_check_refuses_unknown_configured_features(bootstrapped):
    paths = DataPaths.from_root(bootstrapped.paths.root)
    card = load_production(ModelRegistry(paths.root)).card
    cfg = dataclasses.replace(bootstrapped.monitoring, features=("engagement_score",))
    with pytest.raises(DriftConfigError, match="engagement_score"):
        drift_check(paths.features_file, card, cfg, bootstrapped.features.windows_days, bootstrapped.churn.window_days)
