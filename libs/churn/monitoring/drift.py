"""Feature drift between the production model's TRAINING window and the MOST RECENT window.

What the reference did wrong: it compared the training data with a "current" set that
mostly contained it, and named a feature that did not exist (silently skipped), so drift
could never fire; and fixed PSI thresholds fire on identical data when samples are small.

Here:
- windows: the as-of dates the production model trained on (from its card) versus the last
  `monitoring.recent_days` feature dates strictly after them (never overlapping);
- population: the eligible users (not already churned, the label rule), ONE row per user
  per window (a hash-chosen date), so rows are independent and the sample size is honest
  (consecutive days of one user are nearly copies of each other);
- PSI over quantile bins of the baseline (ties collapse into one bin, NaN is its own bin)
  plus a two-sample KS test on numeric features;
- no crying wolf: under no drift, PSI / (1/n1 + 1/n2) is approximately chi-square with
  (bins - 1) degrees of freedom, so PSI's noise level is (bins - 1)(1/n1 + 1/n2). A feature
  is WARN/FAIL only when its PSI crosses the threshold AND that PSI is significant (and, for
  numerics, KS agrees), at `ks_alpha` Bonferroni-corrected over the features checked.
  The significance test is what protects small samples; `min_sample_size` only flags a
  report as `small_sample` (a hard floor would also hide a gross shift in a small cohort).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from churn.config.settings import MonitoringSettings
from churn.features.matrix import frame_matrix
from churn.features.rows import eligible_mask, feature_dates, read_features
from churn.features.schema import FeatureSpec, feature_specs
from churn.sampling.users import splitmix64

log = logging.getLogger(__name__)

OK, WARN, FAIL = "OK", "WARN", "FAIL"
_ORDER = {OK: 0, WARN: 1, FAIL: 2}


class DriftConfigError(ValueError):
    """The drift check is misconfigured (e.g. names a feature that does not exist)."""


@dataclass
class FeatureDrift:
    name: str
    kind: str
    status: str
    psi: float
    psi_noise: float
    psi_p_value: float
    ks_statistic: float | None
    ks_p_value: float | None
    baseline_n: int
    recent_n: int
    baseline_missing_share: float
    recent_missing_share: float
    bins: list[str] = field(default_factory=list)
    baseline_share: list[float] = field(default_factory=list)
    recent_share: list[float] = field(default_factory=list)


@dataclass
class DriftReport:
    status: str
    training_window: list[str]
    recent_window: list[str]
    baseline_n: int
    recent_n: int
    model_version: str
    thresholds: dict[str, Any]
    features: list[FeatureDrift]
    skipped: dict[str, str] = field(default_factory=dict)
    small_sample: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status != OK]


def calendar_driven(name: str) -> str | None:
    """Why a feature moves with the calendar by construction (None if it does not).

    days_since_signup grows by one a day, and payments happen on the first days of a month,
    so payment counts over windows shorter than a month depend on where the as-of dates fall
    in the month: comparing two windows of different dates would always "drift".
    """
    if name == "days_since_signup":
        return "grows with time by construction"
    for prefix in ("payment_success_", "payment_failed_"):
        if name.startswith(prefix) and name.endswith("d") and name[len(prefix):-1].isdigit() \
                and int(name[len(prefix):-1]) < 28:
            return "monthly billing cycle inside a window shorter than a month"
    return None


def select_specs(names: Sequence[str], windows: Sequence[int]) -> tuple[list[FeatureSpec], dict[str, str]]:
    """(specs to check, {skipped feature: reason}).

    Empty `names` = every schema feature except the calendar-driven ones (reported, not
    silently skipped); explicit names are all checked; unknown names are an error naming them.
    """
    specs = feature_specs(windows)
    if not names:
        skipped = {s.name: why for s in specs if (why := calendar_driven(s.name))}
        return [s for s in specs if s.name not in skipped], skipped
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DriftConfigError(f"monitoring.features: unknown feature(s) {unknown} "
                               f"(known: {', '.join(by_name)})")
    return [by_name[n] for n in names], {}


# ------------------------------------------------------------------ statistics


def bin_edges(baseline: np.ndarray, bins: int) -> np.ndarray:
    """Inner cut points at baseline quantiles; ties collapse so a point mass is one bin."""
    values = baseline[~np.isnan(baseline)]
    if len(values) == 0:
        return np.zeros(0)
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_counts(values: np.ndarray, edges: np.ndarray, categorical: bool, n_categories: int) -> np.ndarray:
    """Counts per bin; the last bin is NaN (missing or unknown category)."""
    nan = np.isnan(values)
    if categorical:
        idx = values[~nan].astype(np.int64)
        counts = np.bincount(idx, minlength=n_categories)[:n_categories]
    else:
        counts = np.bincount(np.searchsorted(edges, values[~nan], side="right"), minlength=len(edges) + 1)
    return np.append(counts, nan.sum())


def psi(base_counts: np.ndarray, recent_counts: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Population stability index over bins occupied in either sample (+0.5 smoothing)."""
    used = (base_counts + recent_counts) > 0
    b, r = base_counts[used] + 0.5, recent_counts[used] + 0.5
    pb, pr = b / b.sum(), r / r.sum()
    return float(np.sum((pr - pb) * np.log(pr / pb))), used, np.array([pb, pr])


def _bin_labels(spec: FeatureSpec, edges: np.ndarray) -> list[str]:
    if spec.kind == "categorical":
        return list(spec.categories) + ["NaN/unknown"]
    cuts = [f"{e:g}" for e in edges]
    labels = [f"< {cuts[0]}"] if cuts else ["all"]
    labels += [f"[{a}, {b})" for a, b in zip(cuts, cuts[1:])]
    labels += [f">= {cuts[-1]}"] if cuts else []
    return labels + ["NaN"]


