"""`ml_jobs daily --shard I/N`: the daily cycle as pod I of a Kubernetes Indexed Job of N pods.

Why every pod runs the whole cycle: the cycle has global steps (ingest, the two merges, the
score distribution) between sharded ones (update, batch-score), and Kubernetes cannot start a
Job after another one without an orchestrator. So the N pods, started together by the
`indexed-daily` component (parallelism = completions = N), meet on the data root they share:

1. ingest-inbox under the cycle lock: the first pod ingests, the others find the inbox empty;
2. `update --shard I/N` (`churn.daily.shards`);
3. barrier: every update shard complete (or already merged) -> `merge-update N`, under the
   cycle lock: the first pod merges, for the others the update is done (it says "none");
4. `batch-score --shard I/N` as of the newest day;
5. barrier: every score shard of that day written -> `merge-shards N` and score-distribution,
   once: the merging pod records the digests of the shard summaries it merged
   (`scores-merged.json`), so the others, and a retried pod, do not merge the same shards again.

A pod that waits longer than `sharding.wait_seconds` fails (exit 1) naming the shards it waited
for; a retried pod (backoffLimit) runs the cycle again, and each step of it is idempotent.
With no new data and the newest day already scored, every pod says so and rewrites nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

from churn.config.settings import Settings
from churn.errors import EXIT_OK, ShardsIncomplete
from churn.pipeline import steps
from churn.pipeline.steps import StepResult
from churn.storage.filelock import FileLock
from churn.storage.files import atomic_write_json, read_json
from churn.storage.paths import DataPaths

log = logging.getLogger(__name__)

POLL_S = 2.0          # how often a waiting pod looks at the shared volume
LOG_EVERY_S = 30.0    # and how often it says what it is waiting for


def cycle_lock(paths: DataPaths, settings: Settings) -> FileLock:
    """The lock the pods take turns on for the cycle's global steps."""
    return FileLock(paths.locks / "daily.lock", timeout=settings.sharding.wait_seconds)


def run_dir(paths: DataPaths, shards: int) -> Path:
    """This module's own records for a cycle of N shards (beside `churn.daily.shards`' folders)."""
    return paths.root / "shards" / "daily" / f"of-{shards:03d}"


def wait_for(missing: Callable[[], list[str]], what: str, timeout_s: float, poll_s: float = POLL_S) -> float:
    """Poll `missing()` (what is not there yet) until it is empty; the seconds waited.

    Raises ShardsIncomplete naming what was still missing after `timeout_s`."""
    start = time.monotonic()
    last_log = start
    while True:
        left = missing()
        waited = time.monotonic() - start
        if not left:
            if waited >= poll_s:
                log.info("%s: complete after %.0fs", what, waited)
            return waited
        if waited >= timeout_s:
            raise ShardsIncomplete(f"{what}: still missing after {timeout_s:.0f}s (sharding.wait_seconds): "
                                   f"{', '.join(left)}; did every pod of the Indexed Job start "
                                   f"(parallelism must equal completions)?")
        if time.monotonic() - last_log >= LOG_EVERY_S:
            log.info("%s: waiting %.0fs for %s", what, waited, ", ".join(left))
            last_log = time.monotonic()
        time.sleep(poll_s)


def missing_update_shards(paths: DataPaths, shards: int) -> list[str]:
    """The update shards without their marker; none once the run was merged (its folder is gone)."""
    from churn.daily.shards import MARKER, run_dir as update_run_dir, shard_dir

    if not update_run_dir(paths, shards).is_dir():
        return []
    return [f"update shard {i}/{shards}" for i in range(shards)
            if not (shard_dir(paths, (i, shards)) / MARKER).is_file()]


def score_shard_summaries(paths: DataPaths, as_of: dt.date, shards: int) -> list[Path]:
    """The summary file each score shard of `as_of` writes last (after its scores)."""
    from churn.scoring.batch import scores_dir
    from churn.scoring.merge import shard_files

    return [shard_files(scores_dir(paths, as_of), i, shards)[1] for i in range(shards)]


def missing_score_shards(paths: DataPaths, as_of: dt.date, shards: int) -> list[str]:
    return [f"score shard {i}/{shards} ({p.name})"
            for i, p in enumerate(score_shard_summaries(paths, as_of, shards)) if not p.is_file()]


def shard_digests(paths: DataPaths, as_of: dt.date, shards: int) -> list[str]:
    """sha256 of each score shard's summary: which shard outputs a merge took."""
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in score_shard_summaries(paths, as_of, shards)]


def step_daily_shard(settings: Settings, shard: tuple[int, int]) -> list[StepResult]:
    """Pod I of N: the daily cycle with the sharded steps for shard I (see the module doc)."""
    from churn.monitoring.scores import distribution_path
    from churn.scoring.batch import scores_dir

    index, n = shard
    paths = steps.data_paths(settings)
    wait_s = float(settings.sharding.wait_seconds)
    with cycle_lock(paths, settings):
        results = [steps.step_ingest_inbox(settings)]
    if results[-1].exit_code != EXIT_OK:
        return results
    results.append(steps.step_update(settings, shard))
    newest = dt.date.fromisoformat(results[-1].detail["newest_day"])
    if results[-1].detail["mode"] != "none":
        wait_for(lambda: missing_update_shards(paths, n), f"update of {n} shards", wait_s)
        with cycle_lock(paths, settings):
            results.append(steps.step_merge_update(settings, n))  # "none" if another pod merged
    elif (scores_dir(paths, newest) / "summary.json").is_file() and distribution_path(paths, newest).is_file():
        # both of the day's outputs (each its own commit: after a kill between them, the pods
        # score and merge again, and the distribution is written)
        results.append(StepResult("daily", 0, 0.0, message=f"no new data: predictions of {newest} already "
                                                             f"written; nothing rewritten (shard {index}/{n})"))
        return results
    results.append(steps.step_batch_score(settings, as_of=newest, shard=shard))
    wait_for(lambda: missing_score_shards(paths, newest, n), f"scores of {newest} in {n} shards", wait_s)
    with cycle_lock(paths, settings):
        results += _merge_scores_once(settings, paths, newest, n)
    return results


def _merge_scores_once(settings: Settings, paths: DataPaths, as_of: dt.date, shards: int) -> list[StepResult]:
    """merge-shards + score-distribution, unless these very shard outputs were merged already."""
    record = run_dir(paths, shards) / "scores-merged.json"
    digests = shard_digests(paths, as_of, shards)
    done = read_json(record) if record.is_file() else {}
    if done.get("as_of") == str(as_of) and done.get("shards") == digests:
        return [StepResult("merge-shards", 0, 0.0, message=f"as of {as_of}: the {shards} score shards were "
                                                             f"merged by another pod ({record})")]
    merged = steps.step_merge_shards(settings, shards, as_of=as_of)
    distribution = steps.step_score_distribution(settings, as_of=as_of)
    atomic_write_json(record, {"as_of": str(as_of), "shards": digests,
                               "merged_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    return [merged, distribution]
