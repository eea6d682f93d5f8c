"""Feature drift between the production model's TRAINING window and the MOST RECENT window.

What the reference did wrong: it compared the training data with a "current" set that
mostly contained it, and named a feature that did not exist (silently skipped), so drift
could never fire; and fixed PSI thresholds fire on identical data when samples are small.

Here (the method in full: docs/drift.md):
- features: exactly the production model's inputs, from its card's `feature_schema`; every
  one not checked is listed in the report with the reason (calendar-driven by construction,
  or left out by `monitoring.features`);
- windows: the as-of dates the production model trained on (from its card) versus the last
  `monitoring.recent_days` feature dates strictly after them (never overlapping);
- population: the eligible users (not already churned, the label rule), ONE row per user
  per window (a hash-chosen date), so rows are independent and the sample size is honest
  (consecutive days of one user are nearly copies of each other);
- each feature is two questions: did its present VALUES move (PSI over quantile bins of the
  baseline, judged by KS for continuous values or chi-square for counts and categories), and
  did its share of MISSING values move (PSI over missing/present, judged by Fisher's exact
  test). A question is WARN/FAIL only when its PSI crosses the threshold AND its test is
  significant at `ks_alpha` Bonferroni-corrected over every test of the run; the feature
  takes the worse answer. So a missing share that moved a little cannot borrow the PSI of
  noisy value bins (a false FAIL of the previous version), and at 20,000 rows a trivially
  significant move stays OK unless it is also large.
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

from churn.config.settings import MonitoringSettings
from churn.errors import ConfigError, DataError
from churn.features.matrix import frame_matrix
from churn.features.rows import eligible_mask, feature_dates, read_features
from churn.features.schema import FeatureSpec, schema_from_json
from churn.monitoring import twosample
from churn.sampling.users import splitmix64
from churn.storage.files import DataError

log = logging.getLogger(__name__)

OK, WARN, FAIL = "OK", "WARN", "FAIL"
_ORDER = {OK: 0, WARN: 1, FAIL: 2}
_SUBSET_SEED = 7  # the users' subset hash (`users_in_share`), apart from the row keys' (`row_keys`)
REPORT_SCHEMA_VERSION = 2
METHOD_DOC = "docs/drift.md"


class DriftConfigError(ConfigError):
    """The drift check is misconfigured (e.g. names a feature the production model lacks)."""


@dataclass
class FeatureDrift:
    """One feature's answer; field meanings are listed in docs/drift.md (report format)."""

    name: str
    kind: str
    value_kind: str
    status: str
    reason: str
    psi: float
    psi_noise: float
    value_psi: float
    value_psi_low: float
    value_test: str
    value_statistic: float
    value_p_value: float
    missing_psi: float | None
    missing_psi_low: float | None
    missing_test: str | None
    missing_p_value: float | None
    baseline_n: int
    recent_n: int
    baseline_values_n: int
    recent_values_n: int
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
    # the inputs this report records (features digest of its windows, model version) that were
    # no longer the current ones when it was published: {input: {"recorded", "current"}}
    # (`monitoring.report.stale_drift_inputs`); {} when current
    stale_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema_version: int = REPORT_SCHEMA_VERSION
    method: str = METHOD_DOC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status != OK]


# ------------------------------------------------------------------ which features


def calendar_driven(name: str) -> str | None:
    """Why a feature moves with the calendar by construction (None if it does not).

    days_since_signup grows by one a day, and payments happen on the first days of a month,
    so payment counts over windows shorter than a month depend on where the as-of dates fall
    in the month: comparing two windows of different dates would always "drift".
    """
    if name == "days_since_signup":
        return "calendar-driven: grows with time by construction"
    for prefix in ("payment_success_", "payment_failed_"):
        if name.startswith(prefix) and name.endswith("d") and name[len(prefix):-1].isdigit() \
                and int(name[len(prefix):-1]) < 28:
            return "calendar-driven: monthly billing cycle inside a window shorter than a month"
    return None


def model_specs(card: dict[str, Any]) -> tuple[FeatureSpec, ...]:
    """The production model's inputs, from its card (the features it was trained and scores on)."""
    schema = card.get("feature_schema")
    if not schema:
        raise DriftConfigError(f"model card {card.get('version')} has no feature_schema: "
                               "cannot tell which features the production model uses")
    return schema_from_json(schema)


