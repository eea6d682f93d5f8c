"""Train the baseline and the candidate on an honest time split, evaluate, build model cards.

Flow: training set (features + labels per user x as-of date) -> time split with a gap ->
deterministic user subsample (max_train_rows) -> schema matrices -> fit each model ->
holdout metrics + PR/calibration PNG -> card -> registry version (model, card, holdout, png).
The holdout is stored with each version so the promotion gate can re-score the current
production model on exactly the rows the candidate was evaluated on.
"""

from __future__ import annotations

import functools
import io
import logging
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from churn.compiled.scorer import NoPortableForm, export_portable
from churn.config.settings import Settings
from churn.errors import ConfigError, DataError
from churn.features.matrix import frame_matrix
from churn.features.schema import FeatureSpec, feature_names, feature_specs, schema_to_json
from churn.registry.registry import GateDecision, LoadedModel, ModelRegistry, read_version_file
from churn.revision import code_revision
from churn.sampling.users import users_within_budget
from churn.training.sample import LABELLED_ROWS
from churn.training.dataset import LABEL, holdout_bytes, read_holdout
from churn.training.metrics import evaluate
from churn.training.models import MODEL_BUILDERS, predict_risk
from churn.training.plots import evaluation_png
from churn.training.split import TimeSplit, assert_no_forbidden_columns, date_mask, time_split
from churn.training.threads import map_on_threads

log = logging.getLogger(__name__)

HOLDOUT_FILE = "holdout.npz"
PLOT_FILE = "evaluation.png"
GATE_METRICS = ("pr_auc", "roc_auc", "lift_top_decile")


@dataclass
class Arrays:
    """One side of the split as positional arrays (row i of X belongs to user_ids[i])."""

    X: np.ndarray
    y: np.ndarray
    user_ids: np.ndarray
    as_of: np.ndarray

    @property
    def rows(self) -> int:
        return int(len(self.y))


@dataclass
class TrainedModel:
    kind: str
    model: Any
    metrics: dict[str, Any]
    png: bytes
    fit_seconds: float
    holdout_risk: np.ndarray  # predict_proba's P(churn) of `scored`, the holdout matrix it was evaluated on
    scored: np.ndarray | None = None


@dataclass
class TrainingRun:
    """Everything a model card needs about the data and the split."""

    specs: tuple[FeatureSpec, ...]
    split: TimeSplit
    train: Arrays
    test: Arrays
    data: dict[str, Any]
    models: list[TrainedModel] = field(default_factory=list)


def _arrays(frame: pd.DataFrame, specs: Sequence[FeatureSpec]) -> Arrays:
    return Arrays(X=frame_matrix(frame, specs), y=frame[LABEL].to_numpy(dtype=np.float64),
                  user_ids=frame["user_id"].to_numpy(dtype=np.int64),
                  as_of=frame["as_of_date"].to_numpy().astype("datetime64[D]"))


