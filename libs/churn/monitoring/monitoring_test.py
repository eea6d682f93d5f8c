"""Drift: suitable tests per feature kind, no false alarm on noise, FAIL on a real shift, the
production model's features (listed when skipped), clear errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from churn.config.settings import MonitoringSettings
from churn.features.schema import FeatureSpec, feature_specs, schema_to_json
from churn.monitoring import twosample
from churn.monitoring.drift import (
    FAIL, OK, DriftConfigError, WindowSample, sample, bin_counts, bin_edges, compare_feature, compare_samples, drift_check,
    model_specs, one_row_per_user, select_specs, drift_report, windows, training_window,
)
from churn.features.rows import feature_dates, read_features
from churn.monitoring.report import write_report
from churn.pipeline import steps
from churn.pipeline.testing import tiny_settings
from churn.registry.registry import ModelRegistry
from churn.scoring.batch import load_production
from churn.storage.files import DataError
from churn.storage.paths import DataPaths

CFG = MonitoringSettings()
ALPHA = CFG.ks_alpha / 40
QUIZ = FeatureSpec("quiz_mean_14d", "numeric", 0.0, 100.0, nullable=True)
COUNT = FeatureSpec("active_days_14d", "numeric", 0.0, 14.0)


def _draw(spec: FeatureSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Realistic shapes: categorical codes, point masses (ties) at 0, counts, NaNs."""
    if spec.kind == "categorical":
        return rng.integers(0, len(spec.categories), n).astype(float)
    values = np.where(rng.random(n) < 0.3, 0.0, rng.poisson(4.0, n)).astype(float)
    if spec.nullable:
        values[rng.random(n) < 0.25] = np.nan
    return values


def _quiz(n: int, missing: float, rng: np.random.Generator, mean: float = 60.0) -> np.ndarray:
    values = np.clip(rng.normal(mean, 15.0, n), 0, 100)
    values[rng.random(n) < missing] = np.nan
    return values


def test_identical_distributions_at_small_n_are_ok_where_fixed_psi_cries_wolf():
    specs, _ = select_specs(feature_specs())
    naive_alarms = statuses = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        base = np.column_stack([_draw(s, 200, rng) for s in specs])
        recent = np.column_stack([_draw(s, 200, rng) for s in specs])
        status, results, thresholds = compare_samples(base, recent, specs, CFG)
        statuses += status != OK
        naive_alarms += sum(r.psi >= CFG.psi_warn for r in results)
        assert all(r.baseline_n == r.recent_n == 200 for r in results)
        assert thresholds["tests"] == len(specs) + sum(s.nullable or s.kind == "categorical" for s in specs)
    assert statuses == 0
    assert naive_alarms > 0  # the fixed 0.10 threshold alone would have fired on identical data


def test_a_real_shift_in_a_small_sample_fails():
    rng = np.random.default_rng(0)
    base = rng.binomial(14, 0.5, 200).astype(float)
    recent = rng.binomial(14, 0.25, 200).astype(float)
    result = compare_feature(COUNT, base, recent, CFG, ALPHA)
    assert result.status == FAIL and result.value_test == "chi2" and result.value_p_value < 1e-6
    assert result.value_psi_low >= CFG.psi_fail and "values" in result.reason


def test_a_small_real_change_of_the_missing_share_does_not_borrow_the_noise_of_value_bins():
    """The false FAIL of the previous version: at 200 rows the missing share really moved
    (4% -> 13%, Fisher agrees) while the values did not; the PSI over all bins, inflated by
    the noise of ten value bins, crossed 0.25. Now each question needs its own PSI."""
    rng = np.random.default_rng(3)
    fails_before = 0
    for _ in range(30):
        base, recent = _quiz(200, 0.04, rng), _quiz(170, 0.13, rng)
        result = compare_feature(QUIZ, base, recent, CFG, ALPHA)
        assert result.status != FAIL, result.reason
        fails_before += result.psi >= CFG.psi_fail and result.missing_p_value < 0.05
    assert fails_before > 0  # the old rule (total PSI + a missing-share test) would have failed


