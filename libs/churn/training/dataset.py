"""DataFrame -> schema matrix, and the training/holdout arrays of one run.

Why here and not at predict time: only offline code (pandas) turns frames into matrices;
serving and the models only ever see the float64 matrix laid out by `churn.features.schema`.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import pandas as pd

from churn.features.schema import FeatureSpec

LABEL = "churn_label"
KEYS = ("user_id", "as_of_date")


def frame_matrix(frame: pd.DataFrame, specs: Sequence[FeatureSpec]) -> np.ndarray:
    """Schema-ordered float64 matrix of `frame`; categorical strings -> codes, unknown -> NaN.

    Categorical columns that are already numeric are taken as codes. Positional (`.to_numpy`)
    throughout: no index alignment can move a value to another row.
    """
    missing = [s.name for s in specs if s.name not in frame.columns]
    if missing:
        raise ValueError(f"feature columns missing from the frame: {missing}")
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


def holdout_bytes(matrix: np.ndarray, labels: np.ndarray, user_ids: np.ndarray, as_of: np.ndarray) -> bytes:
    """The gate's evaluation set as compressed .npz bytes (stored in the model version)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, X=matrix, y=labels.astype(np.int8), user_id=np.asarray(user_ids, np.int64),
                        as_of=np.asarray(as_of).astype("datetime64[D]").astype(np.int64))
    return buf.getvalue()


def read_holdout(path: Any) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a stored holdout file."""
    with np.load(path) as data:
        return data["X"].astype(np.float64), data["y"].astype(np.float64)