def select_specs(model: Sequence[FeatureSpec], names: Sequence[str] = ()
                 ) -> tuple[list[FeatureSpec], dict[str, str]]:
    """(specs to check, {skipped feature: reason}) among the model's features.

    Empty `names` = every model feature except the calendar-driven ones; explicit names are
    all checked (calendar-driven too) and the model's other features are skipped as not
    configured; a name the model does not have is an error naming it.
    """
    by_name = {s.name: s for s in model}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DriftConfigError(f"monitoring.features: {unknown} not among the production model's features "
                               f"({', '.join(by_name)})")
    if names:
        wanted = set(names)
        skipped = {s.name: "not listed in monitoring.features" for s in model if s.name not in wanted}
    else:
        skipped = {s.name: why for s in model if (why := calendar_driven(s.name))}
    return [s for s in model if s.name not in skipped], skipped


# ------------------------------------------------------------------ one feature


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


def _bin_labels(spec: FeatureSpec, edges: np.ndarray) -> list[str]:
    if spec.kind == "categorical":
        return list(spec.categories) + ["NaN/unknown"]
    cuts = [f"{e:g}" for e in edges]
    labels = [f"< {cuts[0]}"] if cuts else ["all"]
    labels += [f"[{a}, {b})" for a, b in zip(cuts, cuts[1:])]
    labels += [f">= {cuts[-1]}"] if cuts else []
    return labels + ["NaN"]


def can_be_missing(spec: FeatureSpec) -> bool:
    """Whether the missing share is a question of its own (nullable, or unknown categories)."""
    return spec.nullable or spec.kind == "categorical"


def tests_per_feature(spec: FeatureSpec) -> int:
    return 2 if can_be_missing(spec) else 1


def _verdict(low: float, p_value: float, cfg: MonitoringSettings, alpha: float) -> str:
    """FAIL/WARN only when the PSI's lower bound crosses its threshold AND the test agrees."""
    if p_value >= alpha:
        return OK
    return FAIL if low >= cfg.psi_fail else WARN if low >= cfg.psi_warn else OK


def _reason(status: str, part: str, value: float, low: float, test: twosample.Outcome, alpha: float,
            cfg: MonitoringSettings) -> str:
    threshold = cfg.psi_fail if status == FAIL else cfg.psi_warn
    return (f"{part}: PSI {value:.3f} (lower bound {low:.3f}) >= {threshold:g} and {test.test} "
            f"p {test.p_value:.2g} < {alpha:.2g}")


