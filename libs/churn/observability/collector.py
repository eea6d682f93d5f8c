"""The batch Jobs' newest reports as Prometheus metrics, read from the data root at scrape time.

Why a custom collector in the API, not a Pushgateway or a textfile exporter: the API already
mounts the data root (read-only) and is already scraped; the files the Jobs write are the
truth, so reading them when Prometheus asks can never report a stale push from a Job that
has since been replaced, and a Job needs no network access (the NetworkPolicies deny it).
Each file is parsed once per change (cached by mtime and size), so a scrape costs a few
`stat` calls.

Why these labels: every label set is bounded by the project, not by data: `feature` by the
model's feature schema, `status` by OK/WARN/FAIL, `table` by users/events, `version` holds
exactly one value (the production alias), `action` by the registry's history actions.

A report that does not exist yet yields no series (an alert on it stays silent, a panel
shows "no data"); the one exception is documented on `churn_scores_newest_day_timestamp_seconds`
(0 = never scored, so "no scores today" fires on a fresh volume too). A report that exists
but cannot be parsed yields no series either and counts in
`churn_batch_report_read_errors_total{report}`, with the path and the reason logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from churn.errors import DataError
from churn.pipeline import recorded_inputs
from churn.registry.registry import ABORTED, CARD_FILE, PENDING, PRODUCTION, ModelRegistry, RegistryError
from churn.storage.generations import current
from churn.storage.paths import DRIFT_AREA, DataPaths

log = logging.getLogger(__name__)

DRIFT_STATUSES = ("OK", "WARN", "FAIL")
# The bounded set of report names in churn_batch_report_read_errors_total{report}.
REPORTS = ("drift", "scores", "score_distribution", "ingest", "raw", "model")
# raw/manifest.json of churn.raw.store (read here as JSON: that module needs pandas, the API has none)
RAW_MANIFEST = "manifest.json"
RAW_MANIFEST_FORMAT = 1
NEVER = 0.0  # the documented "never" value of churn_scores_newest_day_timestamp_seconds


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int


class JsonFiles:
    """Parsed JSON files, re-read only when their mtime or size changed (thread-safe)."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[_Stamp, Any]] = {}
        self._lock = threading.Lock()

    def read(self, path: Path) -> Any:
        """The parsed file; FileNotFoundError if absent, ValueError/OSError if unreadable."""
        st = path.stat()
        stamp = _Stamp(st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = json.loads(path.read_bytes())
        with self._lock:
            self._cache[path] = (stamp, value)
        return value


def day_timestamp(day: str) -> float:
    """'2025-04-30' -> the epoch seconds of that day's 00:00 UTC."""
    return dt.datetime.combine(dt.date.fromisoformat(day[:10]), dt.time(), dt.timezone.utc).timestamp()


def iso_timestamp(text: str) -> float:
    """An ISO-8601 time (naive = UTC, the registry writes aware UTC times) -> epoch seconds."""
    moment = dt.datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()


def newest(paths: Iterable[Path]) -> Path | None:
    """The path whose name sorts last (ISO dates sort by time), or None. A writer's hidden
    temp names ('.tmp-...') sort before any date, so they never win."""
    return max(paths, key=lambda p: p.name, default=None)


def _labelled(name: str, doc: str, label: str, values: dict[str, float]) -> GaugeMetricFamily:
    """A gauge with one label, one sample per label value."""
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


class BatchCollector(Collector):
    """Collects the batch facts of one data root; register it in a CollectorRegistry."""

    def __init__(self, data_root: str | Path) -> None:
        self.paths = DataPaths.from_root(data_root)
        self.registry = ModelRegistry(self.paths.root)
        self.files = JsonFiles()
        self.read_errors = {report: 0 for report in REPORTS}
        self._lock = threading.Lock()
        self._history_cache: tuple[_Stamp, dict[str, int]] | None = None

    # ------------------------------------------------------------------ plumbing

    def describe(self) -> list[Metric]:
        """No fixed description: the series depend on which reports exist at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        for report, section in (("drift", self._drift), ("scores", self._scores),
                                ("score_distribution", self._score_distribution), ("ingest", self._ingest),
                                ("raw", self._raw), ("model", self._model)):
            yield from self._guarded(report, section)
        errors = CounterMetricFamily("churn_batch_report_read_errors",
                                     "Batch reports that existed but could not be read, by report.",
                                     labels=["report"])
        with self._lock:
            for report, count in self.read_errors.items():
                errors.add_metric([report], count)
        yield errors

    def _guarded(self, report: str, section: Callable[[], list[Metric]]) -> list[Metric]:
        """A section's metrics, or none when its report is unreadable (counted and logged)."""
        try:
            return section()
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError, DataError, RegistryError) as exc:
            with self._lock:
                self.read_errors[report] += 1
            log.warning("metrics: %s report unreadable: %s: %s", report, type(exc).__name__, exc)
            return []

    # ------------------------------------------------------------------ sections

    def _drift(self) -> list[Metric]:
        """monitoring/drift/<recent window end>.json, the newest, of the generation current now.

        Resolved once (`generations.current`), so the listing and the read see one generation
        even if drift-check publishes the next one meanwhile."""
        reports = current(self.paths.root, DRIFT_AREA)
        path = None if reports is None else newest(reports.glob("*.json"))
        if path is None:
            return []
        report = self.files.read(path)
        status = _labelled("churn_drift_status", "1 for the status of the newest drift report.", "status",
                           {name: float(report["status"] == name) for name in DRIFT_STATUSES})
        features = report["features"]
        psi = _labelled("churn_drift_feature_psi", "PSI of each checked feature in the newest drift report.",
                        "feature", {str(f["name"]): float(f["psi"]) for f in features})
        failed = _labelled("churn_drift_feature_drifted", "1 if the feature is WARN or FAIL in the newest drift report.",
                           "feature", {str(f["name"]): float(f["status"] != "OK") for f in features})
        out: list[Metric] = [status, psi, failed, _gauge(
            "churn_drift_last_run_timestamp_seconds", "When the newest drift report was written.", path.stat().st_mtime)]
        out += self._stale("churn_drift_input_stale",
                           "1 if an input the newest drift report recorded (features digest of its windows, "
                           "model version) is not the current one (drift-check ran before an update or a promotion).",
                           recorded_inputs.check_drift(self.paths, self.registry, reports, report))
        return out + self._drift_details(report)

    @staticmethod
    def _stale(name: str, doc: str, checked: dict[str, dict[str, str | None]]) -> list[Metric]:
        """A 0/1 gauge per compared input (`recorded_inputs.check`); none when nothing was compared."""
        if not checked:
            return []
        return [_labelled(name, doc, "input", {key: float(recorded_inputs.is_stale(v))
                                               for key, v in checked.items()})]

    @staticmethod
    def _drift_details(report: dict[str, Any]) -> list[Metric]:
        """The report's optional fields (each absent when the report format does not carry it)."""
        out: list[Metric] = []
        thresholds = report.get("thresholds") or {}
        if "psi_warn" in thresholds and "psi_fail" in thresholds:
            out.append(_labelled("churn_drift_psi_threshold", "PSI thresholds of the drift check.", "level",
                                 {"warn": float(thresholds["psi_warn"]), "fail": float(thresholds["psi_fail"])}))
        if "baseline_n" in report and "recent_n" in report:
            out.append(_labelled("churn_drift_sample_users", "Users compared (one row each), by window.", "window",
                                 {"training": float(report["baseline_n"]), "recent": float(report["recent_n"])}))
        if report.get("recent_window"):
            out.append(_gauge("churn_drift_recent_window_end_timestamp_seconds",
                              "Last day of the recent window of the newest drift report (00:00 UTC).",
                              day_timestamp(report["recent_window"][-1])))
        if "skipped" in report:
            out.append(_gauge("churn_drift_skipped_features", "Features the newest drift report did not check.",
                              float(len(report["skipped"] or {}))))
        return out

    def _scores(self) -> list[Metric]:
        """predictions/<as-of>/summary.json of the newest day (the summary is written last)."""
        path = newest(p.parent for p in self.paths.predictions.glob("*/summary.json"))
        newest_day = _gauge("churn_scores_newest_day_timestamp_seconds",
                            "The newest as-of day with complete batch scores (00:00 UTC); 0 = never scored.",
                            NEVER)
        if path is None:
            return [newest_day]
        summary_path = path / "summary.json"
        summary = self.files.read(summary_path)
        newest_day = _gauge(newest_day.name, newest_day.documentation, day_timestamp(summary["as_of"]))
        stale = self._stale("churn_scores_input_stale",
                            "1 if an input the newest day's scores recorded (features digest of the day, model "
                            "version) is not the current one (an update recomputed the day, or a promotion since).",
                            recorded_inputs.check_predictions(self.paths, self.registry,
                                                              dt.date.fromisoformat(str(summary["as_of"])[:10])))
        return [newest_day,
                _gauge("churn_scores_last_run_timestamp_seconds", "When the newest day's scores were written.",
                       summary_path.stat().st_mtime),
                _gauge("churn_scores_users", "Users scored for the newest day.", float(summary["rows"])), *stale]

    def _score_distribution(self) -> list[Metric]:
        """monitoring/score_distribution/<as-of>.json, the newest: the risk distribution of a whole day."""
        path = newest((self.paths.monitoring / "score_distribution").glob("*.json"))
        if path is None:
            return []
        report = self.files.read(path)
        out: list[Metric] = [
            _gauge("churn_scores_threshold", "The operating threshold of the risk.", float(report["threshold"])),
            _gauge("churn_scores_distribution_day_timestamp_seconds",
                   "The as-of day of the newest risk distribution (00:00 UTC).", day_timestamp(report["as_of"])),
        ]
        if report.get("share_above_threshold") is not None:
            out.append(_gauge("churn_scores_above_threshold_ratio",
                              "Share of the newest day's users at or above the threshold.",
                              float(report["share_above_threshold"])))
        histogram = report.get("histogram") or {}
        edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
        if counts and len(edges) == len(counts) + 1:
            cumulative, buckets = 0, []
            for edge, count in zip(edges[1:], counts):
                cumulative += int(count)
                buckets.append((f"{float(edge):g}", float(cumulative)))
            buckets[-1] = ("+Inf", float(cumulative))
            out.append(HistogramMetricFamily(
                "churn_scores_risk", "Batch risk distribution of the newest scored day (users per bucket).",
                buckets=buckets, sum_value=float(report.get("mean") or 0.0) * cumulative))
        return out

    def _ingest(self) -> list[Metric]:
        """raw/validation_report.json: rows checked and rows violating a rule, per table."""
        report = self.files.read(self.paths.validation_report)
        rejected = {"users": 0, "events": 0}
        for violation in report.get("violations") or []:
            table = str(violation.get("table"))
            if table in rejected:
                rejected[table] += int(violation.get("count") or 0)
        totals = {table: float(report.get(table) or 0) for table in rejected}
        rows = _labelled("churn_ingest_rows", "Rows in the newest raw batch checked, by table.", "table", totals)
        bad = _labelled("churn_ingest_rejected_rows",
                        "Rows of the newest raw batch violating a validation rule, by table "
                        "(a row breaking two rules counts twice, capped at the table's rows).", "table",
                        {table: min(float(rejected[table]), totals[table]) for table in rejected})
        return [rows, bad,
                _gauge("churn_ingest_ok", "1 if the newest raw batch passed validation.", float(bool(report["ok"]))),
                _gauge("churn_ingest_last_run_timestamp_seconds", "When the newest validation report was written.",
                       self.paths.validation_report.stat().st_mtime)]

    def _raw(self) -> list[Metric]:
        """raw/manifest.json: the newest batch written (rows added, when) and the newest event day."""
        manifest = self.files.read(self.paths.raw / RAW_MANIFEST)
        if manifest.get("format") != RAW_MANIFEST_FORMAT:
            raise ValueError(f"{self.paths.raw / RAW_MANIFEST}: format {manifest.get('format')!r}, "
                             f"expected {RAW_MANIFEST_FORMAT}")
        batches, parts = manifest.get("batches") or [], manifest.get("parts") or []
        out: list[Metric] = [
            _gauge("churn_raw_events", "Events in the raw data.", float(sum(int(p["rows"]) for p in parts))),
            _gauge("churn_raw_users", "Users in the raw data.", float(manifest.get("users_rows") or 0)),
        ]
        if parts:
            out.append(_gauge("churn_raw_newest_event_day_timestamp_seconds",
                              "The newest UTC day with raw events (00:00 UTC).",
                              day_timestamp(max(str(p["date"]) for p in parts))))
        if batches:
            last = batches[-1]
            out += [
                _gauge("churn_ingest_last_batch_timestamp_seconds", "When the newest raw batch was committed.",
                       iso_timestamp(str(last["at"]))),
                _labelled("churn_ingest_last_batch_rows", "Rows the newest raw batch added (events) or wrote (users).",
                          "table", {"events": float(last.get("events_added") or 0),
                                    "users": float(last.get("users") or 0)}),
                _gauge("churn_ingest_last_batch_days", "Event days the newest raw batch touched.",
                       float(len(last.get("dates") or ()))),
            ]
        return out

    def _model(self) -> list[Metric]:
        """The production alias, its model card and the registry's history of alias decisions."""
        alias_path = self.registry.aliases_dir / f"{PRODUCTION}.json"
        out: list[Metric] = []
        try:
            out += self._history()
        except FileNotFoundError:
            pass
        alias = self.files.read(alias_path)
        version = str(alias["version"])
        card = self.files.read(self.registry.version_dir(version) / CARD_FILE)
        out += [
            _gauge("churn_production_model_info", "1 for the version the production alias points at.", 1.0,
                   {"version": version}),
            _gauge("churn_production_model_created_timestamp_seconds", "When the production model was trained.",
                   iso_timestamp(str(card["created_at"]))),
            _gauge("churn_production_model_promoted_timestamp_seconds",
                   "When the production alias last changed.", iso_timestamp(str(alias["updated_at"]))),
        ]
        return out

    def _history(self) -> list[Metric]:
        path = self.registry.history_path
        st = path.stat()
        counts = self._history_counts(path, _Stamp(st.st_mtime_ns, st.st_size))
        family = CounterMetricFamily("churn_registry_alias_changes",
                                     "Decisions on the production alias in the registry history, by action.",
                                     labels=["action"])
        for action in ("promote", "refused", "rollback"):
            family.add_metric([action], float(counts.get(action, 0)))
        return [family]

    def _history_counts(self, path: Path, stamp: _Stamp) -> dict[str, int]:
        """Decisions per action, recounted only when the history file changed.

        A journal line still pending (or aborted: it never took effect) is not counted, so the
        counter only grows: a pending change counts once it is committed (docs/consistency.md).
        """
        cached = self._history_cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        counts: dict[str, int] = {}
        for entry in self.registry.history():
            if entry.get("alias", PRODUCTION) == PRODUCTION and entry.get("state") not in (PENDING, ABORTED):
                counts[str(entry.get("action"))] = counts.get(str(entry.get("action")), 0) + 1
        self._history_cache = (stamp, counts)
        return counts

