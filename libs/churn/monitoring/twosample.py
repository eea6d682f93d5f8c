"""Two-sample statistics of the drift check: PSI as the effect size, a suitable test as the judge.

Why two numbers per question: PSI says how MUCH a distribution moved, but its noise grows
as samples shrink (200 vs 200 identical rows easily reach PSI 0.1); a test says whether the
move is more than noise, but at 20,000 rows it calls every trivial move significant. A
feature drifts only when both agree (the method, thresholds and the choice of test per
feature kind are documented in docs/drift.md).

Which test: KS for continuous values (no binning), a chi-square test of homogeneity for
counts and categories (KS assumes continuity and its p-values are wrong with ties), and
Fisher's exact test for the share of missing values (KS and the value chi-square only see
the values that are present).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CONTINUOUS, COUNT, CATEGORICAL = "continuous", "count", "categorical"
# Cochran's rule for the chi-square approximation: every expected cell count >= 5.
MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class Outcome:
    """One test: its name, statistic and p-value (p = 1.0 when there is nothing to compare)."""

    test: str
    statistic: float
    p_value: float


def value_kind(schema_kind: str, base: np.ndarray, recent: np.ndarray) -> str:
    """categorical (schema), count (every present value a whole number), else continuous.

    Why from the values: a count feature's schema says only "numeric"; what decides the test
    is whether the values tie on a lattice (counts, flags) or spread continuously.
    """
    if schema_kind == "categorical":
        return CATEGORICAL
    values = np.concatenate([base, recent])
    values = values[~np.isnan(values)]
    return COUNT if bool(np.all(values == np.round(values))) else CONTINUOUS


def psi(base_counts: np.ndarray, recent_counts: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(PSI, bins used, [baseline shares, recent shares]) over bins occupied in either sample.

    +0.5 per bin (Jeffreys smoothing) keeps an empty bin from making PSI infinite.
    """
    used = (base_counts + recent_counts) > 0
    b, r = base_counts[used] + 0.5, recent_counts[used] + 0.5
    pb, pr = b / b.sum(), r / r.sum()
    return float(np.sum((pr - pb) * np.log(pr / pb))), used, np.array([pb, pr])


def psi_lower_bound(value: float, bins: int, n1: int, n2: int, alpha: float) -> float:
    """One-sided (1 - alpha) lower confidence bound of the true PSI behind an observed PSI.

    Why: an observed PSI is the true PSI plus noise of about (bins - 1)(1/n1 + 1/n2), with a
    spread of the same order, so at 200 rows a true PSI of 0.14 is often observed above
    0.25. PSI / (1/n1 + 1/n2) is approximately noncentral chi-square with (bins - 1) degrees
    of freedom and noncentrality true PSI / (1/n1 + 1/n2) (the chi-square distance PSI
    approximates); the bound is the smallest noncentrality under which the observed value
    is not in the upper alpha tail (the noncentrality interval used for RMSEA).
    """
    if n1 == 0 or n2 == 0 or bins < 2:
        return 0.0
    scale = 1.0 / n1 + 1.0 / n2
    x, dof = value / scale, bins - 1
    if stats.chi2.sf(x, dof) >= alpha:
        return 0.0
    # sf(x; dof, nc) grows with nc from below alpha (nc = 0) to above 1/2 (nc = x)
    nc = optimize.brentq(lambda nc: stats.ncx2.sf(x, dof, nc) - alpha, 0.0, x, xtol=1e-9 / scale)
    return float(nc * scale)


def pool_sparse(table: np.ndarray, min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """Merge adjacent columns of a 2 x k table until every expected count is >= `min_expected`.

    The expected count of a cell is row total x column total / N, so a column is big enough
    when its total is >= min_expected x N / (smaller row total). Pooling depends only on the
    margins, so it does not peek at the association being tested. A remainder too small to
    stand alone joins the last group.
    """
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] <= 1 or rows.min() == 0:
        return table
    need = min_expected * rows.sum() / rows.min()
    groups: list[np.ndarray] = []
    current = np.zeros(2, dtype=table.dtype)
    for column in table.T:
        current = current + column
        if current.sum() >= need:
            groups.append(current)
            current = np.zeros(2, dtype=table.dtype)
    if current.sum() > 0:
        if groups:
            groups[-1] = groups[-1] + current
        else:
            groups.append(current)
    return np.stack(groups, axis=1)


def chi_square(base_counts: np.ndarray, recent_counts: np.ndarray) -> Outcome:
    """Chi-square test of homogeneity on the (pooled) bin counts of the two samples."""
    table = pool_sparse(np.stack([base_counts, recent_counts]).astype(np.float64))
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return Outcome("chi2", 0.0, 1.0)
    result = stats.chi2_contingency(table)
    return Outcome("chi2", float(result.statistic), float(result.pvalue))


def kolmogorov_smirnov(base: np.ndarray, recent: np.ndarray) -> Outcome:
    """Two-sample KS on the present values (exact for small samples, asymptotic for large)."""
    if len(base) == 0 or len(recent) == 0:
        return Outcome("ks", 0.0, 1.0)
    result = stats.ks_2samp(base, recent)
    return Outcome("ks", float(result.statistic), float(result.pvalue))


def missing_share_test(base_missing: int, base_n: int, recent_missing: int, recent_n: int) -> Outcome:
    """Fisher's exact test on the 2 x 2 table (missing, present) x (baseline, recent).

The statistic reported is the change of the missing share (recent - baseline): the odds
ratio Fisher's test also yields is infinite whenever one window has no missing value.

    Exact at every sample size, so no rule of thumb about small expected counts applies.
    """
    table = np.array([[base_missing, base_n - base_missing], [recent_missing, recent_n - recent_missing]])
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return Outcome("fisher", 0.0, 1.0)
    change = recent_missing / recent_n - base_missing / base_n
    return Outcome("fisher", float(change), float(stats.fisher_exact(table).pvalue))
