"""The collector on a data root the real pipeline wrote, on an empty one, and on broken files."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from churn.observability.collector import BatchCollector, day_timestamp
from churn.pipeline.steps import bootstrap
from churn.pipeline.testing import tiny_settings


def scrape(root: Path, collector: BatchCollector | None = None) -> dict[tuple[str, tuple], float]:
    """Render through prometheus_client and parse it back: {(sample name, labels): value}."""
    registry = CollectorRegistry()
    registry.register(collector or BatchCollector(root))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    results = bootstrap(tiny_settings(root))
    assert [r.exit_code for r in results] == [0] * len(results), [(r.name, r.exit_code) for r in results]
    return root


def test_every_batch_fact_of_a_seeded_root(seeded: Path) -> None:
    samples = scrape(seeded)
    drift = json.loads(max((seeded / "monitoring" / "drift").glob("*.json")).read_text())
    assert samples[("churn_drift_status", (("status", drift["status"]),))] == 1.0
    assert sum(v for (n, _), v in samples.items() if n == "churn_drift_status") == 1.0
    for feature in drift["features"]:
        assert samples[("churn_drift_feature_psi", (("feature", feature["name"]),))] == pytest.approx(feature["psi"])
    assert len([n for n, _ in samples if n == "churn_drift_feature_psi"]) == len(drift["features"])
    summary = json.loads(next((seeded / "predictions").glob("*/summary.json")).read_text())
    assert samples[("churn_scores_newest_day_timestamp_seconds", ())] == day_timestamp(summary["as_of"])
    assert samples[("churn_scores_users", ())] == summary["rows"] > 0
    proxy = json.loads(next((seeded / "monitoring" / "score_distribution").glob("*.json")).read_text())
    assert samples[("churn_scores_above_threshold_ratio", ())] == pytest.approx(proxy["share_above_threshold"])
    assert samples[("churn_scores_risk_count", ())] == proxy["rows"]
    assert samples[("churn_scores_risk_bucket", (("le", "+Inf"),))] == proxy["rows"]
    alias = json.loads((seeded / "registry" / "aliases" / "production.json").read_text())
    assert samples[("churn_production_model_info", (("version", alias["version"]),))] == 1.0
    card = json.loads((seeded / "registry" / "models" / alias["version"] / "card.json").read_text())
    assert samples[("churn_production_model_created_timestamp_seconds", ())] == pytest.approx(
        dt.datetime.fromisoformat(card["created_at"]).timestamp())
    assert samples[("churn_registry_alias_changes_total", (("action", "promote"),))] == 1.0
    validation = json.loads((seeded / "raw" / "validation_report.json").read_text())
    assert samples[("churn_ingest_rows", (("table", "events"),))] == validation["events"] > 0
    assert samples[("churn_ingest_rejected_rows", (("table", "events"),))] == 0.0
    assert samples[("churn_ingest_ok", ())] == 1.0
    manifest = json.loads((seeded / "raw" / "manifest.json").read_text())
    assert samples[("churn_raw_events", ())] == sum(p["rows"] for p in manifest["parts"]) == validation["events"]
    assert samples[("churn_ingest_last_batch_rows", (("table", "events"),))] == manifest["batches"][-1]["events_added"]
    assert samples[("churn_raw_newest_event_day_timestamp_seconds", ())] == day_timestamp(
        max(p["date"] for p in manifest["parts"]))
    assert all(v == 0 for (n, _), v in samples.items() if n == "churn_batch_report_read_errors_total")


def test_an_empty_root_yields_absent_series_and_never(tmp_path: Path) -> None:
    samples = scrape(tmp_path / "nothing-here")
    assert names(samples) == {"churn_scores_newest_day_timestamp_seconds", "churn_batch_report_read_errors_total"}
    assert samples[("churn_scores_newest_day_timestamp_seconds", ())] == 0.0


def test_a_corrupt_report_is_counted_not_raised(seeded: Path) -> None:
    drift_dir = seeded / "monitoring" / "drift"
    broken = drift_dir / "9999-12-31.json"
    broken.write_text('{"status": "FA')
    try:
        samples = scrape(seeded)
        assert not any(n.startswith("churn_drift_") for n in names(samples))
        assert samples[("churn_batch_report_read_errors_total", (("report", "drift"),))] == 1.0
        assert ("churn_scores_users", ()) in samples  # the other reports still export
    finally:
        broken.unlink()


def test_a_changed_file_is_read_again_and_an_unchanged_one_is_not(seeded: Path, tmp_path: Path) -> None:
    drift_dir = tmp_path / "monitoring" / "drift"
    drift_dir.mkdir(parents=True)
    source = json.loads(max((seeded / "monitoring" / "drift").glob("*.json")).read_text())
    report = drift_dir / "2025-04-30.json"
    report.write_text(json.dumps(dict(source, status="OK__")))  # as long as "FAIL"
    collector = BatchCollector(tmp_path)
    scrape(tmp_path, collector)
    before = report.stat()
    # Same size and the same mtime: the cache must answer (the old content is still reported).
    report.write_text(json.dumps(dict(source, status="FAIL")))
    assert report.stat().st_size == before.st_size
    os.utime(report, ns=(before.st_atime_ns, before.st_mtime_ns))
    samples = scrape(tmp_path, collector)
    assert samples[("churn_drift_status", (("status", "FAIL"),))] == 0.0, "an unchanged file was parsed again"
    os.utime(report, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))  # touched: read again
    samples = scrape(tmp_path, collector)
    assert samples[("churn_drift_status", (("status", "FAIL"),))] == 1.0
    assert samples[("churn_drift_status", (("status", "OK"),))] == 0.0


def test_the_newest_report_wins(seeded: Path, tmp_path: Path) -> None:
    drift_dir = tmp_path / "monitoring" / "drift"
    drift_dir.mkdir(parents=True)
    source = json.loads(max((seeded / "monitoring" / "drift").glob("*.json")).read_text())
    (drift_dir / "2025-05-02.json").write_text(json.dumps(dict(source, status="FAIL")))
    (drift_dir / "2025-05-01.json").write_text(json.dumps(dict(source, status="OK")))
    (drift_dir / "2025-05-02.html").write_text("<html>")
    assert scrape(tmp_path)[("churn_drift_status", (("status", "FAIL"),))] == 1.0


def test_a_minimal_drift_report_still_exports_status_and_psi(tmp_path: Path) -> None:
    """Only status and features[].name/psi/status are required: other fields may come and go."""
    drift_dir = tmp_path / "monitoring" / "drift"
    drift_dir.mkdir(parents=True)
    (drift_dir / "2025-05-01.json").write_text(json.dumps(
        {"status": "WARN", "features": [{"name": "logins_7d", "psi": 0.12, "status": "WARN"}]}))
    (drift_dir / ".tmp-1234.json").write_text('{"status": ')  # a writer's temp file is no report
    samples = scrape(tmp_path)
    assert samples[("churn_drift_status", (("status", "WARN"),))] == 1.0
    assert samples[("churn_drift_feature_psi", (("feature", "logins_7d"),))] == 0.12
    assert samples[("churn_drift_feature_drifted", (("feature", "logins_7d"),))] == 1.0
    assert "churn_drift_psi_threshold" not in names(samples)
    assert samples[("churn_batch_report_read_errors_total", (("report", "drift"),))] == 0.0


def test_a_journal_line_that_did_not_take_effect_is_not_counted(seeded: Path, tmp_path: Path) -> None:
    """A promotion interrupted between its journal line and the alias (docs/consistency.md)."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(seeded, root)
    history = root / "registry" / "history.jsonl"
    line = {"action": "promote", "alias": "production", "from": None, "to": "x", "txn": "t1"}
    with history.open("a") as fh:
        fh.write(json.dumps({**line, "state": "pending"}) + "\n")
        fh.write(json.dumps({**line, "txn": "t2", "state": "aborted"}) + "\n")
    assert scrape(root)[("churn_registry_alias_changes_total", (("action", "promote"),))] == 1.0