def compare_feature(spec: FeatureSpec, base: np.ndarray, recent: np.ndarray,
                    cfg: MonitoringSettings, alpha: float) -> FeatureDrift:
    """Values and missing share of one feature, each PSI judged by its suitable test."""
    categorical = spec.kind == "categorical"
    edges = np.zeros(0) if categorical else bin_edges(base, cfg.bins)
    bc = bin_counts(base, edges, categorical, len(spec.categories))
    rc = bin_counts(recent, edges, categorical, len(spec.categories))
    total_psi, used, shares = twosample.psi(bc, rc)
    n1, n2 = len(base), len(recent)
    b_ok, r_ok = base[~np.isnan(base)], recent[~np.isnan(recent)]
    kind = twosample.value_kind(spec.kind, b_ok, r_ok)

    value_psi, value_used, _ = twosample.psi(bc[:-1], rc[:-1])
    value_low = twosample.psi_lower_bound(value_psi, int(value_used.sum()), len(b_ok), len(r_ok), alpha)
    value_test = (twosample.kolmogorov_smirnov(b_ok, r_ok) if kind == twosample.CONTINUOUS
                  else twosample.chi_square(bc[:-1], rc[:-1]))
    status = _verdict(value_low, value_test.p_value, cfg, alpha)
    reason = _reason(status, "values", value_psi, value_low, value_test, alpha, cfg) if status != OK else ""

    missing_psi = missing_low = missing_test = None
    if can_be_missing(spec):
        b_miss, r_miss = n1 - len(b_ok), n2 - len(r_ok)
        missing_psi = twosample.psi(np.array([b_miss, len(b_ok)]), np.array([r_miss, len(r_ok)]))[0]
        missing_low = twosample.psi_lower_bound(missing_psi, 2, n1, n2, alpha)
        missing_test = twosample.missing_share_test(b_miss, n1, r_miss, n2)
        missing_status = _verdict(missing_low, missing_test.p_value, cfg, alpha)
        if _ORDER[missing_status] > _ORDER[status]:
            status = missing_status
            reason = _reason(status, "missing share", missing_psi, missing_low, missing_test, alpha, cfg)

    scale = 1.0 / max(n1, 1) + 1.0 / max(n2, 1)
    labels = _bin_labels(spec, edges)
    return FeatureDrift(
        name=spec.name, kind=spec.kind, value_kind=kind, status=status, reason=reason or "no significant change",
        psi=round(total_psi, 6), psi_noise=round(max(int(used.sum()) - 1, 1) * scale, 6),
        value_psi=round(value_psi, 6), value_psi_low=round(value_low, 6), value_test=value_test.test,
        value_statistic=value_test.statistic, value_p_value=value_test.p_value,
        missing_psi=None if missing_psi is None else round(missing_psi, 6),
        missing_psi_low=None if missing_low is None else round(missing_low, 6),
        missing_test=None if missing_test is None else missing_test.test,
        missing_p_value=None if missing_test is None else missing_test.p_value,
        baseline_n=n1, recent_n=n2, baseline_values_n=len(b_ok), recent_values_n=len(r_ok),
        baseline_missing_share=float(np.isnan(base).mean()) if n1 else math.nan,
        recent_missing_share=float(np.isnan(recent).mean()) if n2 else math.nan,
        bins=[lab for lab, u in zip(labels, used) if u],
        baseline_share=shares[0].round(6).tolist(), recent_share=shares[1].round(6).tolist())


# ------------------------------------------------------------------ windows and samples


def row_keys(user_ids: np.ndarray, dates: np.ndarray, seed: int = 0) -> np.ndarray:
    """A stable pseudo-random key per (user, as-of date): each user's row of smallest key is the
    one the check keeps, whichever rows are read together (so it can be chosen day by day)."""
    days = np.asarray(dates).astype("datetime64[D]").astype(np.int64).view(np.uint64)
    return splitmix64((splitmix64(np.asarray(user_ids, dtype=np.int64), seed) ^ days).view(np.int64))


def _first_per_user(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Positions of each user's smallest key, in user_id order (ties: the first position)."""
    if len(ids) and bool(np.all(ids[1:] > ids[:-1])):  # a day's rows: each user once, by id
        return np.arange(len(ids))
    order = np.lexsort((keys, ids))
    sorted_ids = ids[order]
    return order[np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]] if len(order) else order


