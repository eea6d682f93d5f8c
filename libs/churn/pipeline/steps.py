"""Pipeline steps behind `ml_jobs <command>`: each checks its inputs, runs, and reports.

Why here and not in the CLI: the CLI only parses arguments and prints; the Kubernetes Jobs,
the end-to-end tests and `bootstrap` all run the same step functions.

Every step returns a StepResult (rows produced, seconds, outputs, exit code). A missing input
is a DataError naming the path and the command that produces it. Validation gates the rest:
`prepare` refuses raw data that has not passed `validate` (checked by the raw files' digest),
so corrupted raw data can never flow downstream, even when steps are run one by one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from churn.config.settings import Settings
from churn.errors import EXIT_DRIFT, EXIT_ERROR, EXIT_OK, UsageError
from churn.pipeline.freshness import stale_tables_warning
from churn.raw.store import read_manifest, require_raw
from churn.raw.verdict import is_validated, require_validated, stamp_validated
from churn.registry.registry import ModelRegistry
from churn.storage.files import DataError, atomic_write_json, read_json, require_file, sweep_dead_temps
from churn.storage.paths import DataPaths

log = logging.getLogger(__name__)



@dataclass
class StepResult:
    """Outcome of one step: `rows` produced, wall time, files written, exit code, details."""

    name: str
    rows: int
    seconds: float
    outputs: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _warned(warning: str | None, message: str) -> str:
    """A step's message with a warning about its inputs first (`churn.pipeline.freshness`)."""
    return message if warning is None else f"WARNING: {warning}\n{message}"


def data_paths(settings: Settings) -> DataPaths:
    """The layout, with the derived tables' generation resolved once: a step reads one state
    of grid, features and labels for its whole run (`DataPaths.bound`)."""
    return DataPaths.from_root(settings.paths.root).bound()


def registry_for(paths: DataPaths) -> ModelRegistry:
    return ModelRegistry(paths.root)


def _timed(name: str, body: Callable[[], StepResult], root: str | Path | None = None) -> StepResult:
    """Run one step's body with its start/end log lines and timing.

    With `root`, the temp files of runs that died (a killed Job) are removed first, so a
    crash leaves no litter behind the next step (`files.sweep_dead_temps`).
    """
    log.info("%s: start", name)
    if root is not None and Path(root).is_dir():
        for path in sweep_dead_temps(root):
            log.info("%s: removed %s (left by a run that died)", name, path)
    start = time.perf_counter()
    result = body()
    result.seconds = round(time.perf_counter() - start, 3)
    log.info("%s: done, %d rows in %.2fs (exit %d)", name, result.rows, result.seconds, result.exit_code)
    return result


# ------------------------------------------------------------------ data steps


def step_generate(settings: Settings, simulate_shift: bool = False) -> StepResult:
    from churn.data.generate import write_raw

    paths = data_paths(settings).ensure()

    def body() -> StepResult:
        res = write_raw(settings.generator, paths, simulate_shift=simulate_shift,
                        shard_users=settings.sharding.shard_users, workers=settings.sharding.raw_workers)
        return StepResult("generate", res.events, 0.0, [res.users_path, res.events_path],
                          detail={"users": res.users, "events": res.events, "simulate_shift": simulate_shift})

    return _timed("generate", body, paths.root)


def step_ingest(settings: Settings, users: str | None = None, events: str | None = None,
                fmt: str | None = None) -> StepResult:
    """Ingest exported users and/or events (churn.ingest.ingest); exit 1 on any violation.

    When the raw data was validated before (or there was none), the new raw data counts as
    validated too (the batch passed the same rules against the stored data): the batch
    records that in the raw manifest, its commit point (`churn.raw.verdict`).
    """
    from churn.ingest.ingest import run_ingest

    paths = data_paths(settings).ensure()

    def body() -> StepResult:
        res = run_ingest(settings, paths, users, events, fmt)  # the batch records its own verdict
        added = res.counts.get("events_added", 0) + res.counts.get("users_added", 0) + res.counts.get("users_updated", 0)
        return StepResult("ingest", added, 0.0, [res.report_path], EXIT_OK if res.ok else EXIT_ERROR, res.summary(),
                          {"batch": res.batch, **res.counts, "violations": len(res.report.violations)})

    return _timed("ingest", body, paths.root)


