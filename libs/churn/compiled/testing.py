"""Real models built by the production builders, fitted in well under a second (tests, bench).

Why the production builders (churn.training.models) and not look-alikes: the contract under
test is "the compiled scorer equals predict_proba", and it is only worth something on the
tree shapes and pipelines that training really registers (depth, leaves, imputation,
one-hot). Only the rows are synthetic: schema-valid random rows with a learnable label.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from churn.compiled.check_rows import valid_rows
from churn.features.schema import FeatureSpec
from churn.training.models import build_baseline, build_candidate


def training_data(specs: Sequence[FeatureSpec], rows: int = 2000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Encoded random rows with a learnable label (low activity -> churn)."""
    matrix = valid_rows(specs, rows=rows, seed=seed)
    names = [s.name for s in specs]
    activity = np.nan_to_num(matrix[:, names.index("active_days_7d")])
    label = (activity + np.random.default_rng(seed).normal(0, 2, rows) < 3.5).astype(int)
    return matrix, label


def logistic_pipeline(specs: Sequence[FeatureSpec], seed: int = 1) -> Pipeline:
    """The production baseline (build_baseline), fitted on `seed`'s rows."""
    return build_baseline(specs, random_state=seed).fit(*training_data(specs, seed=seed))


def boosting_model(specs: Sequence[FeatureSpec], seed: int = 1,
                   categorical: bool = True) -> HistGradientBoostingClassifier:
    """The production candidate (build_candidate), fitted on `seed`'s rows; `categorical=False`
    turns off native categorical splits, to cover the numeric-only tree form too."""
    model = build_candidate(specs, random_state=seed)
    if not categorical:
        model.set_params(categorical_features=None)
    return model.fit(*training_data(specs, seed=seed))