def one_row_per_user(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One hash-chosen row per user, sorted by user_id (rows of one user on consecutive days are
    near copies): the row of smallest `row_keys`."""
    if frame.empty:
        return frame
    keys = row_keys(frame["user_id"].to_numpy(), frame["as_of_date"].to_numpy(), seed)
    return frame.iloc[_first_per_user(frame["user_id"].to_numpy().astype(np.int64), keys)]


def user_share(users: int, max_users: int) -> float:
    """The share of users a window's sample keeps: all of them up to `max_users`."""
    return min(1.0, max_users / users) if users else 1.0


def users_in_share(user_ids: np.ndarray, share: float) -> np.ndarray:
    """Mask of the users of a stable hash subset holding about `share` of all users (the same
    users in both windows and in every run, whichever rows are read together)."""
    if share >= 1.0:
        return np.ones(len(user_ids), dtype=bool)
    return splitmix64(np.asarray(user_ids, dtype=np.int64), _SUBSET_SEED) < np.uint64(int(share * 2.0**64))


class WindowSample:
    """The schema matrix of one hash-chosen eligible row per user of a window, fed a day (or
    any group of rows) at a time: memory is one group plus one row per sampled user, not the
    window's rows (1,000,000 users x 60 days of features do not fit); `share` < 1 keeps only
    a hash subset of the users (`users_in_share`). Equal to `sample` on all rows."""

    def __init__(self, specs: Sequence[FeatureSpec], window_days: int, seed: int = 0, share: float = 1.0) -> None:
        self.specs, self.window_days, self.seed, self.share = specs, window_days, seed, share
        self.ids = np.empty(0, dtype=np.int64)  # sorted
        self.keys = np.empty(0, dtype=np.uint64)
        self.matrix = np.empty((0, len(specs)), dtype=np.float64)

    def add(self, rows: pd.DataFrame) -> None:
        mask = eligible_mask(rows, self.window_days) & users_in_share(rows["user_id"].to_numpy(), self.share)
        rows = one_row_per_user(rows.loc[mask], self.seed)
        if rows.empty:
            return
        ids = rows["user_id"].to_numpy().astype(np.int64)
        keys = row_keys(ids, rows["as_of_date"].to_numpy(), self.seed)
        self._merge(ids, keys, frame_matrix(rows, self.specs))

    def _merge(self, ids: np.ndarray, keys: np.ndarray, matrix: np.ndarray) -> None:
        """Fold in rows of distinct users sorted by id: a kept user's row is replaced where the
        new key is smaller (ties keep the row already kept), new users are inserted in order.
        In place, not a sort of the kept and new rows together: at 100,000 users that sort and
        the copy of the kept matrix for each of 64 days were 2.5 s of drift-check's CPU."""
        at = np.searchsorted(self.ids, ids)
        kept = at < len(self.ids)
        kept[kept] = self.ids[at[kept]] == ids[kept]
        smaller = kept.copy()
        smaller[kept] = keys[kept] < self.keys[at[kept]]
        self.keys[at[smaller]] = keys[smaller]
        self.matrix[at[smaller]] = matrix[smaller]
        new = ~kept
        if new.any():
            self.ids = np.insert(self.ids, at[new], ids[new])
            self.keys = np.insert(self.keys, at[new], keys[new])
            self.matrix = np.insert(self.matrix, at[new], matrix[new], axis=0)


def sample(rows: pd.DataFrame, specs: Sequence[FeatureSpec], window_days: int, seed: int = 0,
           share: float = 1.0) -> np.ndarray:
    """Schema matrix of one row per eligible user of a window's feature rows (all in memory)."""
    acc = WindowSample(specs, window_days, seed, share)
    acc.add(rows)
    return acc.matrix


def windows(all_dates: Sequence[dt.date], train_as_of: Sequence[str], recent_days: int
            ) -> tuple[list[dt.date], list[dt.date]]:
    """(training dates present in the features, recent dates strictly after training)."""
    start, end = (dt.date.fromisoformat(str(x)[:10]) for x in train_as_of)
    train = [d for d in all_dates if start <= d <= end]
    recent = [d for d in all_dates if d > end][-recent_days:]
    if not train:
        raise DataError(f"no feature rows in the training window {start}..{end} (re-run `ml_jobs features`)")
    if not recent:
        raise DataError(f"no feature dates after the training window (ends {end}, "
                         f"data ends {all_dates[-1] if all_dates else 'n/a'}): nothing recent to compare")
    return train, recent


def training_window(card: dict[str, Any]) -> list[str]:
    train_as_of = card.get("training_data", {}).get("train_as_of")
    if not train_as_of:
        raise DataError(f"model card {card.get('version')} has no training_data.train_as_of")
    return list(train_as_of)


def compare_samples(base: np.ndarray, recent: np.ndarray, specs: Sequence[FeatureSpec],
                    cfg: MonitoringSettings) -> tuple[str, list[FeatureDrift], dict[str, Any]]:
    """(overall status, per-feature results, thresholds) for two schema matrices.

    Bonferroni over every test of the run (one per feature, two when it can be missing):
    the chance of any false FAIL under no drift stays below `ks_alpha`.
    """
    n_tests = sum(tests_per_feature(s) for s in specs)
    alpha = cfg.ks_alpha / max(n_tests, 1)
    results = [compare_feature(s, base[:, j], recent[:, j], cfg, alpha) for j, s in enumerate(specs)]
    status = max((r.status for r in results), key=_ORDER.__getitem__, default=OK)
    thresholds = {"psi_warn": cfg.psi_warn, "psi_fail": cfg.psi_fail, "bins": cfg.bins, "alpha": cfg.ks_alpha,
                  "tests": n_tests, "alpha_per_test": alpha, "min_sample_size": cfg.min_sample_size}
    return status, results, thresholds


def drift_report(frames: Sequence[pd.DataFrame], dates: Sequence[Sequence[dt.date]], card: dict[str, Any],
                 cfg: MonitoringSettings, window_days: int, seed: int = 0, source: str = "features"
                 ) -> DriftReport:
    """The report for the feature rows of the training window and of the recent window.

    Apart from reading, this is the whole check: `drift_check` feeds the rows day by day to
    the same samplers; the false-alarm test (tests/drift) passes rows computed in memory.
    """
    t0 = time.perf_counter()
    specs, skipped = _specs(card, cfg, frames, source)
    recent = frames[1]
    newest = recent.loc[recent["as_of_date"] == recent["as_of_date"].max()] if len(recent) else recent
    share = user_share(len(newest), cfg.max_sample_users)
    base, recent = (sample(rows, specs, window_days, seed, share) for rows in frames)
    return _report(base, recent, specs, skipped, dates, card, cfg, t0)


def _specs(card: dict[str, Any], cfg: MonitoringSettings, frames: Sequence[pd.DataFrame], source: str
           ) -> tuple[tuple[FeatureSpec, ...], list[str]]:
    specs, skipped = select_specs(model_specs(card), cfg.features)
    absent = [s.name for s in specs if any(s.name not in rows.columns for rows in frames)]
    if absent:
        raise DataError(f"{source}: no column(s) {absent}, which the production model {card.get('version')} "
                        "uses (re-run `ml_jobs features`)")
    return specs, skipped


def _report(base: np.ndarray, recent: np.ndarray, specs: Sequence[FeatureSpec], skipped: list[str],
            dates: Sequence[Sequence[dt.date]], card: dict[str, Any], cfg: MonitoringSettings, t0: float
            ) -> DriftReport:
    status, results, thresholds = compare_samples(base, recent, specs, cfg)
    (train_dates, recent_dates) = dates
    report = DriftReport(
        status, [train_dates[0].isoformat(), train_dates[-1].isoformat()],
        [recent_dates[0].isoformat(), recent_dates[-1].isoformat()], len(base), len(recent),
        str(card.get("version")), thresholds, results, skipped,
        min(len(base), len(recent)) < cfg.min_sample_size, round(time.perf_counter() - t0, 3))
    log.info("drift %s: %d vs %d users, %d of %d features drifted, %d skipped, in %.2fs", status, len(base),
             len(recent), len(report.drifted()), len(results), len(skipped), report.seconds)
    return report


def drift_check(features_path: Any, card: dict[str, Any], cfg: MonitoringSettings, window_days: int,
                seed: int = 0, rows_at_once: int = 1) -> DriftReport:
    """Compare the production model's training window with the recent window of a features file.

    The rows are read a few as-of days at a time into `WindowSample`s, as many days as hold
    about `rows_at_once` rows (`sharding.shard_users`; at least one day), so memory is that
    many rows plus one row per user, not the windows' rows (#16: 1,000,000 users); at 2,000
    users one read of 6 days instead of 6 reads of one (each read and matrix has a fixed cost)."""
    t0 = time.perf_counter()
    dates = windows(feature_dates(features_path), training_window(card), cfg.recent_days)
    first = read_features(features_path, dates[1][-1:])
    specs, skipped = _specs(card, cfg, [first], str(features_path))
    days_at_once = max(1, rows_at_once // max(len(first), 1))  # a day holds about as many rows as the newest
    share = user_share(len(first), cfg.max_sample_users)  # the newest day: about a row per user
    if share < 1.0:
        log.info("drift: %d users on %s, above monitoring.max_sample_users (%d): a hash subset of %.1f%% of them",
                 len(first), dates[1][-1], cfg.max_sample_users, 100 * share)
    samples = []
    for window in dates:
        acc = WindowSample(specs, window_days, seed, share)
        rest = [day for day in window if day != dates[1][-1]]
        if len(rest) < len(window):
            acc.add(first)
        for start in range(0, len(rest), days_at_once):
            acc.add(read_features(features_path, rest[start:start + days_at_once]))
        samples.append(acc.matrix)
    del first
    report = _report(samples[0], samples[1], specs, skipped, dates, card, cfg, t0)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