def _was_valid(paths: DataPaths) -> bool:
    """Before an ingest: the raw data had passed validation (or there was none yet)."""
    return not read_manifest(paths).batches or is_validated(paths)


def _stamp_after_ingest(paths: DataPaths, was_valid: bool) -> list[str]:
    """Stamp the raw data validated after a batch that passed, if it was valid before."""
    if not was_valid:
        log.warning("ingest: the raw data before this batch had not passed validation; run `ml_jobs validate`")
        return []
    return [str(stamp_validated(paths))]


def step_validate(settings: Settings) -> StepResult:
    """Validate raw data; its report (one file, replaced last) records the raw digest it
    checked and is the verdict `prepare` and `update` go by (`churn.raw.verdict`): a kill or a
    full disk leaves the previous verdict, never none or one about other data."""
    from churn.data.validate import run_validate

    paths = data_paths(settings)

    def body() -> StepResult:
        require_raw(paths)
        report = run_validate(settings, paths)
        return StepResult("validate", report.users + report.events, 0.0, [str(paths.validation_report)],
                          EXIT_OK if report.ok else EXIT_ERROR, report.summary(),
                          {"violations": len(report.violations)})

    return _timed("validate", body, paths.root)


def step_prepare(settings: Settings) -> StepResult:
    from churn.data.prepare import run_prepare

    paths = data_paths(settings)

    def body() -> StepResult:
        require_validated(paths)
        report = run_prepare(settings, paths)
        return StepResult("prepare", report.grid_rows, 0.0, [str(paths.user_days), str(paths.prepare_report)],
                          detail={"users": report.users_out, "events": report.events_out})

    return _timed("prepare", body, paths.root)


def step_features(settings: Settings) -> StepResult:
    from churn.features.compute import run_features

    paths = data_paths(settings)

    def body() -> StepResult:
        require_file(paths.user_days, "prepare")
        features = run_features(settings, paths)
        return StepResult("features", len(features), 0.0, [str(paths.features_file)])

    return _timed("features", body, paths.root)


def step_labels(settings: Settings) -> StepResult:
    """Labels and the training set (features joined with labels)."""
    from churn.labels.build import run_labels
    from churn.training.sample import run_training_set

    paths = data_paths(settings)

    def body() -> StepResult:
        require_file(paths.user_days, "prepare")
        require_file(paths.features_file, "features")
        labels = run_labels(settings, paths)
        training_set = run_training_set(settings, data_paths(settings))  # the tables with these labels
        return StepResult("labels", len(training_set), 0.0, [str(paths.labels_file), str(paths.training_set)],
                          detail={"labels": len(labels), "training_rows": len(training_set)})

    return _timed("labels", body, paths.root)


# ------------------------------------------------------------------ models


def training_run_path(paths: DataPaths) -> Path:
    return paths.registry / "last_training_run.json"


