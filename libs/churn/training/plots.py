"""Evaluation figure per model: PR curve + calibration curve, as PNG bytes.

Why PNG bytes: the figure is stored inside the model's registry version, beside its card,
through the same atomic write as the model. Drawn with Pillow (`churn.plotting.charts`), not
matplotlib: the import and two renders were about 0.9 s of `train`'s CPU at 2,000 users.
"""

from __future__ import annotations

import numpy as np

from churn.plotting.charts import Line, Panel, panels_png


def evaluation_png(y_true: np.ndarray, risk: np.ndarray, title: str, average_precision: float | None,
                   bins: int = 10) -> bytes:
    """The PR curve and the calibration (reliability) curve side by side.

    `average_precision`: the holdout's PR-AUC as the metrics computed it (the legend shows the
    card's figure, not a second computation of it).
    """
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(risk, dtype=np.float64)
    base = float(y.mean())
    pr_lines, cal_lines = [], []
    if 0 < y.sum() < len(y):
        precision, recall, _ = precision_recall_curve(y, p)
        pr_lines.append(Line(recall, precision, f"AP = {average_precision:.3f}"))
        prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        cal_lines.append(Line(prob_pred, prob_true, "model", markers=True))
    pr_lines.append(Line(np.array([0.0, 1.0]), np.array([base, base]), f"base rate {base:.3f}", "grey", dashed=True))
    cal_lines.insert(0, Line(np.array([0.0, 1.0]), np.array([0.0, 1.0]), "perfect", "grey", dashed=True))
    return panels_png([
        Panel("precision-recall", "recall", "precision", pr_lines, ymax=1.02, legend="lower left"),
        Panel("calibration", "mean predicted risk", "observed churn rate", cal_lines, legend="upper left"),
    ], title)