def _budget(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    keep = users_within_budget(frame["user_id"].to_numpy(), max_rows, seed)
    return frame.loc[keep] if not keep.all() else frame


def split_training_set(training_set: pd.DataFrame, settings: Settings) -> TrainingRun:
    """Time split + leakage guards + row budgets -> train/test arrays (no model yet)."""
    assert_no_forbidden_columns(list(training_set.columns))
    missing = [c for c in ("user_id", "as_of_date", LABEL) if c not in training_set.columns]
    if missing:
        raise DataError(f"training set lacks columns {missing}")
    specs = feature_specs(settings.features.windows_days)
    split = time_split(training_set["as_of_date"].to_numpy(), test_days=settings.split.test_days,
                       gap_days=settings.split.gap_days, min_train_days=settings.split.min_train_days,
                       window_days=settings.churn.window_days)
    as_of = training_set["as_of_date"].to_numpy()
    train_frame = training_set.loc[date_mask(as_of, split.train_dates)]
    test_frame = training_set.loc[date_mask(as_of, split.test_dates)]
    seed = settings.training.random_state
    train_frame = _budget(train_frame, settings.training.max_train_rows, seed)
    test_frame = _budget(test_frame, settings.training.max_holdout_rows, seed + 1)
    train, test = _arrays(train_frame, specs), _arrays(test_frame, specs)
    for name, side in (("train", train), ("test", test)):
        if len(np.unique(side.y)) < 2:
            raise DataError(f"{name} split has a single class ({side.rows} rows): need more data")
    data = {"train_rows": train.rows, "test_rows": test.rows,
            "train_users": int(len(np.unique(train.user_ids))),
            "test_users": int(len(np.unique(test.user_ids))),
            "train_positive_rate": float(train.y.mean()), "test_positive_rate": float(test.y.mean()),
            "labelled_rows": int(training_set.attrs.get(LABELLED_ROWS, len(training_set))), **split.describe()}
    return TrainingRun(specs=specs, split=split, train=train, test=test, data=data)


def fit_and_evaluate(run: TrainingRun, kind: str, settings: Settings) -> TrainedModel:
    """Fit one model kind on the train arrays and evaluate it on the holdout."""
    model = MODEL_BUILDERS[kind](run.specs, settings.training.random_state)
    start = time.perf_counter()
    with threadpool_limits(limits=settings.training.threads or None):
        model.fit(run.train.X, run.train.y.astype(np.int64))  # type: ignore[attr-defined]
    seconds = time.perf_counter() - start
    risk = predict_risk(model, run.test.X, settings.training.threads)
    metrics = evaluate(run.test.y, risk, settings.training.threshold)
    png = evaluation_png(run.test.y, risk, f"{kind} - holdout {run.data['test_as_of'][0]}"
                         f"..{run.data['test_as_of'][1]} ({run.test.rows} rows)", metrics["pr_auc"])
    log.info("fitted %s on %d rows in %.1fs: PR-AUC %.4f ROC-AUC %.4f", kind, run.train.rows,
             seconds, metrics["pr_auc"] or float("nan"), metrics["roc_auc"] or float("nan"))
    return TrainedModel(kind, model, metrics, png, seconds, risk, run.test.X)


def train_models(training_set: pd.DataFrame, settings: Settings,
                 kinds: Sequence[str] = ("logistic_regression", "hist_gradient_boosting")) -> TrainingRun:
    """Split, then fit and evaluate every model kind on the same split."""
    unknown = [k for k in kinds if k not in MODEL_BUILDERS]
    if unknown:
        raise ValueError(f"unknown model kind(s) {unknown} (known: {sorted(MODEL_BUILDERS)})")
    run = split_training_set(training_set, settings)
    log.info("split: train %s (%d rows), gap %d days, test %s (%d rows)", run.data["train_as_of"],
             run.train.rows, run.split.gap_days, run.data["test_as_of"], run.test.rows)
    run.models = map_on_threads(lambda kind: fit_and_evaluate(run, kind, settings), kinds,
                                settings.training.parallel_models, settings.training.threads)
    return run


def library_versions() -> dict[str, str]:
    import joblib
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__,
            "sklearn": sklearn.__version__, "pandas": pd.__version__, "joblib": joblib.__version__}


def model_card(run: TrainingRun, trained: TrainedModel, settings: Settings, data_digest: str) -> dict[str, Any]:
    """What the model is and how it was made; `version`/`model_sha256` are added by the registry."""
    return {
        "model_kind": trained.kind,
        "feature_names": feature_names(run.specs),
        "feature_schema": schema_to_json(run.specs),
        "windows_days": list(settings.features.windows_days),
        "label": {"name": LABEL, "churn_window_days": settings.churn.window_days},
        "training_data": {"digest": data_digest, **run.data},
        "metrics": trained.metrics,
        "threshold": settings.training.threshold,
        "fit_seconds": round(trained.fit_seconds, 3),
        "libraries": library_versions(),
        "code_revision": code_revision(),  # stamped by Bazel: churn.revision
        "files": {"holdout": HOLDOUT_FILE, "plot": PLOT_FILE},
    }


