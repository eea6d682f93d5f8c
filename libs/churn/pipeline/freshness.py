"""Readers noticing stale inputs: the digests outputs record, compared with what is current.

Why: every output records what it was built from (the tables' MANIFEST the raw digest, the
training set the tables' generation, a model card the sha256 of its holdout), but a record
nobody compares notices nothing: `train` fitted a training set of tables an update had since
replaced, and `batch-score` scored features computed before the newest raw batch, silently.

Refuse or warn, per case (docs/consistency.md, "Readers noticing stale inputs"):

- `train` refuses a training set built from another tables generation than the current one
  (`StaleInput`, exit 1: "run `ml_jobs training-set`"): the model and its card would name
  data that is no longer what the tables hold; `retrain` and `bootstrap` build the set right
  before, so only a set left over from an earlier state is refused.
- `batch-score`, `drift-check` and `training-set` warn (log and message) when the tables were
  computed from another raw digest than the current one (a batch ingested, `update` not run
  yet): their outputs are consistent with the tables they record, and refusing would fail
  the drift CronJob or a scoring Job that overlaps a daily cycle between its ingest and its
  update.
- the holdout gate refuses a holdout whose bytes are not those its version was registered
  with (`churn.training.train.holdout_gate`).
- `score-distribution` warns, and the API's /metrics exports 0/1 gauges, when the features
  digest or model version the predictions (or the newest drift report) recorded is not the
  current one (`churn.pipeline.recorded_inputs`: pandas-free, its own Bazel target).
"""

from __future__ import annotations

import logging
from typing import Any

from churn.errors import StaleInput
from churn.storage import generations
from churn.storage.derived import BUILT_FROM, tables_inputs
from churn.storage.paths import TABLES_AREA, DataPaths

log = logging.getLogger(__name__)

def stale_tables_warning(paths: DataPaths, step: str) -> str | None:
    """A warning when the tables `paths` reads were computed from other raw data than the
    current raw data (None when they match, or when either is not recorded)."""
    from churn.raw.store import raw_digest, read_manifest

    built = tables_inputs(paths)
    if not built["raw"] or not read_manifest(paths).batches:
        return None
    now = raw_digest(paths)
    if built["raw"] == now:
        return None
    warning = (f"{generations.link_path(paths.root, TABLES_AREA)}: generation {built['tables']} was computed from "
               f"raw data {str(built['raw'])[:12]}, the raw data now is {now[:12]} (a batch came in since): {step} "
               f"used the tables as they are; run `ml_jobs update` to bring them up to date")
    log.warning("%s", warning)
    return warning


def require_current_training_set(paths: DataPaths, attrs: dict[str, Any]) -> None:
    """StaleInput when the training set (its DataFrame.attrs as read) was sampled from another
    tables generation than the current one; a set that records nothing (written by hand or by
    an older version) is only logged."""
    built = attrs.get(BUILT_FROM)
    if not isinstance(built, dict) or not built.get("tables"):
        log.info("%s: records no tables generation; not compared with the current tables", paths.training_set)
        return
    now = tables_inputs(paths)
    same = (built["manifest"] == now["manifest"] if built.get("manifest") and now["manifest"]
            else built["tables"] == now["tables"])  # by content: a copied root keeps no generation ids
    if not same:
        raise StaleInput(f"{paths.training_set}: sampled from tables generation {built['tables']}, the current "
                         f"one is {now['tables']} (an update published since): run `ml_jobs training-set`, "
                         "then `ml_jobs train`")