def step_train(settings: Settings) -> StepResult:
    """Train baseline + candidate on the training set and register both.

    The run record (last_training_run.json, what a plain `promote` uses) is first replaced by
    a "running" record that keeps the last complete run as `previous`: a train killed after
    registering its models leaves a record that says so (a plain `promote` refuses), never
    one pointing at the previous run's models, and the previous run stays readable
    (`last_complete_run`). One train at a time per data root (`locks/train.lock`, waited
    for with the holder logged): two at once would each mark the record running and the
    one finishing first would hide the other (docs/consistency.md).
    """
    from churn.pipeline.freshness import require_current_training_set
    from churn.storage.filelock import FileLock
    from churn.storage.tables import read_parquet_checked
    from churn.training.train import register_run, train_models

    paths = data_paths(settings)

    def body() -> StepResult:
        require_file(paths.training_set, "labels")
        with FileLock(paths.locks / "train.lock", timeout=TRAIN_LOCK_TIMEOUT_S):
            # read once: the card's digest is of the bytes trained on, not of a second read
            training_set, training_digest = read_parquet_checked(paths.training_set)
            require_current_training_set(paths, training_set.attrs)
            started = dt.datetime.now(dt.timezone.utc).isoformat()
            atomic_write_json(training_run_path(paths), {"status": "running", "started_at": started,
                                                         "previous": last_complete_run(paths)})
            run = train_models(training_set, settings)
            registry = registry_for(paths)
            versions = register_run(run, registry, settings, training_digest)
            table = [{"version": v, "model_kind": m.kind, **{k: m.metrics[k] for k in METRIC_COLUMNS}}
                     for v, m in zip(versions, run.models)]
            best = max(table, key=lambda r: r["pr_auc"] if r["pr_auc"] is not None else -1.0)["version"]
            record = {"status": "complete", "versions": versions, "best": best, "metrics": table,
                      "split": run.split.describe(), "started_at": started,
                      "trained_at": dt.datetime.now(dt.timezone.utc).isoformat()}
            atomic_write_json(training_run_path(paths), record)  # the run's commit point
        return StepResult("train", run.train.rows, 0.0,
                          [str(registry.version_dir(v)) for v in versions] + [str(training_run_path(paths))],
                          message=format_table(table), detail=record)

    return _timed("train", body, paths.root)


TRAIN_LOCK_TIMEOUT_S = 3600.0  # a train at 1,000,000 users takes minutes; a waiter logs the holder


def last_complete_run(paths: DataPaths) -> dict[str, Any] | None:
    """The record of the last train that finished (None if none did), also while a later one
    runs or after one was killed: the running record keeps it as `previous`."""
    path = training_run_path(paths)
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("status", "complete") == "complete":
        return record
    previous = record.get("previous")
    return previous if isinstance(previous, dict) else None


