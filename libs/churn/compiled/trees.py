"""The gradient-boosting fast path: all trees evaluated together on flat node arrays.

Why: sklearn predicts one row by calling a compiled routine per tree through OpenMP
(hundreds of calls, thread wake-ups), ~1 ms or far more on a busy machine. Here the nodes of
all trees are concatenated (children offset, leaves pointing at themselves) and a row is
scored with a few vector operations over all nodes plus one gather per tree level. The
decision rules are sklearn's own (`_predictor.pyx`): numeric `x <= threshold`, NaN to the
node's missing side, categorical splits by bitset with unknown categories as missing. It
reads fitted private attributes (`_predictors`, `_baseline_prediction`, `_preprocessor`,
`_bin_mapper`), which is why `churn.compiled.scorer` checks the result against predict_proba
before use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from churn.compiled.linear import int_columns
from churn.portable.scorer import MISSING_SLOT, ForestForm, LogitFunction, forest_logit


def compile_trees(model: Any) -> LogitFunction | None:
    """The logit of a binary HistGradientBoostingClassifier, or None for other models."""
    form = forest_form(model)
    return forest_logit(form) if form is not None else None


def forest_form(model: Any) -> ForestForm | None:
    """The portable form of a binary HistGradientBoostingClassifier (alone or after
    passthrough steps), or None for other models."""
    steps = list(model.steps) if isinstance(model, Pipeline) else [("model", model)]
    final = steps[-1][1]
    if any(step not in (None, "passthrough") for _, step in steps[:-1]):
        return None
    if type(final) is not HistGradientBoostingClassifier or final.n_trees_per_iteration_ != 1:
        return None
    predictors = getattr(final, "_predictors", None)
    baseline = getattr(final, "_baseline_prediction", None)
    inputs = _boosting_inputs(final)
    if not predictors or baseline is None or inputs is None:
        return None
    known, feature_map = final._bin_mapper.make_known_categories_bitsets()
    return _forest([iteration[0] for iteration in predictors], inputs, known, feature_map,
                   float(np.asarray(baseline).ravel()[0]))


@dataclass(frozen=True)
class _TreeInputs:
    """Where the trees' columns come from in the schema matrix.

    With categorical features sklearn reorders columns (categoricals first) and ordinal-
    encodes categories; folding that into the node arrays spares a per-request remap.
    `ordinal[j]` maps a raw code 0..255 of tree column j to its ordinal (-1: unknown).
    """

    source: np.ndarray
    ordinal: dict[int, np.ndarray]


def _boosting_inputs(model: HistGradientBoostingClassifier) -> _TreeInputs | None:
    pre = getattr(model, "_preprocessor", None)
    if pre is None:
        return _TreeInputs(np.arange(model.n_features_in_, dtype=np.int64), {})
    parts = {name: (transformer, int_columns(columns)) for name, transformer, columns in pre.transformers_}
    encoder, categorical = parts.get("encoder", (None, None))
    _, numeric = parts.get("numerical", (None, None))
    if not isinstance(encoder, OrdinalEncoder) or categorical is None or numeric is None:
        return None
    ordinal: dict[int, np.ndarray] = {}
    for column, categories in enumerate(encoder.categories_):
        values = np.asarray(categories, dtype=np.float64)
        values = values[~np.isnan(values)]
        if np.any(values != np.round(values)) or np.any((values < 0) | (values >= MISSING_SLOT)):
            return None
        table = np.full(MISSING_SLOT, -1, dtype=np.int64)
        table[values.astype(np.int64)] = np.arange(values.size)
        ordinal[column] = table
    return _TreeInputs(np.asarray(categorical + numeric, dtype=np.int64), ordinal)


def _bits(bitset: np.ndarray) -> np.ndarray:
    """The 256 bits of an (8 x uint32) bitset as booleans (bit v = category v)."""
    codes = np.arange(256)
    return ((bitset[codes // 32] >> (codes % 32).astype(np.uint32)) & 1).astype(bool)


def _category_decisions(node: Any, left_bits: np.ndarray, known_bits: np.ndarray, ordinal: np.ndarray) -> np.ndarray:
    """Goes-left for raw codes 0..255 and MISSING_SLOT, as sklearn's predictor decides:
    left if the category is in the node's left set, right if it is a known category,
    else (unknown, NaN, negative) the node's missing-value side."""
    missing_left = bool(node["missing_go_to_left"])
    known = ordinal >= 0
    code = np.where(known, ordinal, 0)
    decisions = np.where(known & left_bits[code], True, np.where(known & known_bits[code], False, missing_left))
    return np.append(decisions, missing_left)


def _forest(predictors: list[Any], inputs: _TreeInputs, known: np.ndarray, feature_map: np.ndarray,
            baseline: float) -> ForestForm:
    """Every tree's nodes in flat arrays, features as schema columns; leaves point at themselves."""
    sizes = [len(p.nodes) for p in predictors]
    roots = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    nodes = np.concatenate([p.nodes for p in predictors])
    is_leaf = nodes["is_leaf"].astype(bool)
    own = np.arange(len(nodes), dtype=np.int64)
    shift = np.repeat(roots, sizes)
    left = np.where(is_leaf, own, nodes["left"].astype(np.int64) + shift)
    right = np.where(is_leaf, own, nodes["right"].astype(np.int64) + shift)
    tree_feature = np.where(is_leaf, 0, nodes["feature_idx"]).astype(np.int64)
    category_row = np.full(len(nodes), -1, dtype=np.int64)
    rows = []
    for tree, predictor in enumerate(predictors):
        for local in np.flatnonzero(predictor.nodes["is_categorical"] & ~predictor.nodes["is_leaf"]):
            node = predictor.nodes[local]
            tree_column = int(node["feature_idx"])
            category_row[roots[tree] + local] = len(rows)
            rows.append(_category_decisions(
                node, _bits(predictor.raw_left_cat_bitsets[node["bitset_idx"]]),
                _bits(known[feature_map[tree_column]]), inputs.ordinal[tree_column]))
    return ForestForm(
        baseline=baseline,
        roots=roots,
        left_child=left,
        right_child=right,
        feature=inputs.source[tree_feature].astype(np.int64),
        threshold=nodes["num_threshold"].astype(np.float64),
        missing_left=nodes["missing_go_to_left"].astype(bool),
        value=np.where(is_leaf, nodes["value"], 0.0).astype(np.float64),
        category_row=category_row,
        category_left=np.array(rows, dtype=bool).reshape(len(rows), MISSING_SLOT + 1),
        depth=max(int(nodes["depth"].max()), 1),
        width=int(inputs.source.size),
    )
