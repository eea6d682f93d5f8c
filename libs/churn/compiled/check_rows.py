"""Check rows: the rows on which a compiled scorer must equal predict_proba before it is trusted.

Why two kinds: the API only ever sends rows its schema validated (`valid_rows`: valid codes,
nulls where allowed), and must not refuse a model because of inputs it can never receive;
batch scoring reads stored feature tables, so its check also covers the edges (`edge_rows`:
NaN in any column, negative and unknown category codes).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from churn.features.schema import FeatureSpec, categorical_indices

UNBOUNDED_SPAN = 200.0


def valid_rows(specs: Sequence[FeatureSpec], rows: int = 256, seed: int = 0) -> np.ndarray:
    """Random valid encoded rows (nulls where allowed, many zeros), built from the schema alone."""
    rng = np.random.default_rng(seed)
    columns = []
    for spec in specs:
        if spec.kind == "categorical":
            column = rng.integers(0, len(spec.categories), rows).astype(np.float64)
        else:
            low = spec.minimum if spec.minimum is not None else 0.0
            high = spec.maximum if spec.maximum is not None else low + UNBOUNDED_SPAN
            column = rng.uniform(low, high, rows)
            column[rng.random(rows) < 0.2] = low  # counts are often exactly zero
            if spec.nullable:
                column[rng.random(rows) < 0.2] = math.nan
        columns.append(column)
    return np.column_stack(columns)


def edge_rows(specs: Sequence[FeatureSpec], rows: int = 512, seed: int = 0) -> np.ndarray:
    """Rows that exercise every branch: NaNs anywhere, large values, unknown category codes."""
    rng = np.random.default_rng(seed)
    X = rng.gamma(1.5, 8.0, size=(rows, len(specs)))
    X[rng.random(X.shape) < 0.15] = np.nan
    for col in categorical_indices(specs):
        X[:, col] = rng.integers(-1, 12, size=rows).astype(np.float64)
        X[rng.random(rows) < 0.1, col] = np.nan
    return X
