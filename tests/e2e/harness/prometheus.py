"""Debian's Prometheus on a free loopback port: a generated config that scrapes given targets
and loads the project's rules file, and its HTTP API (queries, alerts, "has it caught up").

    prom = LocalPrometheus(workdir, rule_files=[RULES]).start({"churn-api": ["127.0.0.1:8123"]})
    prom.wait_until_up("churn-api")
    prom.settle()                       # a scrape and a rule evaluation after this moment
    prom.alert_state("ChurnDriftFail")  # "firing" | "pending" | None
    prom.stop()

Scrape and evaluation every 2 seconds, so a test sees a change of the scraped files within a
few seconds; retention is the test's temp dir.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.net import http, wait_until
from tools.testing.loopback import free_port
from harness.proc import die_with_parent, log, stop_server

INTERVAL_S = 2  # scrape timeout = interval: 1 s is tight for a loaded 2-core machine


def config_text(targets: dict[str, list[str]], rule_files: list[Path], interval_s: int = INTERVAL_S) -> str:
    """prometheus.yml: one static scrape job per entry of `targets` (job name -> host:port list)."""
    lines = ["global:", f"  scrape_interval: {interval_s}s", f"  scrape_timeout: {interval_s}s",
             f"  evaluation_interval: {interval_s}s", "rule_files:"]
    lines += [f"- {path}" for path in rule_files] or ["  []"]
    lines += ["scrape_configs:"]
    for job, hosts in targets.items():
        lines += [f"- job_name: {job}", "  static_configs:", f"  - targets: [{', '.join(hosts)}]"]
    return "\n".join(lines) + "\n"


class LocalPrometheus:
    """`start()` writes the config, spawns the server, waits for /-/ready; `stop()` ends it."""

    def __init__(self, workdir: Path, rule_files: list[Path]) -> None:
        self.workdir = workdir
        self.rule_files = rule_files
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, targets: dict[str, list[str]], deadline_s: float = 60) -> "LocalPrometheus":
        exe = shutil.which("prometheus")
        if exe is None:
            raise RuntimeError("prometheus is not on PATH: run the test inside the toolchain root (./bazelw test)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(config_text(targets, self.rule_files))
        self.port = free_port()
        self.log_path = self.workdir / "prometheus.log"
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                [exe, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=logf, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        log(f"prometheus pid {self.proc.pid} on {self.url}, targets {targets}")

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log_tail()}")
            return http("GET", f"{self.url}/-/ready", timeout=1).status == 200

        wait_until("prometheus /-/ready answers 200", ready, deadline_s, 0.2)
        return self

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_server(self.proc, "prometheus", grace_s=20)
        self.proc = None

    # ------------------------------------------------------------------ HTTP API

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the `data` of a success, else RuntimeError with Prometheus's error."""
        query = urllib.parse.urlencode(params)
        resp = http("GET", f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""), timeout=10)
        body = resp.json()
        if resp.status != 200 or body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: HTTP {resp.status} {body.get('errorType')}: "
                               f"{body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector results [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The single value of `expr` now, or None if it has no result."""
        result = self.query(expr)
        if len(result) > 1:
            raise AssertionError(f"{expr}: {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1]) if result else None

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def alert_state(self, name: str) -> str | None:
        """"firing", "pending" or None (not active) for alert `name` (any labels)."""
        states = {a["state"] for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == name}
        return "firing" if "firing" in states else ("pending" if states else None)

    def wait_until_up(self, job: str, deadline_s: float = 60) -> None:
        wait_until(f"prometheus scrapes job {job} (up == 1)",
                   lambda: self.value(f'min(up{{job="{job}"}})') == 1.0, deadline_s, 0.5,
                   on_timeout=lambda: str(self.api("targets")))

    def settle(self, deadline_s: float = 30) -> None:
        """Return once every target was scraped and then every rule group evaluated, after now:
        what the files say at this moment is then in the alerts' state."""
        since = time.time()

        def caught_up() -> bool:
            scrapes = [_epoch(t["lastScrape"]) for t in self.api("targets")["activeTargets"]]
            evaluations = [_epoch(g["lastEvaluation"]) for g in self.api("rules")["groups"]]
            return bool(scrapes) and min(scrapes) > since and bool(evaluations) and min(evaluations) > max(scrapes)

        wait_until("prometheus scraped and evaluated after the change", caught_up, deadline_s, 0.25)

    def wait_for_metric(self, expr: str, deadline_s: float = 60) -> None:
        """Until `expr` has a result."""
        wait_until(f"prometheus has {expr}", lambda: self.query(expr), deadline_s, 0.5)

    def wait_for_alert(self, name: str, state: str | None, deadline_s: float = 60) -> None:
        """Until `alert_state(name) == state` (None = not active)."""
        wait_until(f"alert {name} is {state or 'inactive'}", lambda: self.alert_state(name) == state or None,
                   deadline_s, 0.5, on_timeout=lambda: str(self.api("alerts")))


def _epoch(text: str) -> float:
    """Prometheus's RFC 3339 times (nanosecond fractions, 'Z' or an offset) as epoch seconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time from Prometheus: {text!r}")
    head, fraction, offset = match.groups()
    moment = datetime.fromisoformat(head + ("+00:00" if offset == "Z" else offset))
    return moment.timestamp() + float(fraction or 0.0)
