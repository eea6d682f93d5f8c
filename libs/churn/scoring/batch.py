"""Batch scoring: every eligible user as of a date, with the production model.

Alignment: the reference project attached scores to users through pandas index alignment
and ended with NaN for 1,984 of 2,000 users (the rest belonged to other users). Here the
feature matrix, the user ids and the scores are positional numpy arrays taken from the same
rows in the same order; the output frame is built from those arrays, never by joining.

Sharding (`shard=(i, n)`): a user belongs to shard splitmix64(user_id) mod n, stable across
runs and processes, so n Indexed-Job pods score disjoint user sets whose union is the full
population; each writes shard-suffixed files, ranked within the shard only. `ml_jobs
merge-shards N` (churn.scoring.merge) turns them into the files of one full run.

Memory: the day's feature rows are read and scored a piece at a time (`sharding.shard_users`
rows, `feature_batches`); only the scored users' (user_id, as_of_date, risk) are held whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from churn.compiled.check_rows import edge_rows, valid_rows
from churn.compiled.scorer import Scorer, compile_scorer
from churn.config.settings import ShardingSettings
from churn.errors import DataError
from churn.features.matrix import frame_matrix
from churn.features.rows import eligible_mask, feature_batches, feature_dates, features_digest
from churn.features.schema import feature_specs, schema_from_json
from churn.registry.registry import LoadedModel, ModelRegistry, RegistryError
from churn.sampling.users import shard_of
from churn.storage.files import atomic_path, atomic_write_json, is_temp_name
from churn.storage.generations import current, publish
from churn.storage.paths import DataPaths, predictions_area
from churn.storage.tables import atomic_write_parquet, read_parquet

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("user_id", "as_of_date", "risk", "rank", "model_version")


@dataclass(frozen=True)
class ScoreResult:
    """What a batch-score run wrote."""

    as_of: str
    model_version: str
    scorer: str
    rows: int
    eligible: int
    candidates: int
    shard: str | None
    scores_path: str
    top_k_path: str
    summary_path: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_production(registry: ModelRegistry) -> LoadedModel:
    """The verified production model; a clear error if none was promoted yet."""
    version = registry.get_alias()
    if version is None:
        raise RegistryError(f"{registry.aliases_dir / 'production.json'}: no production model "
                            "(run `ml_jobs train` then `ml_jobs promote`)")
    return registry.load(version)


def model_specs(loaded: LoadedModel):
    """The feature schema the model was trained with (from its card)."""
    schema = loaded.card.get("feature_schema")
    return schema_from_json(schema) if schema else feature_specs()


def model_scorer(loaded: LoadedModel, threads: int = 1) -> Scorer:
    """The fastest risk function for large batches that equals the model's predict_proba on
    valid and edge-case rows (stored feature tables may hold NaN anywhere and codes the schema
    does not list)."""
    specs = model_specs(loaded)
    check_rows = np.vstack([valid_rows(specs), edge_rows(specs)])
    return compile_scorer(loaded.model, check_rows, threads, large_batches=True)


def score_frame(loaded: LoadedModel, features: pd.DataFrame, scorer: Scorer | None = None) -> pd.DataFrame:
    """(user_id, as_of_date, risk) for each row of `features`, in the same row order."""
    specs = model_specs(loaded)
    scorer = scorer or model_scorer(loaded)
    matrix = frame_matrix(features, specs)
    risk = scorer.risk(matrix)
    return pd.DataFrame({
        "user_id": features["user_id"].to_numpy(dtype=np.int64),
        "as_of_date": features["as_of_date"].to_numpy(),
        "risk": risk,
    })


def rank_scores(scores: pd.DataFrame, model_version: str) -> pd.DataFrame:
    """Add rank (1 = highest risk; ties broken by user_id) and the model version; sort by rank."""
    order = np.lexsort((scores["user_id"].to_numpy(), -scores["risk"].to_numpy()))
    ranked = scores.iloc[order].reset_index(drop=True)
    ranked["rank"] = np.arange(1, len(ranked) + 1, dtype=np.int64)
    ranked["model_version"] = model_version
    return ranked[list(OUTPUT_COLUMNS)]


def shard_suffix(shard: tuple[int, int] | None) -> str:
    """File-name suffix of a shard's outputs ('' for a full run); the merge finds shards by it."""
    return "" if shard is None else f".shard-{shard[0]:03d}-of-{shard[1]:03d}"


def resolve_as_of(paths: DataPaths, as_of: dt.date | None) -> dt.date:
    """`as_of` if it has feature rows, else the latest feature date when not given."""
    dates = feature_dates(paths.features_file)
    if not dates:
        raise DataError(f"{paths.features_file}: no feature rows")
    if as_of is None:
        return dates[-1]
    if as_of not in dates:
        raise DataError(f"--as-of {as_of}: no feature rows for that date "
                         f"(available {dates[0]}..{dates[-1]})")
    return as_of


