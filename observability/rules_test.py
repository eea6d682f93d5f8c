"""The alert rules and the dashboard's queries, checked by Debian's promtool.

- `promtool check rules` on the rules file and on the PrometheusRule's groups;
- `promtool test rules` on both unit-test files, and every alert has a firing and a quiet case;
- the committed PrometheusRule is what the generator makes from the rules file;
- every panel query of the dashboard parses (as a recording rule, through promtool);
- and each check fails on a broken input (so none of them passes vacuously).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from observability import dashboard, prometheus_rule

RULES_DIR = prometheus_rule.RULES.parent
TEST_FILES = sorted(RULES_DIR.glob("*.test.yml"))


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is not on PATH: run through ./bazelw test (Debian's prometheus in the toolchain root)"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=300)


def alerts(rules: dict) -> list[str]:
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


def source_rules() -> dict:
    return yaml.safe_load(prometheus_rule.RULES.read_text())


def test_promtool_checks_the_rules_file() -> None:
    proc = promtool("check", "rules", str(prometheus_rule.RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts(source_rules()))} rules found" in proc.stdout, proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = promtool("test", "rules", *(p.name for p in TEST_FILES), cwd=RULES_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(TEST_FILES), proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    every = set(alerts(source_rules()))
    assert every - firing == set(), f"alerts without a firing test: {sorted(every - firing)}"
    assert every - quiet == set(), f"alerts without a not-firing test: {sorted(every - quiet)}"
    assert firing | quiet <= every, f"tests of unknown alerts: {sorted((firing | quiet) - every)}"


def test_a_changed_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    for path in TEST_FILES:
        shutil.copy(path, tmp_path / path.name)
    text = prometheus_rule.RULES.read_text()
    assert "status=~\"5..\"}[5m])) > 0.01" not in text  # the threshold sits on its own line
    broken = text.replace("> 0.01", "> 0.5").replace(">= 187200", ">= 190000")
    assert broken != text
    (tmp_path / prometheus_rule.RULES.name).write_text(broken)
    proc = promtool("test", "rules", *(p.name for p in TEST_FILES), cwd=tmp_path)
    assert proc.returncode != 0
    assert "ChurnApiHighErrorRatio" in proc.stdout + proc.stderr and "ChurnScoresMissing" in proc.stdout + proc.stderr


def test_a_broken_expression_fails_the_check(tmp_path: Path) -> None:
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(prometheus_rule.RULES.read_text().replace("up{job=\"churn-api\"} == 0", "up{job=\"churn-api\" == 0"))
    proc = promtool("check", "rules", str(broken))
    assert proc.returncode != 0 and "ChurnApiDown" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_the_prometheusrule_is_generated_from_the_rules_file() -> None:
    committed = prometheus_rule.COMPONENT_RULE.read_text()
    assert committed == prometheus_rule.render(prometheus_rule.RULES.read_text()), (
        "k8s/components/prometheus-operator/prometheusrule.yaml is stale: ./bazelw run //observability:update")
    obj = yaml.safe_load(committed)
    assert obj["spec"]["groups"] == source_rules()["groups"]


def test_the_generator_notices_a_difference() -> None:
    rules = prometheus_rule.RULES.read_text()
    assert prometheus_rule.render(rules.replace("for: 2m", "for: 3m")) != prometheus_rule.COMPONENT_RULE.read_text()


def test_promtool_checks_the_prometheusrule_groups(tmp_path: Path) -> None:
    spec = yaml.safe_load(prometheus_rule.COMPONENT_RULE.read_text())["spec"]
    path = tmp_path / "from-prometheusrule.yml"
    path.write_text(yaml.safe_dump(spec))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def panel_rules_file(tmp_path: Path, queries: list[dashboard.Query]) -> Path:
    """Each panel query as a recording rule: `promtool check rules` parses every expression."""
    rules = [{"record": f"dashboard:panel_{i}:{q.ref.lower()}", "expr": q.expr} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    return path


def test_the_dashboard_has_the_panels_asked_for() -> None:
    queries = dashboard.panel_queries(dashboard.load())
    assert len(queries) >= 20
    titles = {q.panel for q in queries}
    for needed in ("Requests per second by route", "/predict latency", "5xx ratio", "PSI per feature",
                   "Served risk (API, last hour)", "Model versions served and aliased", "Promotions and reloads"):
        assert needed in titles, sorted(titles)


@pytest.fixture
def queries() -> list[dashboard.Query]:
    return dashboard.panel_queries(dashboard.load())


def test_promtool_parses_every_panel_query(tmp_path: Path, queries: list[dashboard.Query]) -> None:
    proc = promtool("check", "rules", str(panel_rules_file(tmp_path, queries)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(queries)} rules found" in proc.stdout


def test_promtool_rejects_a_broken_panel_query(tmp_path: Path, queries: list[dashboard.Query]) -> None:
    broken = [*queries[:-1], dashboard.Query("x", "Z", queries[-1].expr.replace("(", "", 1), "", "short")]
    proc = promtool("check", "rules", str(panel_rules_file(tmp_path, broken)))
    assert proc.returncode != 0


def test_panels_use_only_the_churn_api_job(queries: list[dashboard.Query]) -> None:
    assert all('job="churn-api"' in q.expr for q in queries), [q.expr for q in queries if 'job="churn-api"' not in q.expr]
    assert all("$" not in q.expr for q in queries), "a Grafana variable the checks do not substitute"