def test_a_large_change_of_the_missing_share_fails_on_its_own():
    rng = np.random.default_rng(1)
    result = compare_feature(QUIZ, _quiz(2000, 0.05, rng), _quiz(2000, 0.45, rng), CFG, ALPHA)
    assert result.status == FAIL and result.reason.startswith("missing share")
    assert result.missing_test == "fisher" and result.missing_p_value < 1e-12
    assert result.value_p_value > ALPHA  # values of the present rows did not move


def test_each_kind_gets_its_own_test():
    rng = np.random.default_rng(0)
    country = next(s for s in feature_specs() if s.name == "country")
    cases = [(QUIZ, _quiz(300, 0.1, rng), "continuous", "ks", "fisher"),
             (COUNT, rng.binomial(14, 0.4, 300).astype(float), "count", "chi2", None),
             (country, rng.integers(0, 6, 300).astype(float), "categorical", "chi2", "fisher")]
    for spec, values, kind, test, missing in cases:
        result = compare_feature(spec, values, values[::-1].copy(), CFG, ALPHA)
        assert (result.value_kind, result.value_test, result.missing_test) == (kind, test, missing)
        assert result.status == OK


def test_chi_square_on_sparse_counts_keeps_its_level_thanks_to_pooling():
    """Counts with rare values (tickets: mostly 0) break the chi-square approximation unless
    sparse bins are pooled; under no change the test must reject at most about alpha."""
    rng = np.random.default_rng(7)
    p = np.array([0.90, 0.06, 0.025, 0.01, 0.004, 0.001])
    rejections = 0
    for _ in range(2000):
        base, recent = rng.multinomial(200, p), rng.multinomial(180, p)
        rejections += twosample.chi_square(base, recent).p_value < 0.01
    assert rejections <= 2000 * 0.02
    table = twosample.pool_sparse(np.array([[180, 12, 5, 2, 1], [150, 20, 6, 3, 1]]))
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    assert expected.min() >= twosample.MIN_EXPECTED and table.sum() == 380


def test_psi_lower_bound_discounts_the_noise_of_small_samples():
    bound = twosample.psi_lower_bound
    assert bound(0.20, 10, 200, 200, 1e-3) == 0.0  # about the noise level at 200 rows
    assert bound(0.30, 10, 200, 200, 1e-3) < 0.05
    assert 0.0 < bound(0.30, 10, 20000, 20000, 1e-3) < 0.30
    assert bound(3.0, 10, 200, 200, 1e-3) > 0.25  # a gross shift is certain even at 200
    values = [bound(0.5, 10, n, n, 1e-3) for n in (200, 2000, 20000, 200000)]
    assert values == sorted(values) and values[-1] > 0.45


def test_ties_and_nan_get_their_own_bins():
    base = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, np.nan])
    edges = bin_edges(base, 10)
    assert edges[0] == 0.0  # the point mass at 0 is one bin, not nine empty ones
    counts = bin_counts(base, edges, categorical=False, n_categories=0)
    assert counts.sum() == len(base) and counts[-1] == 1 and counts.max() == 6
    value, used, _ = twosample.psi(counts, counts)
    assert value == 0.0


def test_features_are_the_model_s_own_and_every_skipped_one_has_a_reason():
    model = feature_specs((7, 21))  # not the configured windows: the card decides
    card = {"version": "v1", "feature_schema": schema_to_json(model)}
    specs, skipped = select_specs(model_specs(card))
    assert {s.name for s in specs} | set(skipped) == {s.name for s in model}
    assert "active_days_21d" in {s.name for s in specs} and "active_days_30d" not in {s.name for s in specs}
    assert skipped["days_since_signup"].startswith("calendar-driven")
    assert "payment_success_21d" in skipped and "payment_success_30d" not in skipped
    specs, skipped = select_specs(model, ("logins_7d", "days_since_signup"))
    assert [s.name for s in specs] == ["days_since_signup", "logins_7d"]
    assert skipped["active_days_7d"] == "not listed in monitoring.features" and len(skipped) == len(model) - 2
    with pytest.raises(DriftConfigError, match="logins_30d"):
        select_specs(model, ("logins_7d", "logins_30d"))
    with pytest.raises(DriftConfigError, match="feature_schema"):
        model_specs({"version": "old"})


