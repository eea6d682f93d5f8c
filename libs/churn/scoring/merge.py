"""Merging the outputs of `batch-score --shard I/N` into the outputs of one full run.

Why: each shard ranks and cuts its top-K among its own users only, so after an Indexed Job
no global ranking or top-K exists. The merge re-ranks the union with the same rule as a
full run (`rank_scores`) and writes the same files through the same writers; since a user's
risk does not depend on the other rows of its batch, the result equals an unsharded run.

Why the checks: shards scored by different production models (a promotion between pods),
for another date, or from other feature data (a refresh between pods) would merge into a
ranking that no single run produced. Each shard's summary records its model version, as-of
date and eligible population; the merge refuses any disagreement, any user outside its
shard's hash, and a union that is not the whole eligible population. Nothing is written
until every check has passed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.scoring.batch import (ScoreResult, predictions_area, publish_day, rank_scores, resolve_as_of,
                                 scores_dir, shard_suffix, write_outputs, write_summary)
from churn.sampling.users import shard_of
from churn.storage.files import DataError, file_digest, read_json
from churn.storage.generations import current
from churn.storage.paths import DataPaths
from churn.storage.tables import read_parquet

log = logging.getLogger(__name__)

# What every shard of one run must agree on (summary keys), besides its own shard number.
# `features_digest`: the features the shard read (batch-score's recorded input), so a merge of
# shards scored from two states of the tables is refused and the merged day records it too.
RUN_KEYS = ("as_of", "model_version", "eligible", "candidates", "features_digest")


@dataclass(frozen=True)
class Shard:
    """One shard's scores and summary, as batch-score --shard wrote them."""

    index: int
    total: int
    scores: pd.DataFrame
    summary: dict[str, Any]

    @property
    def name(self) -> str:
        """How errors name the shard: its I/N (to re-run) and its file (to inspect)."""
        return f"shard {self.index}/{self.total} (scores{shard_suffix((self.index, self.total))}.parquet)"


def shard_files(out_dir: Path, index: int, total: int) -> tuple[Path, Path]:
    """(scores, summary) paths of shard `index` of `total`: the two files the merge needs."""
    suffix = shard_suffix((index, total))
    return out_dir / f"scores{suffix}.parquet", out_dir / f"summary{suffix}.json"


def read_shards(out_dir: Path, total: int, shown: Path | None = None) -> list[Shard]:
    """Every shard of `total`; a DataError naming ALL missing files, so one re-run fixes them all.

    `out_dir`: the day's generation the merge is bound to; `shown`: the folder to name."""
    files = [shard_files(out_dir, i, total) for i in range(total)]
    missing = [path.name for pair in files for path in pair if not path.is_file()]
    if missing:
        raise DataError(f"{shown or out_dir}: {len(missing)} shard file(s) missing, nothing merged (run "
                        f"`ml_jobs batch-score --shard I/{total}` for each missing I): {', '.join(missing)}")
    return [Shard(i, total, read_parquet(scores), read_json(summary)) for i, (scores, summary) in enumerate(files)]


def check_shard(shard: Shard, expected: dict[str, Any]) -> None:
    """DataError naming the shard if its summary, rows or users do not belong to the run."""
    for key, want in expected.items():
        if shard.summary.get(key) != want:
            raise DataError(f"{shard.name} was scored with {key} {shard.summary.get(key)!r}, the run with "
                            f"{want!r}; nothing merged (re-run every shard with one model on one date, "
                            "from one state of the tables)")
    scores = shard.scores
    if set(scores["model_version"]) - {expected["model_version"]}:
        raise DataError(f"{shard.name}: rows scored by {sorted(set(scores['model_version']))}, "
                        f"summary says {expected['model_version']!r}")
    days = np.unique(scores["as_of_date"].to_numpy().astype("datetime64[D]"))
    if len(days) and days.tolist() != [dt.date.fromisoformat(expected["as_of"])]:
        raise DataError(f"{shard.name}: rows as of {[str(d) for d in days]}, expected {expected['as_of']}")
    if (shard_of(scores["user_id"].to_numpy(), shard.total) != shard.index).any():
        raise DataError(f"{shard.name}: holds users of other shards (a file of another run?)")


def check_run(shards: list[Shard], day: dt.date) -> dict[str, Any]:
    """The run facts all shards share (as_of = `day`), after checking each shard against them
    and that together they hold exactly the eligible population."""
    expected = {key: shards[0].summary.get(key) for key in RUN_KEYS} | {"as_of": day.isoformat()}
    for shard in shards:
        check_shard(shard, expected)
    rows = sum(len(s.scores) for s in shards)
    if rows != expected["eligible"]:
        raise DataError(f"{len(shards)} shards hold {rows} users, but {expected['eligible']} were eligible")
    return expected


def merge_shards(paths: DataPaths, total: int, *, as_of: dt.date | None = None, top_k: int = 100) -> ScoreResult:
    """Combine the `total` shard outputs of a date (default: the latest feature date, as
    batch-score) into scores.parquet, top_k.csv and summary.json of one full run."""
    start = time.perf_counter()
    day = as_of or resolve_as_of(paths, None)
    out_dir = scores_dir(paths, day)
    bound = current(paths.root, predictions_area(day)) or out_dir  # one generation for the whole merge
    shards = read_shards(bound, total, shown=out_dir)
    run = check_run(shards, day)
    union = pd.concat([s.scores[["user_id", "as_of_date", "risk"]] for s in shards], ignore_index=True)
    ranked = rank_scores(union, run["model_version"])
    scorer = ",".join(sorted({str(s.summary.get("scorer")) for s in shards}))
    inputs = {f"shard {i}/{total}": file_digest(shard_files(bound, i, total)[1]) for i in range(total)}
    if run["features_digest"]:  # what the shards read (shards from before record none)
        inputs["features"] = str(run["features_digest"])
    with publish_day(paths, day, {**inputs, "model_version": str(run["model_version"])}) as tmp:
        write_outputs(ranked, tmp, "", top_k)
        result = ScoreResult(run["as_of"], run["model_version"], scorer, len(ranked), run["eligible"],
                             run["candidates"], None, str(out_dir / "scores.parquet"), str(out_dir / "top_k.csv"),
                             str(out_dir / "summary.json"), round(time.perf_counter() - start, 3))
        write_summary(result, ranked, tmp, merged_shards=total, features_digest=run["features_digest"])
    log.info("merge-shards %s: %d shards, %d users ranked (%s) in %.2fs -> %s", day, total, len(ranked),
             run["model_version"], result.seconds, out_dir)
    return result
