"""Score distribution: the distribution of predicted risk, a label-free signal of model health.

Why: churn labels arrive W days late; the share of users above the operating threshold
and the risk quantiles move at once when inputs or the model go wrong (e.g. a NaN flood
or a mis-scaled feature), and are compared with the holdout figures in the model card.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np

from churn.pipeline import recorded_inputs
from churn.registry.registry import ModelRegistry
from churn.scoring.batch import read_scores
from churn.storage.files import DataError, atomic_write_json
from churn.storage.paths import DataPaths

log = logging.getLogger(__name__)

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def risk_distribution(risk: np.ndarray, threshold: float, bins: int = 20) -> dict[str, Any]:
    """Quantiles, a histogram on [0, 1] and the share at or above `threshold`."""
    risk = np.asarray(risk, dtype=np.float64)
    counts, edges = np.histogram(risk, bins=bins, range=(0.0, 1.0))
    empty = len(risk) == 0
    return {
        "rows": int(len(risk)),
        "mean": None if empty else float(risk.mean()),
        "quantiles": {} if empty else {str(q): float(v) for q, v in zip(QUANTILES, np.quantile(risk, QUANTILES))},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        "threshold": float(threshold),
        "share_above_threshold": None if empty else float((risk >= threshold).mean()),
        "nan_scores": int(np.isnan(risk).sum()),
    }


def stale_predictions(paths: DataPaths, registry: ModelRegistry, day: dt.date) -> dict[str, dict[str, Any]]:
    """The stale recorded inputs of the predictions of `day` ({} when current), each logged
    as a WARNING naming the predictions, the input and both values."""
    stale = recorded_inputs.stale(recorded_inputs.check_predictions(paths, registry, day))
    for name, values in stale.items():
        log.warning("%s: scored from %s %s, the current %s is %s: the scores (and this distribution) "
                    "are not the production model's view of the current features; run `ml_jobs batch-score`",
                    paths.predictions / day.isoformat(), name, values["recorded"], name, values["current"])
    return stale


def distribution_path(paths: DataPaths, day: dt.date) -> Path:
    """monitoring/score_distribution/<day>.json: one file per day, replaced by one rename."""
    return paths.monitoring / "score_distribution" / f"{day.isoformat()}.json"


def score_distribution(paths: DataPaths, registry: ModelRegistry,
                       as_of: dt.date | None = None) -> tuple[Path, dict[str, Any]]:
    """Write monitoring/score_distribution/<as_of>.json for the scores of `as_of` (default latest).

    The threshold is the scoring model's own (its card's `threshold`, where its holdout
    metrics were measured), so the share above it compares with `holdout_flagged_share`.

    `stale_inputs`: the inputs the scores recorded (features digest of the day, model
    version) that differ from the current ones (`churn.pipeline.recorded_inputs`), each
    {"recorded", "current"}; also a log WARNING naming the predictions. The report is
    written all the same (it describes the scores as they are; exit unchanged).
    """
    day, scores = read_scores(paths, as_of)
    versions = sorted(set(scores["model_version"].astype(str)))
    if len(versions) != 1:
        raise DataError(f"{paths.predictions / day.isoformat()}: scores of several model versions {versions} "
                        "(re-run `ml_jobs batch-score`)")
    card = registry.card(versions[0])
    threshold = float(card["threshold"])
    metrics = card.get("metrics", {})
    stale = stale_predictions(paths, registry, day)
    report = {"as_of": day.isoformat(), "model_versions": versions,
              **risk_distribution(scores["risk"].to_numpy(), threshold),
              "reference": {"holdout_positive_rate": metrics.get("positive_rate"),
                            "holdout_flagged_share": metrics.get("flagged_share")},
              "stale_inputs": stale}
    path = atomic_write_json(distribution_path(paths, day), report)
    log.info("score distribution %s: %d scores, mean %.3f, %.1f%% above %.2f -> %s", day, report["rows"],
             report["mean"] or float("nan"), 100 * (report["share_above_threshold"] or 0.0), threshold, path)
    return path, report