def _stale_gauges(samples: dict) -> dict[tuple[str, str], float]:
    return {(name, dict(labels)["input"]): v for (name, labels), v in samples.items()
            if name in ("churn_scores_input_stale", "churn_drift_input_stale")}


def test_stale_inputs_of_scores_and_drift_are_0_when_current_and_1_once_changed(seeded: Path, tmp_path: Path) -> None:
    """The inputs the newest scores and drift report recorded (their generation's MANIFEST),
    compared at scrape time with the current tables' MANIFEST and the production alias: 0 on
    the bootstrapped root, and still after `features` and `labels` recomputed the same rows;
    after `features` recomputed the tables with other windows, the
    features input is 1 (the model still 0); after another model is promoted, the model input
    is 1 too. Broken once (`recorded_inputs.is_stale` answering False): the
    gauges stayed 0."""
    import dataclasses
    import shutil

    from churn.pipeline import steps
    from churn.pipeline.testing import tiny_settings
    from churn.registry.registry import ModelRegistry

    root = tmp_path / "root"
    shutil.copytree(seeded, root, symlinks=True)
    every = {(f"churn_{area}_input_stale", name) for area in ("scores", "drift") for name in ("features", "model")}
    assert _stale_gauges(scrape(root)) == dict.fromkeys(every, 0.0)
    settings = tiny_settings(root)
    # the same rows again: one encoding of day files (`daytables.DayFiles`), the same bytes, so
    # still current (before 994e143 `features` wrote other bytes and both features gauges were 1)
    assert steps.step_features(settings).exit_code == 0 and steps.step_labels(settings).exit_code == 0
    assert _stale_gauges(scrape(root)) == dict.fromkeys(every, 0.0)
    other = dataclasses.replace(settings, features=dataclasses.replace(settings.features, windows_days=(7, 14)))
    assert steps.step_features(other).exit_code == 0  # every day recomputed: other feature bytes
    stale = _stale_gauges(scrape(root))
    assert stale == {**dict.fromkeys(every, 0.0), ("churn_scores_input_stale", "features"): 1.0,
                     ("churn_drift_input_stale", "features"): 1.0}
    registry = ModelRegistry(root)
    production = registry.get_alias()
    other_version = next(v for v in registry.versions() if v != production)
    assert steps.step_promote(settings, version=other_version, force=True, reason="test").exit_code == 0
    assert _stale_gauges(scrape(root)) == dict.fromkeys(every, 1.0)
    samples = scrape(root)
    assert all(v == 0 for (n, _), v in samples.items() if n == "churn_batch_report_read_errors_total")


SCRAPE_IN_A_FRESH_INTERPRETER = """
import sys
from prometheus_client import CollectorRegistry, generate_latest
from churn.observability.collector import BatchCollector
registry = CollectorRegistry()
registry.register(BatchCollector(sys.argv[1]))
text = generate_latest(registry).decode()
print(sorted({m.split(".")[0] for m in sys.modules} & {"pandas", "pyarrow", "numpy"}))
print(sum(line.startswith(("churn_scores_input_stale{", "churn_drift_input_stale{")) for line in text.splitlines()))
"""


def test_the_stale_input_gauges_import_no_pandas(seeded: Path) -> None:
    """The API has no pandas: rebuilding the recorded digests at scrape time reads MANIFESTs
    only. A fresh interpreter scrapes the seeded root (all four gauges present) and has
    imported neither pandas nor pyarrow (nor numpy)."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", SCRAPE_IN_A_FRESH_INTERPRETER, str(seeded)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "4"], proc.stdout + proc.stderr
