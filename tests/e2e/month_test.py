"""A month of operation with real containers (`//tests/e2e:month_test`).

The images pushed to a local registry, the manifests rendered with the `daily-simulator`
component, podman `kube play`, as in e2e_test.py. Then: the seed Job (120 days), the API
Deployment with a client polling /predict throughout, and 28 days, each ONE pod whose steps
are the args of the rendered CronJob templates, in their schedule's order: the simulator
(`generate --next-days 1`, with `--shift-from` the shift day), the daily cycle (`daily`), on
every 7th day the retrain (`retrain`), then the drift check (`drift-check`, exit 2 on FAIL).
One pod per day (init containers run in order) keeps it affordable on 2 cores.

Asserted: predictions for every day; drift not FAIL before the shift and FAIL within 7 days
after it; the first retrain whose holdout holds days after the shift promotes a candidate that
beats production on that holdout (the gate's record in registry/history.jsonl); the running API
serves it without a restart and the polling client saw no failed request. Printed: the
per-day table (day, users scored, drift status, production version, mean risk) and the
stage timings.

Hook for more checks (e.g. a Prometheus scraping the API): `DAY_HOOKS` are called after each
day with (day row, API base URL, data-root path of the volume).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import kube, podman  # noqa: E402
from harness.cleanup import Cleanup  # noqa: E402
from harness.deploy import bring_up, production_alias  # noqa: E402
from harness.net import free_port, http, wait_until  # noqa: E402
from harness.probes import PredictPoller, predict_body, wait_status  # noqa: E402
from harness.proc import log  # noqa: E402
from harness.stack import Stack  # noqa: E402
from harness.timing import Timings  # noqa: E402

DAYS = 28
SHIFT_DAY = 10
RETRAIN_EVERY = 7
JOB_TIMEOUT_S = 600
# config/month.yaml's scenario, small: 1,200 users keep a day's pod at a few seconds, and the
# recent drift window above monitoring.min_sample_size (500)
MONTH_CONFIG = """
generator: {n_users: 1200, days: 120, seed: 42, signup_rate: 0.005}
churn: {window_days: 7}
split: {gap_days: 7, test_days: 7, min_train_days: 7}
monitoring: {recent_days: 7}
"""
DAY_HOOKS: list[Callable[[dict[str, Any], str, Path], None]] = []


def _with_month_config(objs: list[kube.Obj]) -> None:
    for cm in kube.find(objs, "ConfigMap"):
        if "config.yaml" in cm.get("data", {}):
            cm["data"]["config.yaml"] = cm["data"]["config.yaml"].rstrip() + "\n" + MONTH_CONFIG


def _args(cronjob: kube.Obj) -> list[str]:
    return list(kube.containers(cronjob)[0]["args"])


def _day_row(root: Path, day: int, date: dt.date) -> dict[str, Any]:
    summary = root / "predictions" / date.isoformat() / "summary.json"
    assert summary.is_file(), f"day {day}: no predictions for {date}"
    s = json.loads(summary.read_text())
    drift = json.loads((root / "monitoring" / "drift" / f"{date.isoformat()}.json").read_text())
    alias = json.loads((root / "registry" / "aliases" / "production.json").read_text())["version"]
    return {"day": day, "date": date.isoformat(), "users_scored": s["rows"], "drift": drift["status"],
            "production": alias, "mean_risk": round(s["risk_mean"], 4)}


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    return "\n".join(["  ".join(c.ljust(widths[c]) for c in cols)]
                     + ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows])


def test_a_month_of_operation() -> None:
    timings = Timings()
    cleanup = Cleanup()
    prefix = f"mon{os.getpid()}x{int(time.time()) % 100000}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=os.environ.get("TEST_TMPDIR")))
    stack: Stack | None = None
    rows: list[dict[str, Any]] = []
    pulled: list[str] = []
    poller = None
    try:
        registry, objs = bring_up(timings, cleanup, workdir, prefix, pulled, components=("daily-simulator",))
        _with_month_config(objs)
        stack = Stack(objs, prefix, workdir, cleanup)
        seed, api = kube.one(objs, "Job", "bootstrap"), kube.one(objs, "Deployment", "api")
        simulator, daily = kube.one(objs, "CronJob", "simulator"), kube.one(objs, "CronJob", "daily")
        retrain, drift = kube.one(objs, "CronJob", "retrain"), kube.one(objs, "CronJob", "drift-check")

        with timings.stage("seed: 120 days, first production model"):
            claim = kube.claim_names(seed)[0]
            stack.run_job_expecting(seed, timeout=JOB_TIMEOUT_S)
            root = stack.volume_path(claim)
            seeded = production_alias(root)["version"]

        with timings.stage("api: up, client polling /predict from now on"):
            port = kube.http_probes(kube.container(api))["readiness"][1]
            host_port = free_port()
            kube.expose_on_host(api, port, host_port)
            stack.play(api)
            base = f"http://127.0.0.1:{host_port}"
            wait_status(base, "/ready", 200, 120, lambda: stack.dump_logs(api))
            api_name = podman.container_name(api["metadata"]["name"], kube.container(api)["name"])
            started = podman.inspect(api_name)["State"]["StartedAt"]
            poller = PredictPoller(base, predict_body(http("GET", base + "/model").json())).start()

        start = dt.date(2025, 1, 1) + dt.timedelta(days=120)  # generator.start_date + days
        shift_date = start + dt.timedelta(days=SHIFT_DAY - 1)
        for day in range(1, DAYS + 1):
            date = start + dt.timedelta(days=day - 1)
            steps = [_args(simulator) + ["--shift-from", shift_date.isoformat()], _args(daily)]
            if day % RETRAIN_EVERY == 0:
                steps.append(_args(retrain))
            steps.append(_args(drift))
            with timings.stage(f"day {day}: {' -> '.join(s[0] for s in steps)}"):
                job = kube.job_with_steps(daily, f"{prefix}-day{day}", "daily", steps)
                codes = stack.run_job(job, timeout=JOB_TIMEOUT_S)
                assert all(v == 0 for k, v in codes.items() if "drift-check" not in k), codes
                assert {v for k, v in codes.items() if "drift-check" in k} <= {0, 2}, codes
                rows.append(_day_row(root, day, date))
                log(f"day {day}: {rows[-1]}")
                for hook in DAY_HOOKS:
                    hook(rows[-1], base, root)

        with timings.stage("checks: drift, promotion, reload, no failed request"):
            before = [r["drift"] for r in rows[:SHIFT_DAY - 1]]
            after = [r["drift"] for r in rows[SHIFT_DAY - 1:SHIFT_DAY - 1 + 7]]
            assert "FAIL" not in before, before
            assert "FAIL" in after, after
            history = [json.loads(line) for line in (root / "registry" / "history.jsonl").read_text().splitlines()]
            gate = _first_post_shift_retrain(history, shift_date)
            assert gate, f"no retrain with a holdout after {shift_date}: {history}"
            log(f"first retrain with post-shift labels in its holdout: {gate}")
            m = gate["metrics"]
            assert gate["action"] == "promote" and m["candidate"] > m["production"], gate
            wait_until(f"API serves {rows[-1]['production']}",
                       lambda: poller.seen() and poller.seen()[-1] == rows[-1]["production"], 60)
            poller.stop()
            assert not poller.failures, poller.failures[:10]
            assert poller.seen()[0] == seeded and len(poller.seen()) >= 2, poller.seen()
            info = podman.inspect(api_name)
            assert info["RestartCount"] == 0 and info["State"]["StartedAt"] == started, "API was restarted"
            log(f"poller: {poller.requests} requests, versions {poller.seen()}, 0 failed")
    finally:
        if poller:
            poller.stop()
        with timings.stage("teardown"):
            errors = cleanup.run()
        print("\nper-day table:\n" + (_table(rows) if rows else "(no day completed)"), flush=True)
        print("\nstage timings:\n" + timings.table(), flush=True)
        if os.environ.get("E2E_KEEP_WORKDIR") != "1":
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
    assert not errors, errors


def _first_post_shift_retrain(history: list[dict], shift_date: dt.date) -> dict | None:
    """The gate's record of the first retrain whose holdout holds days after the shift."""
    for event in history:
        holdout = (event.get("metrics") or {}).get("holdout_as_of") or []
        if event.get("reason") == "scheduled retrain" and holdout and holdout[-1] >= shift_date.isoformat():
            return event
    return None