METRIC_COLUMNS = ("pr_auc", "roc_auc", "brier", "precision_at_threshold", "recall_at_threshold",
                  "lift_top_decile", "positive_rate", "rows")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table (numbers with 4 decimals)."""
    if not rows:
        return ""
    cols = list(rows[0])

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))

    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(cell(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def step_promote(settings: Settings, version: str | None = None, force: bool = False,
                 reason: str | None = None) -> StepResult:
    """Promote `version` (default: the best model of the last training run) through the gate."""
    from churn.training.train import holdout_gate

    paths = data_paths(settings)

    def body() -> StepResult:
        if force and not (reason and reason.strip()):
            raise UsageError("--force needs --reason (forced promotions must say why)")
        registry = registry_for(paths)
        target = version or _best_of_last_run(paths)
        gate = None if force else holdout_gate(settings.registry.metric, settings.registry.min_improvement,
                                           settings.training.threads)
        result = registry.promote(target, reason=reason or "gated promotion", gate=gate)
        d = result.decision
        verdict = "PROMOTED" if result.promoted else "NOT PROMOTED"
        message = f"{verdict} {target} (production was {result.from_version}): {d.reason}"
        return StepResult("promote", int(result.promoted), 0.0, [str(registry.aliases_dir / "production.json")],
                          message=message, detail={"promoted": result.promoted, "from": result.from_version,
                                                   "to": target, "metrics": d.metrics})

    return _timed("promote", body, paths.root)


def _best_of_last_run(paths: DataPaths) -> str:
    path = training_run_path(paths)
    require_file(path, "train")
    record = read_json(path)
    if record.get("status", "complete") != "complete":
        raise DataError(f"{path}: the last training run (started {record.get('started_at')}) did not finish "
                        "(rerun `ml_jobs train`, or `ml_jobs promote --version VERSION`)")
    return str(record["best"])


def step_rollback(settings: Settings, to_version: str | None = None, reason: str = "rollback") -> StepResult:
    paths = data_paths(settings)

    def body() -> StepResult:
        registry = registry_for(paths)
        result = registry.rollback(to_version, reason=reason)
        return StepResult("rollback", 1, 0.0, [str(registry.aliases_dir / "production.json")],
                          message=f"production: {result.from_version} -> {result.to_version}",
                          detail={"from": result.from_version, "to": result.to_version})

    return _timed("rollback", body, paths.root)


# ------------------------------------------------------------------ scoring and monitoring


def step_batch_score(settings: Settings, as_of: dt.date | None = None, top_k: int | None = None,
                     shard: tuple[int, int] | None = None) -> StepResult:
    from churn.scoring.batch import batch_score

    paths = data_paths(settings)

    def body() -> StepResult:
        require_file(paths.features_file, "features")
        stale = stale_tables_warning(paths, "batch-score")
        res = batch_score(paths, registry_for(paths), settings.churn.window_days, as_of=as_of,
                          top_k=top_k or settings.scoring.top_k, shard=shard,
                          threads=settings.scoring.threads, rows_at_once=settings.sharding.shard_users)
        return StepResult("batch-score", res.rows, 0.0, [res.scores_path, res.top_k_path, res.summary_path],
                          message=_warned(stale, f"as of {res.as_of}: {res.rows} users scored with "
                                                 f"{res.model_version} ({res.scorer} path)"),
                          detail={**res.to_dict(), "stale_tables": stale})

    return _timed("batch-score", body, paths.root)


def step_merge_shards(settings: Settings, shards: int, as_of: dt.date | None = None,
                      top_k: int | None = None) -> StepResult:
    """After `batch-score --shard I/N` for every I: the global ranks and top-K of one full run."""
    from churn.scoring.merge import merge_shards

    paths = data_paths(settings)

    def body() -> StepResult:
        res = merge_shards(paths, shards, as_of=as_of, top_k=top_k or settings.scoring.top_k)
        return StepResult("merge-shards", res.rows, 0.0, [res.scores_path, res.top_k_path, res.summary_path],
                          message=f"as of {res.as_of}: {shards} shards merged, {res.rows} users ranked "
                                  f"(scored with {res.model_version})", detail=res.to_dict())

    return _timed("merge-shards", body, paths.root)


def step_score_distribution(settings: Settings, as_of: dt.date | None = None) -> StepResult:
    from churn.monitoring.scores import score_distribution

    paths = data_paths(settings)

    def body() -> StepResult:
        path, report = score_distribution(paths, registry_for(paths), as_of)
        share = report["share_above_threshold"]
        stale = "; ".join(f"predictions {report['as_of']}: {name} {v['recorded']} recorded, {v['current']} now "
                          "(run `ml_jobs batch-score`)" for name, v in report["stale_inputs"].items()) or None
        return StepResult("score-distribution", report["rows"], 0.0, [str(path)],
                          message=_warned(stale, f"as of {report['as_of']}: mean risk {report['mean']:.4f}, "
                                                 f"{100 * (share or 0):.1f}% >= {report['threshold']}"),
                          detail=report)

    return _timed("score-distribution", body, paths.root)


def step_drift_check(settings: Settings) -> StepResult:
    """Drift between the production model's training window and the recent window; exit 2 on FAIL."""
    from churn.features.rows import features_digest
    from churn.monitoring.drift import FAIL, drift_check
    from churn.monitoring.report import publish_report, stale_drift_inputs
    from churn.scoring.batch import load_production

    paths = data_paths(settings)

    def body() -> StepResult:
        require_file(paths.features_file, "features")
        stale = stale_tables_warning(paths, "drift-check")
        loaded = load_production(registry_for(paths))
        report = drift_check(paths.features_file, loaded.card, settings.monitoring, settings.churn.window_days,
                             rows_at_once=settings.sharding.shard_users)
        spans = [(dt.date.fromisoformat(w[0]), dt.date.fromisoformat(w[1]))
                 for w in (report.training_window, report.recent_window)]
        inputs = {"features": features_digest(paths.features_file, spans), "model_version": str(loaded.version)}
        # what it records compared with the state now (not the one it read): an update or a
        # promotion published while it ran leaves a report of stale inputs; warned, exit unchanged
        report.stale_inputs = stale_drift_inputs(data_paths(settings), registry_for(paths), inputs, report)
        json_path, html_path = publish_report(report, paths, inputs)
        drifted = ", ".join(f"{f.name} ({f.status}, PSI {f.psi:.3f})" for f in report.drifted()) or "none"
        message = (f"drift {report.status}: training window {report.training_window} ({report.baseline_n} users) "
                   f"vs recent {report.recent_window} ({report.recent_n} users); drifted: {drifted}; "
                   f"{len(report.features)} features checked, skipped: {', '.join(report.skipped) or 'none'}")
        own = "; ".join(f"drift report {report.recent_window[1]}: {name} {v['recorded']} recorded, {v['current']} "
                        "now (published while drift-check ran; run `ml_jobs drift-check` again)"
                        for name, v in report.stale_inputs.items()) or None
        warning = "\nWARNING: ".join(w for w in (stale, own) if w) or None
        return StepResult("drift-check", len(report.features), 0.0, [str(json_path), str(html_path)],
                          EXIT_DRIFT if report.status == FAIL else EXIT_OK, _warned(warning, message),
                          {"status": report.status, "stale_tables": stale, "stale_inputs": report.stale_inputs})

    return _timed("drift-check", body, paths.root)


