"""Rows derived from the feature schema alone: OpenAPI examples, load checks, probes.

Why from the schema: the API must check a model and document its request before any data
exists (a fresh cluster), so these rows are built from names, ranges and categories only.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from churn.features.schema import FeatureSpec

UNBOUNDED_SPAN = 200.0


def typical_row(specs: Sequence[FeatureSpec]) -> dict[str, object]:
    """Mid-range numerics, first category: a plausible user."""
    return {s.name: _typical_value(s) for s in specs}


def sample_rows(specs: Sequence[FeatureSpec]) -> list[dict[str, object]]:
    """A typical row, and the same row with every nullable feature null."""
    typical = typical_row(specs)
    sparse = {s.name: (None if s.nullable else typical[s.name]) for s in specs}
    return [typical, sparse]


def _typical_value(spec: FeatureSpec) -> object:
    if spec.kind == "categorical":
        return spec.categories[0]
    low = spec.minimum if spec.minimum is not None else 0.0
    high = spec.maximum if spec.maximum is not None else low + 10.0
    return float(round((low + high) / 2.0, 2))


def probe_matrix(specs: Sequence[FeatureSpec], rows: int = 256, seed: int = 0) -> np.ndarray:
    """Random valid encoded rows (nulls where allowed, many zeros) for comparing predictors."""
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
