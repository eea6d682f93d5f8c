"""The fastest risk function for a fitted model that equals its predict_proba, else predict_proba.

Why: sklearn's `predict_proba` spends most of its time outside the model's arithmetic. For one
row it spends ~1 ms in validation, ColumnTransformer bookkeeping and thread pools (measured:
1.4 ms for the logistic pipeline, 0.8 ms for gradient boosting), which would cap one API worker
below 1,000 req/s; in batch the logistic pipeline scores about 1M rows/s (validation,
per-transformer copies, a dense one-hot matrix). The model always receives the float64 schema
matrix (`churn.features.schema`), so the same arithmetic can be done with a few numpy operations:

- `linear` (linear.py): a LogisticRegression after imputation, scaling and one-hot encoding is
  intercept + sum of per-column terms (affine for numerics, tables for codes);
- `trees` (trees.py): a binary HistGradientBoostingClassifier evaluated for all trees at once
  on flattened node arrays.

Both compile to a LOGIT function; the sigmoid and the chunking are churn.portable's, the
same code the API runs on the portable form.

Batch size: the linear path beats predict_proba at every size (4x at 200k rows); the tree path
only up to a few thousand rows (one row: ~18 us vs ~1 ms; from ~10k rows sklearn's compiled
per-tree loop wins, 2.6 vs 4 us/row on one thread, more with threads). Callers that score large
batches say so (`large_batches=True`) and keep predict_proba for trees.

Safety: `compile_scorer` only returns a compiled function after checking that it equals
`predict_proba` on the caller's probe rows (|diff| <= 1e-9, on the whole probe and row by
row); anything unrecognised, failing or disagreeing falls back to `predict_proba` under
`sklearn.config_context(assume_finite=True, skip_parameter_validation=True)`, which is always
correct.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import sklearn
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from churn.compiled.linear import compile_linear, linear_form
from churn.compiled.trees import compile_trees, forest_form
from churn.portable.scorer import (LogitFunction, RiskFunction, in_chunks, risk_from_logit, risk_function,
                                   scorer_bytes, sha256_hex)

log = logging.getLogger(__name__)

COMPILERS: tuple[tuple[str, Callable[[Any], LogitFunction | None]], ...] = (
    ("linear", compile_linear),
    ("trees", compile_trees),
)
LARGE_BATCH_KINDS = frozenset({"linear"})  # faster than predict_proba on large batches too
AGREEMENT_TOLERANCE = 1e-9
SINGLE_ROW_CHECKS = 32


@dataclass(frozen=True)
class Scorer:
    """A risk function (float64 schema matrix -> P(churn) per row) and the path that produced it."""

    kind: str  # "linear" | "trees" | "sklearn"
    risk: RiskFunction


def compile_scorer(model: Any, probe: np.ndarray, threads: int = 1, large_batches: bool = False) -> Scorer:
    """The fastest risk function for `model` that agrees with predict_proba on `probe`.

    `threads` caps OpenMP in the sklearn fall-back (0 = library default, no per-call cap);
    `large_batches`: only paths that are faster than predict_proba on large batches too.
    """
    reference = sklearn_scorer(model, threads)
    expected = reference(probe)
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if [int(c) for c in getattr(final, "classes_", [])] != [0, 1]:
        return Scorer("sklearn", reference)
    for kind, compiler in COMPILERS:
        if large_batches and kind not in LARGE_BATCH_KINDS:
            continue
        try:
            logit = compiler(model)
        except Exception:  # fitted internals of an unforeseen shape: keep sklearn's path
            logit = None
        if logit is None:
            continue
        risk = risk_from_logit(logit)
        if _agrees(risk, probe, expected):
            return Scorer(kind, risk)
        log.warning("compiled %s scorer does not reproduce predict_proba on the probe rows: not used", kind)
    return Scorer("sklearn", reference)


def sklearn_scorer(model: Any, threads: int = 1) -> RiskFunction:
    """predict_proba[:, class 1] in chunks, with sklearn's per-call input checks switched off.

    Safe because callers pass schema matrices they validated and encoded themselves (finite
    or NaN where the schema allows it). `threads` caps OpenMP (0 = library default):
    oversubscribed OpenMP spin-waits badly.
    """
    column = positive_class_column(model)

    def chunk(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(matrix)[:, column], dtype=np.float64)

    chunked = in_chunks(chunk)

    def risk(matrix: np.ndarray) -> np.ndarray:
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            if not threads:
                return chunked(matrix)
            with threadpool_limits(limits=threads):
                return chunked(matrix)

    return risk


def positive_class_column(model: Any) -> int:
    """Index of class 1 (churn) in predict_proba; ValueError if the model has no such class."""
    classes = [int(c) for c in getattr(model, "classes_", [])]
    if 1 not in classes:
        raise ValueError(f"model classes {classes} do not include 1 (churn)")
    return classes.index(1)


def _agrees(fast: RiskFunction, probe: np.ndarray, expected: np.ndarray) -> bool:
    """Equal on the whole probe AND row by row (fast paths may special-case one row)."""
    try:
        got = fast(probe)
        singles = np.concatenate([fast(probe[i:i + 1]) for i in range(min(len(probe), SINGLE_ROW_CHECKS))])
    except Exception:  # an unforeseen model shape: the reference path stays
        return False
    if got.shape != expected.shape:
        return False
    return bool(np.all(np.abs(got - expected) <= AGREEMENT_TOLERANCE)
                and np.all(np.abs(singles - expected[:len(singles)]) <= AGREEMENT_TOLERANCE))


# ---------------------------------------------------------------- the portable artifact

SCORER_FILE = "scorer.npz"
SINGLE_ROW_EXPORT_CHECKS = 256  # holdout rows also scored one by one (the API's request path); 2,000 took
# a tenth of `train` at 2,000 users; portable/scorer_test checks the one-row path bit for bit (500 + edge rows)
PORTABLE_KINDS = ("linear", "trees")


class NoPortableForm(ValueError):
    """The model has no portable form (or it does not reproduce predict_proba): not servable."""


@dataclass(frozen=True)
class PortableExport:
    """The scorer file's bytes and its card entry (`card["scorer"]`)."""

    data: bytes
    card_entry: dict[str, Any]