# ------------------------------------------------------------------ the daily cycle


def step_generate_next(settings: Settings, days: int, shift_from: dt.date | None = None) -> StepResult:
    """Continue the synthetic world by `days` days into a batch folder of the inbox."""
    from churn.daily.world import next_days

    paths = data_paths(settings)

    def body() -> StepResult:
        res = next_days(settings.generator, paths, days, shift_from)
        return StepResult("generate", res.events, 0.0, [res.folder],
                          message=f"{res.first_day}..{res.last_day}: {res.events} events, {res.new_users} new users, "
                                  f"{res.churned} churned -> {res.folder}",
                          detail={"first_day": res.first_day.isoformat(), "last_day": res.last_day.isoformat(),
                                  "events": res.events, "new_users": res.new_users})

    return _timed("generate", body)


def step_ingest_inbox(settings: Settings) -> StepResult:
    """Ingest every batch waiting in the inbox; exit 1 (raw data unchanged) on a rejected one."""
    from churn.daily.inbox import ingest_inbox

    paths = data_paths(settings)

    def body() -> StepResult:
        was_valid = _was_valid(paths)
        outcomes = ingest_inbox(settings, paths)
        rejected = [o for o in outcomes if not o.ok]
        if any(o.ok and (o.new_events or o.users) for o in outcomes):
            _stamp_after_ingest(paths, was_valid)
        lines = [f"{o.name}: {'ingested' if o.ok else 'REJECTED'} ({o.new_events} new events, "
                 f"{o.duplicate_events} already stored, days {', '.join(o.days) or '-'})" for o in outcomes]
        lines += [w for o in outcomes for w in o.warnings] + [o.report for o in rejected]
        return StepResult("ingest", sum(o.new_events for o in outcomes), 0.0, [str(paths.raw)],
                          EXIT_ERROR if rejected else EXIT_OK,
                          "\n".join(lines) or f"{paths.inbox}: no new batch",
                          {"batches": len(outcomes), "rejected": [o.name for o in rejected]})

    return _timed("ingest", body, paths.root)  # the sweep: a killed ingest-inbox's temps


def step_update(settings: Settings, shard: tuple[int, int] | None = None) -> StepResult:
    """Bring grid, features and labels up to the newest raw day (only what new data touched).

    `shard=(I, N)`: compute only users of shard I into its shard folder (one pod of an
    Indexed Job); `step_merge_update(N)` completes the update when all N are done."""
    from churn.daily.update import run_update

    paths = data_paths(settings)

    def body() -> StepResult:
        require_validated(paths)
        return _update_result(settings, run_update(settings, paths, shard))

    return _timed("update", body, paths.root)