def register_run(run: TrainingRun, registry: ModelRegistry, settings: Settings,
                 data_digest: str) -> list[str]:
    """Register every trained model of the run (with holdout + plot); returns the versions."""
    scorer_files: list[dict[str, bytes]] = [{} for _ in run.models]
    # the stored holdout (0.8 s of zlib at 300,000 rows) and the scorers' checks (gradient
    # boosting's: 1.5 s on those rows) at once, on `training.parallel_models` threads
    tasks = [functools.partial(holdout_bytes, run.test.X, run.test.y, run.test.user_ids, run.test.as_of)]
    tasks += [functools.partial(portable_scorer, trained, run, out) for trained, out in zip(run.models, scorer_files)]
    holdout, *scorers = map_on_threads(lambda task: task(), tasks, settings.training.parallel_models,
                                       settings.training.threads)
    versions = []
    for trained, scorer, scorer_file in zip(run.models, scorers, scorer_files):
        card = model_card(run, trained, settings, data_digest)
        card["scorer"] = scorer
        files = {HOLDOUT_FILE: holdout, PLOT_FILE: trained.png, **scorer_file}
        versions.append(registry.register(trained.model, card, files=files))
    return versions


def portable_scorer(trained: TrainedModel, run: TrainingRun, files: dict[str, bytes]) -> dict[str, Any] | None:
    """Add the model's portable scorer to `files` and return its card entry (None: it has none).

    The scorer is what the API serves (scikit-learn is not in its image); it must equal
    predict_proba on the holdout within 1e-9 (`export_portable`). A model without one is
    registered all the same (batch jobs can use it) but refused at promotion. The holdout's
    predict_proba from the evaluation is reused only if it was of this very holdout matrix.
    """
    try:
        export = export_portable(trained.model, run.test.X,
                                 {"feature_schema": schema_to_json(run.specs), "model_kind": trained.kind},
                                 expected=trained.holdout_risk if trained.scored is run.test.X else None)
    except NoPortableForm as exc:
        log.warning("%s: %s; it can be registered but not promoted", trained.kind, exc)
        return None
    files[export.card_entry["file"]] = export.data
    log.info("%s: portable %s scorer equals predict_proba on %d holdout rows (max |diff| %.1e)", trained.kind,
             export.card_entry["kind"], export.card_entry["checked_rows"], export.card_entry["max_abs_diff"])
    return export.card_entry


def holdout_gate(metric: str = "pr_auc", min_improvement: float = 0.0, threads: int = 1):
    """Gate: accept when there is no production model, or when the candidate's `metric` on its
    own holdout exceeds the production model's on THE SAME rows by more than `min_improvement`.
    `threads`: OpenMP threads of the two predictions (`training.threads`; 0 = all cores).
    """
    if metric not in GATE_METRICS:
        raise ConfigError(f"registry.metric: {metric!r} not supported (use one of {GATE_METRICS})")

    def gate(candidate: LoadedModel, production: LoadedModel | None) -> GateDecision:
        if candidate.path is None:
            raise ValueError(f"candidate {candidate.version} has no directory")
        X, y = read_holdout(io.BytesIO(read_version_file(candidate, HOLDOUT_FILE)))  # the bytes registered
        threshold = float(candidate.card.get("threshold", 0.5))
        cand = evaluate(y, predict_risk(candidate.model, X, threads), threshold)[metric]
        figures: dict[str, Any] = {"metric": metric, "candidate": cand, "min_improvement": min_improvement,
                                   "holdout_rows": int(len(y)), "holdout_positives": int(y.sum()),
                                   "holdout_as_of": candidate.card.get("training_data", {}).get("test_as_of")}
        if production is None:
            return GateDecision(True, "no production model yet", {**figures, "production": None})
        if production.card.get("feature_schema") != candidate.card.get("feature_schema"):
            return GateDecision(False, "feature schema differs from production: cannot compare on the "
                                       "same holdout (promote with --force and a reason)",
                                {**figures, "production": None})
        prod = evaluate(y, predict_risk(production.model, X, threads), threshold)[metric]
        figures["production"] = prod
        if cand is None or prod is None:
            return GateDecision(False, f"{metric} undefined on this holdout", figures)
        accepted = cand > prod + min_improvement
        verb = "beats" if accepted else "does not beat"
        return GateDecision(accepted, f"candidate {metric} {cand:.4f} {verb} production {prod:.4f} "
                                      f"+ {min_improvement:g} on the same {len(y)}-row holdout", figures)

    return gate
