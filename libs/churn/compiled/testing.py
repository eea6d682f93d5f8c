"""Tiny real models of the production shapes, fitted in ~50 ms on schema-derived rows (tests, bench).

Why real: the contract under test is "the compiled scorer equals predict_proba"; it is only
worth something on models fitted the way churn.training.models fits them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn.compiled.check_rows import valid_rows
from churn.features.schema import FeatureSpec, categorical_indices, numeric_indices


def training_data(specs: Sequence[FeatureSpec], rows: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Encoded random rows with a learnable label (low activity -> churn)."""
    matrix = valid_rows(specs, rows=rows, seed=seed)
    names = [s.name for s in specs]
    activity = np.nan_to_num(matrix[:, names.index("active_days_7d")])
    label = (activity + np.random.default_rng(seed).normal(0, 2, rows) < 3.5).astype(int)
    return matrix, label


def logistic_pipeline(specs: Sequence[FeatureSpec], seed: int = 1) -> Pipeline:
    """The baseline's shape (as churn.training.models builds it): one-hot categoricals with
    a constant fill, median-imputed numerics with missing indicators, scaled; balanced LR."""
    categorical = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=-1.0)),
                            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))])
    numeric = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)),
                        ("scale", StandardScaler())])
    pre = ColumnTransformer([("cat", categorical, categorical_indices(specs)),
                             ("num", numeric, numeric_indices(specs))], sparse_threshold=0.0)
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(class_weight="balanced", max_iter=1000,
                                                              C=1.0 / seed))])
    return model.fit(*training_data(specs, seed=seed))


def boosting_model(specs: Sequence[FeatureSpec], seed: int = 1, iterations: int = 30,
                   categorical: bool = True) -> HistGradientBoostingClassifier:
    """The candidate's shape: gradient boosting with native categorical splits (or none)."""
    mask = np.zeros(len(specs), dtype=bool)
    if categorical:
        mask[categorical_indices(specs)] = True
    model = HistGradientBoostingClassifier(max_iter=iterations, random_state=seed,
                                           categorical_features=mask if categorical else None)
    return model.fit(*training_data(specs, seed=seed))
