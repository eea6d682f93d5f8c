"""The training set's label and keys, and the holdout set stored with each model version.

Frames become matrices through `churn.features.matrix.frame_matrix`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

LABEL = "churn_label"
KEYS = ("user_id", "as_of_date")


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