def step_merge_update(settings: Settings, shards: int) -> StepResult:
    """After `update --shard I/N` for every I: the day files and the state of one full update."""
    from churn.daily.update import merge_update

    paths = data_paths(settings)

    def body() -> StepResult:
        require_validated(paths)
        return _update_result(settings, merge_update(settings, paths, shards), "merge-update")

    return _timed("merge-update", body, paths.root)


def _update_result(settings: Settings, res: Any, name: str = "update") -> StepResult:
    paths = data_paths(settings)  # the tables as published now
    message = (f"{name} ({res.mode}): {res.reason}; newest day {res.newest_day}" if res.mode == "none" else
               f"{name} ({res.mode}): {res.reason}; recomputed {res.first_recomputed}..{res.newest_day} "
               f"({res.grid_days} grid, {res.feature_days} feature, {res.label_days} label days)")
    return StepResult(name, res.feature_rows, 0.0, [str(paths.user_days), str(paths.features_file),
                                                    str(paths.labels_file)],
                      message=message, detail=res.to_dict())


def step_daily(settings: Settings, shard: tuple[int, int] | None = None) -> list[StepResult]:
    """The daily cycle: ingest the inbox -> update -> batch-score as of the newest day -> score-distribution.

    Stops at the first failing step (a rejected batch: exit 1, nothing else runs). With no new
    data and the newest day already scored (predictions and score distribution), it says so
    and rewrites nothing. `shard=(I, N)`:
    pod I of an Indexed Job of N (`churn.pipeline.indexed_daily`).
    """
    from churn.monitoring.scores import distribution_path
    from churn.scoring.batch import scores_dir

    if shard is not None:
        from churn.pipeline.indexed_daily import step_daily_shard

        return step_daily_shard(settings, shard)

    results = [step_ingest_inbox(settings)]
    if results[-1].exit_code != EXIT_OK:
        return results
    results.append(step_update(settings))
    newest = dt.date.fromisoformat(results[-1].detail["newest_day"])
    paths = data_paths(settings)
    summary = scores_dir(paths, newest) / "summary.json"
    scored = results[-1].detail["mode"] == "none" and summary.is_file()
    # the day's two outputs commit one after the other: a cycle killed between them is
    # finished by the next one (the predictions are not rewritten)
    if scored and distribution_path(paths, newest).is_file():
        results.append(StepResult("daily", 0, 0.0, message=f"no new data: predictions of {newest} already "
                                                             f"written ({summary}); nothing rewritten"))
        return results
    if not scored:
        results.append(step_batch_score(settings, as_of=newest))
    results.append(step_score_distribution(settings, as_of=newest))
    return results


# ------------------------------------------------------------------ compositions


def step_training_set(settings: Settings) -> StepResult:
    """The training set from the features and the matured labels as they are now."""
    from churn.training.sample import run_training_set

    paths = data_paths(settings)

    def body() -> StepResult:
        require_file(paths.features_file, "update")
        require_file(paths.labels_file, "update")
        stale = stale_tables_warning(paths, "training-set")
        training_set = run_training_set(settings, paths)
        days = training_set["as_of_date"]
        return StepResult("training-set", len(training_set), 0.0, [str(paths.training_set)],
                          message=_warned(stale, f"training set: {len(training_set)} rows, as-of dates "
                                                 f"{days.min().date()}..{days.max().date()} (labels matured up to there)"),
                          detail={"newest_label_day": str(days.max().date()), "stale_tables": stale})

    return _timed("training-set", body, paths.root)


def step_retrain(settings: Settings) -> list[StepResult]:
    """Bring the data up to date, train on the newest matured labels, promote through the gate.

    The update only does what the last daily cycle left (usually nothing).
    """
    results = [step_update(settings), step_training_set(settings), step_train(settings)]
    results.append(step_promote(settings, version=results[-1].detail["best"],
                                reason="scheduled retrain"))
    return results


