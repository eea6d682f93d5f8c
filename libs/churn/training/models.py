"""Model pipelines over the schema's float64 matrix (column indices, no DataFrames).

Why indices: the API and batch scoring feed `churn.features.schema` matrices straight into
`predict_proba`, so serving needs neither pandas nor column-name alignment (the reference's
batch scores were misaligned by pandas index alignment).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from threadpoolctl import threadpool_limits
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn.features.schema import FeatureSpec, categorical_indices, numeric_indices

MISSING_CODE = -1.0


def build_baseline(specs: Sequence[FeatureSpec], random_state: int = 0) -> Pipeline:
    """Logistic regression: one-hot categoricals (unknown/NaN = own code), scaled numerics.

    Numerics: median imputation with a missing indicator, because a missing quiz mean
    ("no quiz in the window") is information, not zero.

    Solver: Newton steps with a Cholesky solve (scikit-learn's choice when rows far outnumber
    the ~50 encoded columns): the same penalised optimum, reached in 6 iterations where lbfgs
    stopped at its tolerance after 170 (2,000 users: fit 0.3 s against 0.75 s of CPU, holdout
    PR-AUC 0.8266 against 0.8264; README, Benchmarks).
    """
    categorical = Pipeline([
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CODE)),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])
    numeric = Pipeline([
        # np.median of each column's present values: the statistics of strategy="median"
        # (equal bit for bit), without its masked-array sort of the whole matrix (0.15 s of
        # CPU at 2,000 users' 36,000 rows, of a 0.35 s fit, against 0.02 s; README, Benchmarks)
        ("impute", SimpleImputer(strategy=np.median, add_indicator=True)),
        ("scale", StandardScaler()),
    ])
    pre = ColumnTransformer([
        ("cat", categorical, categorical_indices(specs)),
        ("num", numeric, numeric_indices(specs)),
    ], sparse_threshold=0.0)
    clf = LogisticRegression(class_weight="balanced", solver="newton-cholesky", max_iter=100,
                             random_state=random_state)
    return Pipeline([("pre", pre), ("clf", clf)])


def build_candidate(specs: Sequence[FeatureSpec], random_state: int = 0) -> HistGradientBoostingClassifier:
    """Histogram gradient boosting with native categorical and NaN handling.

    Shallow and small on purpose: consecutive as-of rows of one user are near copies, so deep
    trees memorise users (31-leaf trees x 300 scored a lower holdout PR-AUC than depth 3 x 60
    on the default data when the shape was chosen; today's figures: docs/domain.md, "The honest evaluation protocol"). No early stopping: its random validation rows share users with
    the training rows, so it never stopped, and fixed iterations keep fits deterministic.
    """
    mask = np.zeros(len(specs), dtype=bool)
    mask[categorical_indices(specs)] = True
    return HistGradientBoostingClassifier(
        categorical_features=mask, max_iter=60, learning_rate=0.05, max_depth=3, min_samples_leaf=100,
        l2_regularization=1.0, early_stopping=False, random_state=random_state)


MODEL_BUILDERS: dict[str, Callable[[Sequence[FeatureSpec], int], object]] = {
    "logistic_regression": build_baseline,
    "hist_gradient_boosting": build_candidate,
}


def predict_risk(model: object, matrix: np.ndarray, threads: int = 1) -> np.ndarray:
    """P(churn) per row of the schema matrix, in row order (class 1 column, looked up by label).

    `threads` caps OpenMP (0 = library default): gradient boosting's predict at the default
    of all cores spin-waited on a shared 2-core machine, 0.63 s of CPU against 0.07 s on one
    thread for the 25,680 holdout rows of 2,000 users (README, Benchmarks).
    """
    classes = list(getattr(model, "classes_", [0, 1]))
    with threadpool_limits(limits=threads or None):
        proba = model.predict_proba(np.asarray(matrix, dtype=np.float64))  # type: ignore[attr-defined]
    return np.ascontiguousarray(proba[:, classes.index(1)], dtype=np.float64)
