"""DataFrame -> the schema's float64 matrix (offline code only: pandas).

Why here, beside the schema: training, batch scoring and drift all turn feature frames into
the matrix laid out by `churn.features.schema`; serving and the models only ever see that
matrix, so this is the one place where column names meet column positions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from churn.errors import DataError
from churn.features.schema import FeatureSpec


def frame_matrix(frame: pd.DataFrame, specs: Sequence[FeatureSpec]) -> np.ndarray:
    """Schema-ordered float64 matrix of `frame`; categorical strings -> codes, unknown -> NaN.

    Categorical columns that are already numeric are taken as codes. Positional (`.to_numpy`)
    throughout: no index alignment can move a value to another row.
    """
    missing = [s.name for s in specs if s.name not in frame.columns]
    if missing:
        raise DataError(f"feature columns missing from the frame: {missing}")
    out = np.empty((len(frame), len(specs)), dtype=np.float64)
    for j, spec in enumerate(specs):
        column = frame[spec.name]
        if spec.kind == "categorical" and not pd.api.types.is_numeric_dtype(column.dtype):
            codes = _category_codes(column, spec.categories)
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _category_codes(column: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Codes in `categories` order (-1 = missing/unknown); categorical dtypes are remapped
    through their (few) categories instead of converting every row to a string."""
    wanted = pd.Index(list(categories))
    if isinstance(column.dtype, pd.CategoricalDtype):
        lookup = np.append(wanted.get_indexer(column.cat.categories.astype(str)), -1)
        return lookup[column.cat.codes.to_numpy()]
    return wanted.get_indexer(column.astype(object).to_numpy())
