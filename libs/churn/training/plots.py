"""Evaluation figure per model: PR curve + calibration curve, as PNG bytes.

Why PNG bytes: the figure is stored inside the model's registry version, beside its card,
through the same atomic write as the model (`churn.plotting.figures`).
"""

from __future__ import annotations

import numpy as np

from churn.plotting.figures import figure_png, subplots


def evaluation_png(y_true: np.ndarray, risk: np.ndarray, title: str, bins: int = 10) -> bytes:
    """Render the PR curve and the calibration (reliability) curve side by side."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(risk, dtype=np.float64)
    with subplots(1, 2, figsize=(10, 4.2)) as (fig, (ax_pr, ax_cal)):
        if 0 < y.sum() < len(y):
            precision, recall, _ = precision_recall_curve(y, p)
            ax_pr.plot(recall, precision, label=f"AP = {average_precision_score(y, p):.3f}")
            prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="quantile")
            ax_cal.plot(prob_pred, prob_true, marker="o", label="model")
        ax_pr.axhline(y.mean(), color="grey", linestyle="--", label=f"base rate {y.mean():.3f}")
        ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
        ax_cal.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
        ax_cal.set(xlabel="mean predicted risk", ylabel="observed churn rate", title="calibration",
                   xlim=(0, 1), ylim=(0, 1))
        for ax in (ax_pr, ax_cal):
            ax.legend(loc="best")
        fig.suptitle(title)
        return figure_png(fig, dpi=90)
