"""Holdout metrics. PR-AUC (average precision) is primary: churners are a minority and the
business acts on the top of the ranking, where ROC-AUC is too forgiving.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

PRIMARY_METRIC = "pr_auc"


def _check(y_true: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(risk, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.shape[0]}) and scores ({p.shape[0]}) differ in length")
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty holdout")
    if not np.isfinite(p).all():
        raise ValueError(f"{int((~np.isfinite(p)).sum())} non-finite scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    return y, p


def lift_at(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate among the top `fraction` by score, divided by the overall positive rate."""
    base = y.mean()
    if base == 0:
        return math.nan
    k = max(1, int(math.ceil(len(y) * fraction)))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean() / base)


def pr_auc(y_true: np.ndarray, risk: np.ndarray) -> float:
    y, p = _check(y_true, risk)
    return float(average_precision_score(y, p)) if 0 < y.sum() else math.nan


def evaluate(y_true: np.ndarray, risk: np.ndarray, threshold: float) -> dict[str, Any]:
    """All holdout metrics for one model; undefined ones (one class only) are None."""
    y, p = _check(y_true, risk)
    both = 0 < y.sum() < len(y)
    flagged = p >= threshold
    tp = float((flagged & (y == 1)).sum())
    return {
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p)),
        "threshold": float(threshold),
        "precision_at_threshold": tp / flagged.sum() if flagged.any() else None,
        "recall_at_threshold": tp / y.sum() if y.sum() else None,
        "flagged_share": float(flagged.mean()),
        "lift_top_decile": lift_at(y, p, 0.1) if y.sum() else None,
        "positive_rate": float(y.mean()),
        "rows": int(len(y)),
        "positives": int(y.sum()),
    }