def test_one_row_per_user_is_deterministic():
    import pandas as pd

    frame = pd.DataFrame({"user_id": np.repeat([1, 2, 3], 5),
                          "as_of_date": np.tile(pd.date_range("2025-01-01", periods=5), 3)})
    a, b = one_row_per_user(frame), one_row_per_user(frame.sample(frac=1, random_state=1))
    assert a["user_id"].tolist() == [1, 2, 3]
    assert a["as_of_date"].tolist() == b["as_of_date"].tolist()


def test_a_window_sample_fed_day_by_day_equals_all_rows_at_once():
    """Users who appear on later days, rows missing on some days, a day's rows by user id
    (each user once) or several days shuffled together: the rows kept are those of one
    `sample` of every row (the smallest key per user)."""
    import pandas as pd

    rng = np.random.default_rng(7)
    specs = feature_specs()
    days = pd.date_range("2025-03-01", periods=12)
    first_day = rng.integers(0, len(days), 300)
    grid = [(u, d) for u in range(1, 301) for i, d in enumerate(days) if i >= first_day[u - 1] and rng.random() < 0.8]
    frame = pd.DataFrame(grid, columns=["user_id", "as_of_date"])
    for spec in specs:
        frame[spec.name] = _draw(spec, len(frame), rng)
    frame["days_since_last_active"], frame["days_since_signup"] = 0.0, 100.0
    frame = frame.sort_values(["as_of_date", "user_id"], ignore_index=True)
    acc = WindowSample(specs, window_days=30)
    for day in days[:9]:
        acc.add(frame[frame["as_of_date"] == day])
    acc.add(frame[frame["as_of_date"] > days[8]].sample(frac=1, random_state=1))
    whole = sample(frame, specs, window_days=30)
    assert len(whole) == frame["user_id"].nunique() and np.array_equal(acc.ids, np.unique(frame["user_id"]))
    assert np.array_equal(acc.matrix, whole, equal_nan=True)


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory):
    settings = tiny_settings(tmp_path_factory.mktemp("data"))
    assert all(r.exit_code == 0 for r in steps.bootstrap(settings))
    return settings


def _card(settings):
    return load_production(ModelRegistry(DataPaths.from_root(settings.paths.root).root)).card


def test_drift_on_generated_data_ok_then_fail_after_simulated_shift(bootstrapped, tmp_path):
    settings = tiny_settings(tmp_path / "root")
    shutil.copytree(bootstrapped.paths.root, settings.paths.root)
    paths = DataPaths.from_root(settings.paths.root)
    card = _card(settings)
    args = (settings.monitoring, settings.churn.window_days)

    before = drift_check(paths.features_file, card, *args)
    assert before.status != FAIL
    assert before.recent_window[0] > before.training_window[1]  # windows never overlap
    assert before.training_window == card["training_data"]["train_as_of"]
    checked = [f.name for f in before.features]
    assert sorted(checked + list(before.skipped)) == sorted(card["feature_names"])  # each exactly once

    steps.step_generate(settings, simulate_shift=True)
    for step in (steps.step_validate, steps.step_prepare, steps.step_features):
        assert step(settings).exit_code == 0
    after = drift_check(paths.features_file, card, *args)
    assert after.status == FAIL
    assert {"active_days_14d", "watch_minutes_14d"} <= {f.name for f in after.drifted()}
    json_path, html_path = write_report(after, paths.monitoring)
    saved = json.loads(json_path.read_text())
    assert saved["status"] == FAIL and saved["schema_version"] == 2
    assert saved["skipped"] == after.skipped and "days_since_signup" in saved["skipped"]
    assert all(f["baseline_n"] == after.baseline_n and f["recent_n"] == after.recent_n for f in saved["features"])
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == len(after.drifted())
    assert f"{after.baseline_n} users" in page and f"{after.recent_n} users" in page
    assert "days_since_signup: calendar-driven" in page


