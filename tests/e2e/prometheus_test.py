"""The Prometheus harness against a real Prometheus, without containers: it scrapes a
prometheus_client endpoint on loopback whose drift status the test flips, with the project's
rules loaded; the dashboard's panels are drawn from what it scraped. Proves the harness piece the
end-to-end scenario uses (start, settle, alert states, query_range, stop)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, start_http_server

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tools.testing.loopback import free_port  # noqa: E402
from harness.prometheus import LocalPrometheus, _epoch, config_text  # noqa: E402
from observability.dashboard import load as load_dashboard, panel_queries  # noqa: E402
from observability.panels_png import render as render_panels  # noqa: E402


def rules_file() -> Path:
    return Path(os.environ["E2E_RULES"]).absolute()


def test_times_and_config() -> None:
    assert _epoch("2026-12-01T09:40:01.5Z") == 1796118001.5
    assert _epoch("2026-12-01T10:40:01.25+01:00") == 1796118001.25
    text = config_text({"churn-api": ["127.0.0.1:1"]}, [Path("/r.yml")])
    assert "job_name: churn-api" in text and "- /r.yml" in text


def test_drift_alert_follows_the_scraped_status(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    status = Gauge("churn_drift_status", "drift status", ["status"], registry=registry)
    newest = Gauge("churn_scores_newest_day_timestamp_seconds", "newest day", registry=registry)
    status.labels("OK").set(1)
    status.labels("FAIL").set(0)
    newest.set(time.time() - 86400)  # yesterday's scores: not missing
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    prom = LocalPrometheus(tmp_path / "prometheus", [rules_file()])
    try:
        prom.start({"churn-api": [f"127.0.0.1:{port}"]})
        started = time.time()
        prom.wait_until_up("churn-api")
        prom.settle()
        assert prom.alert_state("ChurnDriftFail") is None
        assert prom.alert_state("ChurnScoresMissing") is None
        status.labels("OK").set(0)
        status.labels("FAIL").set(1)
        newest.set(0)  # never scored (0 = never)
        prom.wait_for_alert("ChurnDriftFail", "firing", 30)
        prom.wait_for_alert("ChurnScoresMissing", "firing", 30)
        end = time.time()
        # points at end - k (the last one is `end` itself, after the scrape that saw FAIL)
        series = prom.query_range('max by (status) (churn_drift_status{job="churn-api"})', end - 120, end, 1)
        values = {s["metric"]["status"]: [float(v[1]) for v in s["values"]] for s in series}
        assert values["FAIL"][0] == 0.0 and values["FAIL"][-1] == 1.0, values
        drawn = render_panels(prom.query_range, started, time.time(), tmp_path / "dashboard.png", step=1.0)
        assert drawn["Drift status"] == 1, drawn  # only the current status (FAIL), as Grafana's stat shows
        # every panel of the dashboard is drawn (its count is the dashboard's, not a number here)
        assert set(drawn) == {q.panel for q in panel_queries(load_dashboard())}, drawn
        assert drawn["PSI per feature"] == 0, drawn  # the rest has no data here
        assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        prom.stop()
        server.shutdown()
    assert not prom.running()
