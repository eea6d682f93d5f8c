"""Batch-scoring throughput of the production-style logistic model, beside reference baselines.

Run: `./bazelw run //bench:scoring_bench -- --rows 1000000` (or python bench/scoring_bench.py).

Setup: a tiny dataset is generated and a real baseline pipeline trained on it; its feature
rows are tiled to `--rows` user rows (unique user ids, ~1/3 "already churned" rows filtered
out first, as batch scoring does). Measured in the same run:

- ours, compiled      churn.compiled compiled (linear) scorer on the schema matrix
- ours, score_frame   DataFrame -> schema matrix -> scorer -> (user_id, risk) frame
- sklearn matrix      chunked predict_proba on the same matrix (the always-correct fallback)
- reference per-row   predict_proba one row at a time (timed on a sample, extrapolated)
- reference pandas    predict_proba on the filtered DataFrame, scores attached by assigning a
                      fresh Series (pandas index alignment: the reference's NaN/misaligned bug)

The "bad" column counts rows whose score is NaN or differs from the model's own prediction
for that user's row.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from typing import Callable

import numpy as np
import pandas as pd

from churn.compiled.scorer import sklearn_scorer
from churn.features.matrix import frame_matrix
from churn.features.rows import eligible_mask
from churn.invocation.workdir import enter_invocation_directory
from churn.features.schema import feature_names, feature_specs
from churn.pipeline import steps
from churn.pipeline.testing import tiny_settings
from churn.registry.registry import ModelRegistry
from churn.scoring.batch import model_scorer, score_frame
from churn.storage.paths import DataPaths
from churn.storage.tables import read_parquet
from churn.training.models import predict_risk


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _population(paths: DataPaths, rows: int) -> pd.DataFrame:
    base = read_parquet(paths.features_file)
    reps = -(-rows // len(base))
    frame = pd.concat([base] * reps, ignore_index=True).head(rows)
    frame["user_id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def _reference_pandas(model, frame: pd.DataFrame, names: list[str], window_days: int) -> pd.DataFrame:
    eligible = frame.loc[eligible_mask(frame, window_days)]
    out = eligible[["user_id"]].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proba = model.predict_proba(frame_matrix(eligible, feature_specs()))[:, 1]
    out["risk"] = pd.Series(proba)  # aligned on a fresh RangeIndex: the reference's bug
    return out


def main() -> None:
    enter_invocation_directory()  # any relative path as the user typed it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-row-sample", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        settings = tiny_settings(tmp, users=2000, days=90)
        for result in steps.bootstrap(settings):
            assert result.exit_code == 0, result
        paths = DataPaths.from_root(tmp)
        registry = ModelRegistry(paths.root)
        loaded = next(registry.load(v) for v in registry.versions()
                      if registry.card(v)["model_kind"] == "logistic_regression")
        frame = _population(paths, args.rows)

    specs = feature_specs()
    frame = frame.loc[eligible_mask(frame, settings.churn.window_days)].reset_index(drop=True)
    X = frame_matrix(frame, specs)
    n = len(X)
    expected = predict_risk(loaded.model, X)
    scorer = model_scorer(loaded)
    fallback = sklearn_scorer(loaded.model)

    rows = []

    def add(name: str, seconds: float, scored_rows: int, bad: int | str) -> None:
        rows.append((name, scored_rows, seconds, scored_rows / seconds, bad))

    add(f"ours, compiled ({scorer.kind})", _best_of(lambda: scorer.risk(X), args.repeat), n,
        int(np.sum(np.abs(scorer.risk(X) - expected) > 1e-9)))
    scored = score_frame(loaded, frame, scorer)
    add("ours, score_frame (DataFrame in)", _best_of(lambda: score_frame(loaded, frame, scorer), args.repeat), n,
        int(np.sum(np.abs(scored["risk"].to_numpy() - expected) > 1e-9)))
    add("sklearn predict_proba, chunked", _best_of(lambda: fallback(X), args.repeat), n,
        int(np.sum(np.abs(fallback(X) - expected) > 1e-9)))
    k = min(args.per_row_sample, n)
    per_row = _best_of(lambda: [loaded.model.predict_proba(X[i:i + 1]) for i in range(k)], 1)
    add(f"reference per-row (sample {k})", per_row, k, 0)
    # already-churned rows first, as in a grid sorted by signup: the eligible rows' index
    # labels then no longer match a fresh 0..m-1 Series
    churned = frame.iloc[: n // 2].assign(days_since_last_active=np.nan, days_since_signup=400)
    full = pd.concat([churned, frame], ignore_index=True)
    ref = _reference_pandas(loaded.model, full, feature_names(specs), settings.churn.window_days)
    truth = pd.Series(expected, index=ref.index)  # eligible rows of `full` are `frame`, in order
    bad = int(ref["risk"].isna().sum() + (np.abs(ref["risk"] - truth) > 1e-9).sum())
    add("reference pandas alignment", _best_of(
        lambda: _reference_pandas(loaded.model, full, feature_names(specs), settings.churn.window_days),
        args.repeat), len(ref), bad)

    base = rows[2][3]
    print(f"scoring throughput, logistic pipeline, {n:,} eligible user rows, best of {args.repeat}")
    print(f"{'method':36} {'rows':>10} {'seconds':>9} {'rows/s':>12} {'vs sklearn':>10} {'bad':>8}")
    for name, r, s, rate, bad_rows in rows:
        print(f"{name:36} {r:>10,} {s:>9.3f} {rate:>12,.0f} {rate / base:>9.2f}x {bad_rows:>8}")


if __name__ == "__main__":
    main()
