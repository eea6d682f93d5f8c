"""The dashboard's panels drawn with matplotlib from a Prometheus's query_range API.

Grafana is not packaged where the project is built; this draws the SAME panel queries (from
the dashboard JSON, through `dashboard.panel_queries`) so the README can show what the
dashboard shows on real data (the end-to-end test's Prometheus). Time series become lines,
stat and table panels the latest values, bar gauges bars by bucket bound.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

from observability.dashboard import Query, load, panel_queries, panels

LEGEND_MAX = 8
# (expr, start, end, step) -> Prometheus's query_range result list
QueryRange = Callable[[str, float, float, float], list[dict[str, Any]]]


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's {{label}} legend format."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or str(labels)


def _scale(unit: str) -> tuple[float, str]:
    return {"s": (1000.0, "ms"), "percentunit": (100.0, "%"), "reqps": (1.0, "req/s")}.get(unit, (1.0, ""))


def render(query_range: QueryRange, start: float, end: float, out: Path, rate_interval: str = "15s",
           step: float = 2.0, title: str = "churn-mlops dashboard") -> dict[str, int]:
    """Draw every panel into `out` (PNG); returns {panel title: series drawn}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the last point of every query_range is `end` itself (points are start + k * step; Prometheus
    # keeps milliseconds)
    end = math.floor(end * 1000) / 1000
    start = end - math.ceil((end - start) / step) * step
    dash = load()
    kinds = {p["title"]: p["type"] for p in panels(dash)}
    by_panel: dict[str, list[Query]] = {}
    for q in panel_queries(dash, rate_interval):
        by_panel.setdefault(q.panel, []).append(q)
    cols = 4
    rows = math.ceil(len(by_panel) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 2.7 * rows), squeeze=False, layout="constrained")
    drawn: dict[str, int] = {}
    try:
        for ax, (panel, queries) in zip(axes.flat, by_panel.items()):
            drawn[panel] = _draw(ax, kinds[panel], queries, query_range, start, end, step)
            ax.set_title(panel, fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(by_panel):]:
            ax.axis("off")
        fig.suptitle(f"{title} (panel queries of k8s/components/prometheus-operator/dashboards/churn-mlops.json, "
                     f"{(end - start) / 60:.0f} min of the end-to-end test's Prometheus)", fontsize=11)
        fig.savefig(out, format="png", dpi=70)
    finally:
        plt.close(fig)
    return drawn


def _draw(ax: Any, kind: str, queries: list[Query], query_range: QueryRange, start: float, end: float,
          step: float) -> int:
    """One panel; returns the number of series it drew."""
    factor, suffix = _scale(queries[0].unit)
    series = [(q, s) for q in queries for s in query_range(q.expr, start, end, step)]
    # what Grafana's stat, table and bar gauge panels show: the series present at the end
    current = [(q, s) for q, s in series if float(s["values"][-1][0]) >= end - step / 2]
    if kind == "timeseries":
        # the legend names the LEGEND_MAX series highest at the end (PSI has one per feature)
        ranked = sorted(series, key=lambda qs: -float(qs[1]["values"][-1][1]))
        for rank, (q, s) in enumerate(ranked):
            t = [(float(v[0]) - start) / 60 for v in s["values"]]
            ax.plot(t, [float(v[1]) * factor for v in s["values"]],
                    label=legend(q.legend, s["metric"])[:32] if rank < LEGEND_MAX else None)
        ax.set_xlabel("minutes", fontsize=7)
        if suffix:
            ax.set_ylabel(suffix, fontsize=7)
        if series:
            ax.legend(fontsize=6, loc="upper left", title=f"top {LEGEND_MAX} of {len(series)}"
                      if len(series) > LEGEND_MAX else None, title_fontsize=6)
    elif kind == "bargauge":
        last = sorted(((float(s["metric"].get("le", "inf")), float(s["values"][-1][1])) for _, s in current))
        ax.barh([f"{le:g}" for le, _ in last], [v for _, v in last])
        ax.set_ylabel("le", fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
    else:  # stat, table: the latest value of each current series as text
        lines = [f"{legend(q.legend, s['metric'])[:34]}: {_fmt(float(s['values'][-1][1]), q.unit)}"
                 for q, s in current]
        ax.axis("off")
        ax.text(0.02, 0.95, "\n".join(lines[:8]) or "no data", va="top", family="monospace", fontsize=8,
                transform=ax.transAxes)
    shown = series if kind == "timeseries" else current
    if not shown and kind in ("timeseries", "bargauge"):
        ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
    return len(shown)


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value / 86400:.1f} d" if value >= 86400 else f"{value / 3600:.1f} h" if value >= 3600 else f"{value:.3g} s"
    if unit == "percentunit":
        return f"{100 * value:.1f}%"
    return f"{value:g}"
