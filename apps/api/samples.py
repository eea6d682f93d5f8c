"""Rows derived from the feature schema alone: OpenAPI examples and load checks.

Why from the schema: the API must check a model and document its request before any data
exists (a fresh cluster), so these rows are built from names, ranges and categories only.
The check rows that verify a compiled scorer come the same way from
`churn.compiled.check_rows.valid_rows`.
"""

from __future__ import annotations

from typing import Sequence

from churn.features.schema import FeatureSpec


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