def _is_empty(root: Path) -> bool:
    """No file under the root: empty directories (e.g. made by a Job's init step) are not data,
    and neither are the temp files of a run that died (they are removed first)."""
    if not root.exists():
        return True
    sweep_dead_temps(root)
    return not any(p.is_file() for p in root.rglob("*"))


def bootstrap_record_path(root: Path) -> Path:
    """`bootstrap.json`: which steps of a bootstrap are done; written before the first step."""
    return Path(root) / "bootstrap.json"


def bootstrap_steps(settings: Settings) -> list[tuple[str, Callable[[], StepResult]]]:
    """The steps of `bootstrap`, in order, as (name, run): also what bench/pipeline_bench.py times."""
    return [
        ("generate", lambda: step_generate(settings)),
        ("validate", lambda: step_validate(settings)),
        ("update", lambda: step_update(settings)),  # the first update builds grid, features, labels
        ("training-set", lambda: step_training_set(settings)),
        ("train", lambda: step_train(settings)),
        ("promote", lambda: step_promote(settings, reason="bootstrap")),
        ("batch-score", lambda: step_batch_score(settings)),
        ("score-distribution", lambda: step_score_distribution(settings)),
        ("drift-check", lambda: step_drift_check(settings)),
    ]


def bootstrap(settings: Settings, force: bool = False) -> list[StepResult]:
    """Every step in order into an empty data root; stops at the first failing step.

    Resumable: `bootstrap.json` records the steps done, so a bootstrap killed anywhere (a pod
    evicted, a full disk) is finished by the next `bootstrap` (the bootstrap Job's retries): it
    skips the steps done, reruns the interrupted one (each step's outputs are replaced
    atomically, so a rerun starts from a consistent state) and goes on. A completed bootstrap
    makes `bootstrap` a no-op that succeeds; a root holding other data is refused
    (`--force` bootstraps over it and starts again).
    """
    root = Path(settings.paths.root)
    record_path = bootstrap_record_path(root)
    record = read_json(record_path) if record_path.is_file() else None
    if record is not None and record.get("status") == "complete" and not force:
        return [StepResult("bootstrap", 0, 0.0, message=f"{root}: already bootstrapped (completed "
                                                        f"{record.get('completed_at')}); nothing to do "
                                                        "(--force starts again)")]
    if record is None and not force and not _is_empty(root):
        raise DataError(f"{root}: data root is not empty (use --force to bootstrap over it)")
    data_paths(settings).ensure()  # the layout, and a clear stop if the root is not writable
    resuming = record is not None and not force
    done: list[str] = [str(n) for n in record.get("done", [])] if resuming and record else []
    started = str((record or {}).get("started_at") or "") if resuming else ""
    started = started or dt.datetime.now(dt.timezone.utc).isoformat()

    def save(status: str, **extra: Any) -> None:
        atomic_write_json(record_path, {"status": status, "done": done, "started_at": started, **extra})

    if resuming:
        log.info("bootstrap: resuming an interrupted bootstrap (done: %s)", ", ".join(done) or "none")
        for path in sweep_dead_temps(root):  # each step sweeps as it starts; with every step done, none runs
            log.info("bootstrap: removed %s (left by a run that died)", path)
    save("running")
    results = []
    for name, run in bootstrap_steps(settings):
        if name in done:
            results.append(StepResult(name, 0, 0.0, message=f"{name}: done before the interruption, skipped"))
            continue
        results.append(run())
        if results[-1].exit_code != EXIT_OK:
            return results
        done.append(name)
        save("running")
    save("complete", completed_at=dt.datetime.now(dt.timezone.utc).isoformat())
    return results


def with_root(settings: Settings, root: str | Path) -> Settings:
    """`settings` with another data root (tests, benchmarks)."""
    return dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, root=str(root)))


__all__ = ["StepResult", "bootstrap", "bootstrap_steps", "step_batch_score", "step_drift_check", "step_features", "step_generate",
           "step_labels", "step_prepare", "step_promote", "step_retrain", "step_rollback", "step_score_distribution",
           "step_train", "step_validate"]
