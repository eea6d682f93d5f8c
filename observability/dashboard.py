"""The Grafana dashboard's panel queries, as Prometheus sees them.

Grafana substitutes its variables before sending a query; `panel_queries` does the same for
the ones the dashboard uses, so promtool and a real Prometheus check the exact expressions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).absolute().parent  # not resolved: under Bazel the files sit in runfiles
DASHBOARD = HERE.parent / "k8s" / "components" / "prometheus-operator" / "dashboards" / "churn-mlops.json"


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str
    legend: str
    unit: str


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-row panel, also those nested in collapsed rows."""
    out = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            out += panel.get("panels", [])
        else:
            out.append(panel)
    return out


def panel_queries(dashboard: dict[str, Any], rate_interval: str = "5m") -> list[Query]:
    """(panel title, refId, PromQL with Grafana's $__rate_interval replaced, legend, unit)."""
    queries = []
    for panel in panels(dashboard):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            queries.append(Query(panel["title"], target["refId"], expr, target.get("legendFormat", ""), unit))
    return queries


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
