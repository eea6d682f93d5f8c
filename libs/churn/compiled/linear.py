"""The logistic-regression fast path: the whole pipeline folded into per-column terms.

Why it is exact: every supported step acts on columns independently. A numeric column
becomes median/constant-imputed, optionally flagged as missing, then standardised, so its
contribution to the logit is w * (imputed x) + w' * isnan(x) + constant; a categorical
column one-hot encoded contributes the coefficient of its category (0 when unknown). The
logit is the intercept plus these terms: a handful of numpy operations instead of
ColumnTransformer's per-call machinery. Supported steps: ColumnTransformer of Pipelines of
SimpleImputer (NaN, with or without indicator) -> StandardScaler -> OneHotEncoder; anything
else returns None (and `churn.compiled.scorer` keeps sklearn).

Sums are row-wise (`einsum`), never a BLAS matrix product: BLAS blocking changes the rounding
with the number of rows, and a user's risk must not depend on the batch it is scored in
(batch shards must equal a full run, one API request must equal the same row in a batch).
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn.portable.scorer import LinearForm, LogitFunction, NumericTerm, TableTerm, linear_logit

Term = Union[NumericTerm, TableTerm]


def compile_linear(model: Any) -> LogitFunction | None:
    """The logit of a (Pipeline ending in a) binary LogisticRegression, or None."""
    form = linear_form(model)
    return linear_logit(form) if form is not None else None


def linear_form(model: Any) -> LinearForm | None:
    """The portable form of a (Pipeline ending in a) binary LogisticRegression, or None if the
    preprocessing is not one this module understands."""
    steps = list(model.steps) if isinstance(model, Pipeline) else [("model", model)]
    final = steps[-1][1]
    if type(final) is not LogisticRegression or final.coef_.shape[0] != 1:
        return None
    coef = np.asarray(final.coef_[0], dtype=np.float64)
    intercept = float(final.intercept_[0])
    pre = [step for _, step in steps[:-1] if step not in (None, "passthrough")]
    if len(pre) == 1 and isinstance(pre[0], ColumnTransformer):
        terms = _column_transformer_terms(pre[0], coef)
    else:
        terms = _plain_chain_terms(pre, getattr(model, "n_features_in_", None), coef)
    if terms is None:
        return None
    return LinearForm(intercept, tuple(t for t in terms if isinstance(t, NumericTerm)),
                      tuple(t for t in terms if isinstance(t, TableTerm)))


def _plain_chain_terms(pre: list[Any], width: int | None, coef: np.ndarray) -> list[Term] | None:
    flat: list[Any] = []
    for step in pre:
        inner = _flatten(step)
        if inner is None:
            return None
        flat.extend(inner)
    if width is None:
        return None
    term = _chain_term(flat, list(range(int(width))), coef)
    return list(term) if term is not None else None


def _column_transformer_terms(ct: ColumnTransformer, coef: np.ndarray) -> list[Term] | None:
    terms: list[Term] = []
    for name, transformer, columns in ct.transformers_:
        if transformer == "drop":
            continue
        indices = int_columns(columns)
        out = ct.output_indices_.get(name)
        if indices is None or out is None:
            return None
        if not indices:
            continue
        steps = _flatten(transformer)
        if steps is None:
            return None
        term = _chain_term(steps, indices, coef[out])
        if term is None:
            return None
        terms.extend(term)
    return terms


def int_columns(columns: Any) -> list[int] | None:
    array = np.asarray(columns)
    if array.dtype == bool:
        return [int(i) for i in np.flatnonzero(array)]
    if array.dtype.kind in "iu":
        return [int(i) for i in array.ravel()]
    return None


def _flatten(transformer: Any) -> list[Any] | None:
    if transformer == "passthrough":
        return []
    if isinstance(transformer, Pipeline):
        flat: list[Any] = []
        for _, step in transformer.steps:
            inner = _flatten(step)
            if inner is None:
                return None
            flat.extend(inner)
        return flat
    if isinstance(transformer, (SimpleImputer, StandardScaler, OneHotEncoder)):
        return [transformer]
    return None


def _chain_term(steps: Sequence[Any], columns: list[int], coef: np.ndarray) -> list[Term] | None:
    """The logit contribution of `columns` through imputer? -> scaler? -> one-hot? steps.

    Outputs before the one-hot are affine in either an imputed value or, for an imputer
    with `add_indicator`, the missingness (0/1) of a column: output = scale * base + shift.
    """
    fill = np.full(len(columns), np.nan)
    flagged: list[int] = []  # input columns whose missing indicator follows the values
    scale = np.ones(len(columns))
    shift = np.zeros(len(columns))
    for position, step in enumerate(steps):
        if isinstance(step, SimpleImputer):
            scaled = bool(np.any(scale != 1.0) or np.any(shift != 0.0))
            if scaled or flagged or not _plain_imputer(step, len(columns)):
                return None
            fill = np.where(np.isnan(fill), np.asarray(step.statistics_, dtype=np.float64), fill)
            if step.add_indicator:
                flagged = [columns[int(i)] for i in step.indicator_.features_]
                scale = np.ones(len(columns) + len(flagged))
                shift = np.zeros(len(columns) + len(flagged))
        elif isinstance(step, StandardScaler):
            width = len(scale)
            mean = step.mean_ if step.with_mean else np.zeros(width)
            std = step.scale_ if step.with_std else np.ones(width)
            if np.shape(mean) != (width,) or np.shape(std) != (width,):
                return None
            shift = (shift - mean) / std
            scale = scale / std
        elif isinstance(step, OneHotEncoder) and position == len(steps) - 1 and not flagged:
            return _one_hot_term(step, columns, fill, scale, shift, coef)
        else:
            return None
    if coef.size != len(scale):
        return None
    weights = coef * scale
    n = len(columns)
    return [_numeric_term(columns, fill, weights[:n], flagged, weights[n:], float(np.dot(coef, shift)))]


def _plain_imputer(imputer: SimpleImputer, width: int) -> bool:
    """NaN-only imputer whose every column kept a finite statistic (none was dropped)."""
    stats = np.asarray(getattr(imputer, "statistics_", []), dtype=np.float64)
    missing = imputer.missing_values
    missing_is_nan = isinstance(missing, float) and np.isnan(missing)
    return missing_is_nan and stats.size == width and bool(np.all(np.isfinite(stats)))


def _numeric_term(
    columns: list[int], fill: np.ndarray, weights: np.ndarray, flagged: list[int], flag_weights: np.ndarray,
    offset: float,
) -> NumericTerm:
    return NumericTerm(np.asarray(columns, dtype=np.int64), np.asarray(fill, dtype=np.float64),
                       np.asarray(weights, dtype=np.float64), np.asarray(flagged, dtype=np.int64),
                       np.asarray(flag_weights, dtype=np.float64), float(offset))


def _one_hot_term(
    encoder: OneHotEncoder,
    columns: list[int],
    fill: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    coef: np.ndarray,
) -> list[Term] | None:
    """One table per column: category code -> its coefficient (unknown codes add 0)."""
    if encoder.drop_idx_ is not None or _has_infrequent(encoder) or len(encoder.categories_) != len(columns):
        return None
    if not (np.all(scale == 1.0) and np.all(shift == 0.0)):
        return None
    if sum(len(c) for c in encoder.categories_) != coef.size:
        return None
    tables: list[tuple[int, np.ndarray, np.ndarray, float]] = []
    start = 0
    for column, categories, filled in zip(columns, encoder.categories_, fill):
        values = np.asarray(categories, dtype=np.float64)
        if values.size == 0 or np.any(~np.isfinite(values)) or np.any(values != np.round(values)):
            return None
        weights = coef[start:start + len(values)]
        start += len(values)
        tables.append((column, values.astype(np.int64), weights, float(filled)))
    return _table_term(tables)


def _has_infrequent(encoder: OneHotEncoder) -> bool:
    infrequent = getattr(encoder, "infrequent_categories_", None)
    return infrequent is not None and any(i is not None for i in infrequent)


def _table_term(tables: list[tuple[int, np.ndarray, np.ndarray, float]]) -> list[TableTerm]:
    """Per column: table[code - lowest] = coefficient; the last slot (unknown codes) is 0."""
    terms = []
    for column, codes, weights, filled in tables:
        lowest = int(codes.min())
        table = np.zeros(int(codes.max()) - lowest + 2)
        table[codes - lowest] = weights
        terms.append(TableTerm(int(column), table, lowest, float(filled)))
    return terms