def export_portable(model: Any, check_rows: np.ndarray, meta: dict[str, Any] | None = None,
                    expected: np.ndarray | None = None) -> PortableExport:
    """The portable scorer of `model`, checked equal to predict_proba on `check_rows` (the holdout).

    Equal means |diff| <= 1e-9 on every row scored all at once, and on the first
    SINGLE_ROW_EXPORT_CHECKS rows scored one by one (as the API scores single requests). NoPortableForm names the model type when no form reproduces it.
    `expected`: predict_proba's P(churn) of `check_rows` when the caller has it already
    (training has scored the holdout for its metrics; predict_proba again would repeat it).
    """
    if [int(c) for c in getattr(_final_step(model), "classes_", [])] != [0, 1]:
        raise NoPortableForm(f"{type(model).__name__}: classes must be [0, 1] for a portable scorer")
    if expected is None:
        expected = sklearn_scorer(model)(check_rows)
    elif np.shape(expected) != (len(check_rows),):
        raise ValueError(f"expected: {np.shape(expected)} risks for {len(check_rows)} check rows")
    problems = []
    for kind, build in (("linear", linear_form), ("trees", forest_form)):
        try:
            form = build(model)
        except Exception as exc:  # fitted internals of an unforeseen shape
            problems.append(f"{kind}: {exc!r}")
            continue
        if form is None:
            continue
        risk = risk_function(form)
        diff = _max_difference(risk, check_rows, expected)
        if diff is None or diff > AGREEMENT_TOLERANCE:
            problems.append(f"{kind} form differs from predict_proba by {diff} on {len(check_rows)} rows")
            continue
        data = scorer_bytes(form, meta or {})
        return PortableExport(data, {"file": SCORER_FILE, "kind": kind, "sha256": sha256_hex(data),
                                     "checked_rows": int(len(check_rows)), "max_abs_diff": float(diff)})
    shape = " -> ".join(type(step).__name__ for step in _steps(model))
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise NoPortableForm(f"{shape} has no portable scorer: supported are a LogisticRegression after "
                         f"imputation/scaling/one-hot encoding, and a binary HistGradientBoostingClassifier{detail}")


def _steps(model: Any) -> list[Any]:
    return [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]


def _final_step(model: Any) -> Any:
    return _steps(model)[-1]


def _max_difference(risk: RiskFunction, rows: np.ndarray, expected: np.ndarray) -> float | None:
    """max |risk - expected| over all rows at once and each row alone (None if it fails)."""
    try:
        whole = risk(rows)
        alone = min(len(rows), SINGLE_ROW_EXPORT_CHECKS)
        singles = np.concatenate([risk(rows[i:i + 1]) for i in range(alone)]) if alone else whole[:0]
    except Exception:
        return None
    if whole.shape != expected.shape:
        return None
    return float(max(np.max(np.abs(whole - expected), initial=0.0),
                     np.max(np.abs(singles - expected[:len(singles)]), initial=0.0)))