def compare_feature(spec: FeatureSpec, base: np.ndarray, recent: np.ndarray,
                    cfg: MonitoringSettings, alpha: float) -> FeatureDrift:
    """PSI + KS for one feature and its status under the noise-aware rule."""
    categorical = spec.kind == "categorical"
    edges = np.zeros(0) if categorical else bin_edges(base, cfg.bins)
    n_cat = len(spec.categories)
    bc = bin_counts(base, edges, categorical, n_cat)
    rc = bin_counts(recent, edges, categorical, n_cat)
    value, used, shares = psi(bc, rc)
    n1, n2 = len(base), len(recent)
    dof = max(int(used.sum()) - 1, 1)
    scale = 1.0 / max(n1, 1) + 1.0 / max(n2, 1)
    psi_p = float(stats.chi2.sf(value / scale, dof))
    ks_stat = ks_p = None
    b_ok, r_ok = base[~np.isnan(base)], recent[~np.isnan(recent)]
    if not categorical and len(b_ok) and len(r_ok):
        test = stats.ks_2samp(b_ok, r_ok)
        ks_stat, ks_p = float(test.statistic), float(test.pvalue)
    significant = psi_p < alpha and (ks_p is None or ks_p < alpha or _nan_shift(base, recent, alpha))
    status = OK
    if significant and value >= cfg.psi_warn:
        status = WARN
    if significant and value >= cfg.psi_fail:
        status = FAIL
    labels = _bin_labels(spec, edges)
    return FeatureDrift(
        spec.name, spec.kind, status, round(value, 6), round(dof * scale, 6), psi_p, ks_stat, ks_p, n1, n2,
        float(np.isnan(base).mean()) if n1 else math.nan, float(np.isnan(recent).mean()) if n2 else math.nan,
        [lab for lab, u in zip(labels, used) if u], shares[0].round(6).tolist(), shares[1].round(6).tolist())


def _nan_shift(base: np.ndarray, recent: np.ndarray, alpha: float) -> bool:
    """KS ignores missing values; a change in the missing share is tested on its own."""
    table = np.array([[np.isnan(base).sum(), (~np.isnan(base)).sum()],
                      [np.isnan(recent).sum(), (~np.isnan(recent)).sum()]])
    if (table.sum(axis=0) == 0).any():
        return False
    return bool(stats.chi2_contingency(table)[1] < alpha)


# ------------------------------------------------------------------ windows and samples


def one_row_per_user(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One hash-chosen row per user (rows of one user on consecutive days are near copies)."""
    if frame.empty:
        return frame
    ordered = frame.sort_values(["user_id", "as_of_date"], kind="stable")
    users = ordered["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    pick = starts + (splitmix64(users[starts], seed) % counts.astype(np.uint64)).astype(np.int64)
    return ordered.iloc[pick]


def windows(all_dates: Sequence[dt.date], train_as_of: Sequence[str], recent_days: int
            ) -> tuple[list[dt.date], list[dt.date]]:
    """(training dates present in the features, recent dates strictly after training)."""
    start, end = (dt.date.fromisoformat(str(x)[:10]) for x in train_as_of)
    train = [d for d in all_dates if start <= d <= end]
    recent = [d for d in all_dates if d > end][-recent_days:]
    if not train:
        raise ValueError(f"no feature rows in the training window {start}..{end} (re-run `ml_jobs features`)")
    if not recent:
        raise ValueError(f"no feature dates after the training window (ends {end}, "
                         f"data ends {all_dates[-1] if all_dates else 'n/a'}): nothing recent to compare")
    return train, recent


def drift_check(features_path: Any, card: dict[str, Any], cfg: MonitoringSettings, windows_days: Sequence[int],
                window_days: int, seed: int = 0) -> DriftReport:
    """Compare the production model's training window with the recent window."""
    t0 = time.perf_counter()
    specs, skipped = select_specs(cfg.features, windows_days)
    train_as_of = card.get("training_data", {}).get("train_as_of")
    if not train_as_of:
        raise ValueError(f"model card {card.get('version')} has no training_data.train_as_of")
    train_dates, recent_dates = windows(feature_dates(features_path), train_as_of, cfg.recent_days)
    samples = []
    for dates in (train_dates, recent_dates):
        rows = read_features(features_path, dates)
        rows = one_row_per_user(rows.loc[eligible_mask(rows, window_days)], seed)
        samples.append(frame_matrix(rows, specs))
    base, recent = samples
    alpha = cfg.ks_alpha / max(len(specs), 1)
    results = [compare_feature(s, base[:, j], recent[:, j], cfg, alpha) for j, s in enumerate(specs)]
    status = max((r.status for r in results), key=_ORDER.__getitem__, default=OK)
    report = DriftReport(
        status, [train_dates[0].isoformat(), train_dates[-1].isoformat()],
        [recent_dates[0].isoformat(), recent_dates[-1].isoformat()], len(base), len(recent),
        str(card.get("version")), {"psi_warn": cfg.psi_warn, "psi_fail": cfg.psi_fail, "bins": cfg.bins,
                                   "alpha": cfg.ks_alpha, "alpha_per_feature": alpha,
                                   "min_sample_size": cfg.min_sample_size}, results, skipped,
        min(len(base), len(recent)) < cfg.min_sample_size, round(time.perf_counter() - t0, 3))
    log.info("drift %s: %d vs %d users, %d of %d features drifted in %.2fs", status, len(base), len(recent),
             len(report.drifted()), len(results), report.seconds)
    return report