@pytest.mark.parametrize("days_at_once", [1, 3])
def test_drift_check_day_by_day_equals_all_rows_at_once(bootstrapped, days_at_once):
    """drift-check reads one as-of day (or a few: `rows_at_once`) at a time (memory: those
    rows plus one row per user, #16); its report equals the one computed from every row of
    both windows held at once."""
    paths = DataPaths.from_root(bootstrapped.paths.root)
    card, cfg, w = _card(bootstrapped), bootstrapped.monitoring, bootstrapped.churn.window_days
    dates = windows(feature_dates(paths.features_file), training_window(card), cfg.recent_days)
    assert len(dates[0]) > days_at_once and len(dates[1]) > days_at_once
    day_rows = len(read_features(paths.features_file, dates[1][-1:]))
    streamed = drift_check(paths.features_file, card, cfg, w, rows_at_once=days_at_once * day_rows)
    whole = drift_report([read_features(paths.features_file, d) for d in dates], dates, card, cfg, w)
    assert (streamed.baseline_n, streamed.recent_n) == (whole.baseline_n, whole.recent_n) and whole.baseline_n > 50
    got, want = streamed.to_dict(), whole.to_dict()
    got.pop("seconds"), want.pop("seconds")
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)  # NaN-safe


def test_drift_sample_keeps_a_hash_subset_of_users_above_max_sample_users(bootstrapped):
    """Above `monitoring.max_sample_users` each window keeps about that many users (a stable
    hash subset, the same in both windows), so drift-check's memory stops growing with the
    users (#16); streamed day by day it still equals the rows held at once."""
    paths = DataPaths.from_root(bootstrapped.paths.root)
    card, w = _card(bootstrapped), bootstrapped.churn.window_days
    full = drift_check(paths.features_file, card, bootstrapped.monitoring, w)
    cfg = dataclasses.replace(bootstrapped.monitoring, max_sample_users=full.recent_n // 4)
    dates = windows(feature_dates(paths.features_file), training_window(card), cfg.recent_days)
    capped = drift_check(paths.features_file, card, cfg, w, rows_at_once=1)
    whole = drift_report([read_features(paths.features_file, d) for d in dates], dates, card, cfg, w)
    assert 0.5 * full.recent_n / 4 < capped.recent_n < 1.5 * full.recent_n / 4
    assert 0.5 * full.baseline_n / 4 < capped.baseline_n < 1.5 * full.baseline_n / 4
    got, want = capped.to_dict(), whole.to_dict()
    got.pop("seconds"), want.pop("seconds")
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)  # NaN-safe
    assert drift_check(paths.features_file, card, dataclasses.replace(cfg, max_sample_users=10**9), w
                       ).to_dict()["features"] == full.to_dict()["features"]


def test_drift_checks_exactly_the_features_in_the_card(bootstrapped):
    paths = DataPaths.from_root(bootstrapped.paths.root)
    card = dict(_card(bootstrapped))
    card["feature_schema"] = [f for f in card["feature_schema"] if f["name"].endswith("_7d")]
    report = drift_check(paths.features_file, card, bootstrapped.monitoring, bootstrapped.churn.window_days)
    assert {f.name for f in report.features} | set(report.skipped) == {f["name"] for f in card["feature_schema"]}
    card["feature_schema"] = card["feature_schema"] + [dict(card["feature_schema"][0], name="logins_60d")]
    with pytest.raises(DataError, match=r"features\.parquet: no column\(s\) \['logins_60d'\]"):
        drift_check(paths.features_file, card, bootstrapped.monitoring, bootstrapped.churn.window_days)


def test_drift_check_refuses_configured_features_the_model_lacks(bootstrapped):
    paths = DataPaths.from_root(bootstrapped.paths.root)
    cfg = dataclasses.replace(bootstrapped.monitoring, features=("engagement_score",))
    with pytest.raises(DriftConfigError, match="engagement_score"):
        drift_check(paths.features_file, _card(bootstrapped), cfg, bootstrapped.churn.window_days)
