"""The prometheus-operator component: opt-in, its ServiceMonitor reaches the API Service, its
PrometheusRule holds the plain rules file's groups, its dashboard ConfigMap is what the
Grafana sidecar loads."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.k8s.k8s_stream import by_kind

RULES = Path(__file__).absolute().parents[2] / "observability" / "rules" / "churn-mlops.rules.yml"


def test_the_component_is_opt_in(default_docs: list[dict]) -> None:
    assert not [d for d in default_docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [d for d in default_docs if "grafana_dashboard" in d["metadata"].get("labels", {})]


def test_the_service_monitor_selects_the_api_service_and_its_port(full_docs: list[dict]) -> None:
    monitor = by_kind(full_docs, "ServiceMonitor")["churn-api"]
    services = by_kind(full_docs, "Service")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in services.values() if wanted.items() <= s["metadata"].get("labels", {}).items()]
    assert [s["metadata"]["name"] for s in selected] == ["churn-api"]
    ports = {p.get("name") for p in selected[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports, ports
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    # the job label is the Service's name, which every rule selects
    assert "jobLabel" not in monitor["spec"] and selected[0]["metadata"]["name"] == "churn-api"
    assert monitor["metadata"]["namespace"] == selected[0]["metadata"]["namespace"] == "churn-mlops"


def test_the_api_ingress_policy_lets_prometheus_scrape(full_docs: list[dict]) -> None:
    policy = by_kind(full_docs, "NetworkPolicy")["churn-api-ingress"]
    rule = policy["spec"]["ingress"][0]
    assert {"namespaceSelector": {}} in rule["from"], "Prometheus runs in another namespace"
    assert {"protocol": "TCP", "port": 8000} in rule["ports"]


def test_the_prometheus_rule_holds_the_plain_rules(full_docs: list[dict]) -> None:
    rule = by_kind(full_docs, "PrometheusRule")["churn-mlops"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    selectors = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert all('job="churn-api"' in e for e in selectors), "every rule selects the ServiceMonitor's job"


def test_the_dashboard_config_map_is_for_the_grafana_sidecar(full_docs: list[dict]) -> None:
    maps = {name: d for name, d in by_kind(full_docs, "ConfigMap").items()
            if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"}
    assert list(maps) == ["churn-mlops-dashboard"], "one dashboard ConfigMap, without a hash suffix"
    data = maps["churn-mlops-dashboard"]["data"]
    assert list(data) == ["churn-mlops.json"]
    dashboard = json.loads(data["churn-mlops.json"])
    assert dashboard["uid"] == "churn-mlops" and dashboard["title"] == "churn-mlops"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in [p for p in dashboard["panels"] if p["type"] != "row"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