def batch_score(paths: DataPaths, registry: ModelRegistry, window_days: int, *, as_of: dt.date | None = None,
                top_k: int = 100, shard: tuple[int, int] | None = None, threads: int = 1,
                rows_at_once: int = ShardingSettings().shard_users) -> ScoreResult:
    """Score eligible users as of a date; write scores.parquet, top_k.csv and summary.json.

    The day's feature rows are read and scored `rows_at_once` (`sharding.shard_users`) at a
    time (`feature_batches`): a row's risk depends on that row alone, so the pieces give the
    risks of the whole day; only (user_id, as_of_date, risk) of the scored users are kept for
    the ranking. Memory: one piece of feature rows plus 24 bytes per scored user, not the
    day's feature rows of every user.
    """
    start = time.perf_counter()
    loaded = load_production(registry)
    day = resolve_as_of(paths, as_of)
    scorer = model_scorer(loaded, threads)
    candidates = eligible = 0
    pieces: list[pd.DataFrame] = []
    for features in feature_batches(paths.features_file, day, rows_at_once):
        candidates += len(features)
        features = features.loc[eligible_mask(features, window_days)]
        eligible += len(features)
        if shard is not None:
            features = features.loc[shard_of(features["user_id"].to_numpy(), shard[1]) == shard[0]]
        if len(features) or not pieces:
            pieces.append(score_frame(loaded, features, scorer))
    scores = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
    ranked = rank_scores(scores, loaded.version)
    out_dir = scores_dir(paths, day)
    suffix = shard_suffix(shard)
    inputs = {"features": features_digest(paths.features_file, [(day, day)]), "model_version": loaded.version}
    with publish_day(paths, day, inputs) as tmp:
        scores_path, top_k_path = write_outputs(ranked, tmp, suffix, top_k)
        result = ScoreResult(day.isoformat(), loaded.version, scorer.kind, len(ranked), eligible, candidates,
                             None if shard is None else f"{shard[0]}/{shard[1]}", str(out_dir / scores_path.name),
                             str(out_dir / top_k_path.name), str(out_dir / f"summary{suffix}.json"),
                             round(time.perf_counter() - start, 3))
        write_summary(result, ranked, tmp, features_digest=inputs["features"])  # per shard: merge checks it
    log.info("batch-score %s: %d of %d users scored with %s (%s path) in %.2fs -> %s", day, len(ranked),
             candidates, loaded.version, scorer.kind, result.seconds, out_dir)
    return result


def write_outputs(ranked: pd.DataFrame, out_dir: Path, suffix: str, top_k: int) -> tuple[Path, Path]:
    """scores<suffix>.parquet (every user, by rank) and top_k<suffix>.csv, each atomically.

    One writer for full, shard and merged runs, so a merged result cannot differ in format
    from the files of an unsharded run that readers (API, score distribution) already know.
    """
    scores_path = atomic_write_parquet(ranked, out_dir / f"scores{suffix}.parquet")
    top_k_path = out_dir / f"top_k{suffix}.csv"
    with atomic_path(top_k_path) as tmp:
        ranked.head(top_k).to_csv(tmp, index=False)
    return scores_path, top_k_path


def write_summary(result: ScoreResult, ranked: pd.DataFrame, directory: Path, **extra: Any) -> Path:
    """The run's summary JSON (result, risk figures, `extra`) into `directory` (the generation
    being published), last, so its presence means the scores and top-K beside it are complete."""
    return atomic_write_json(directory / Path(result.summary_path).name,
                             {**result.to_dict(), **risk_summary(ranked["risk"].to_numpy()), **extra})


@contextlib.contextmanager
def publish_day(paths: DataPaths, day: dt.date, inputs: dict[str, str]) -> Iterator[Path]:
    """A directory for outputs of `day`; scores, top-K and summary become visible together.

    Why: written one by one in place, a kill between them left scores of the new model beside
    the top-K and summary of the old one. Carried: the day's other files (the shards of an
    Indexed Job, each publishing its own; the merge's full files beside them).
    """
    with publish(paths.root, predictions_area(day), inputs=inputs, carry=True) as out:
        yield out


def risk_summary(risk: np.ndarray) -> dict[str, Any]:
    """Mean and a few quantiles of the risk (for the summary file)."""
    if len(risk) == 0:
        return {"risk_mean": None, "risk_quantiles": {}}
    qs = (0.1, 0.5, 0.9, 0.99)
    return {"risk_mean": float(risk.mean()),
            "risk_quantiles": {str(q): float(v) for q, v in zip(qs, np.quantile(risk, qs))}}


def read_scores(paths: DataPaths, as_of: dt.date | None = None) -> tuple[dt.date, pd.DataFrame]:
    """Scores of a date (default: the latest scored date): the full file, else the union of shards."""
    root = paths.predictions
    days = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_temp_name(p.name)) if root.is_dir() else []
    if not days:
        raise DataError(f"{root}: no predictions (run `ml_jobs batch-score`)")
    name = as_of.isoformat() if as_of else days[-1]
    folder = current(paths.root, predictions_area(dt.date.fromisoformat(name))) or root / name  # bound once
    files = [folder / "scores.parquet"] if (folder / "scores.parquet").is_file() \
        else sorted(folder.glob("scores.shard-*.parquet"))
    if not files:
        raise DataError(f"{folder}: no scores files (run `ml_jobs batch-score`)")
    frame = pd.concat([read_parquet(f) for f in files], ignore_index=True)
    return dt.date.fromisoformat(name), frame


def scores_dir(paths: DataPaths, day: dt.date) -> Path:
    """Where the outputs of one as-of date live (full, shards and merged alike)."""
    return paths.predictions / day.isoformat()
