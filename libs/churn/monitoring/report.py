"""Drift report files: JSON (machines, exit code) and a self-contained HTML page (people).

One PNG per drifted feature (baseline vs recent share per bin) is embedded as base64, so the
page is a single file that survives being copied off the volume.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from churn.monitoring.drift import DriftReport, FeatureDrift
from churn.plotting.figures import figure_png, subplots
from churn.storage.files import atomic_write_json, atomic_write_text


def feature_png(feature: FeatureDrift) -> bytes:
    """Bar chart of the bin shares of both windows."""
    import numpy as np

    x = np.arange(len(feature.bins))
    with subplots(figsize=(8, 3.6)) as (fig, ax):
        ax.bar(x - 0.2, feature.baseline_share, width=0.4, label=f"training window (n={feature.baseline_n})")
        ax.bar(x + 0.2, feature.recent_share, width=0.4, label=f"recent window (n={feature.recent_n})")
        ax.set_xticks(x, feature.bins, rotation=45, ha="right", fontsize=7)
        ax.set(ylabel="share", title=f"{feature.name}: PSI {feature.psi:.3f} ({feature.status})")
        ax.legend()
        return figure_png(fig, dpi=80)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def render_html(report: DriftReport) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr class='{f.status}'><td>{esc(f.name)}</td><td>{f.status}</td><td>{f.psi:.4f}</td>"
        f"<td>{f.psi_noise:.4f}</td><td>{_fmt(f.psi_p_value)}</td><td>{_fmt(f.ks_statistic)}</td>"
        f"<td>{_fmt(f.ks_p_value)}</td></tr>" for f in report.features)
    plots = "".join(
        f"<h3>{esc(f.name)}</h3><img alt='{esc(f.name)}' src='data:image/png;base64,"
        f"{base64.b64encode(feature_png(f)).decode('ascii')}'>" for f in report.drifted())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Drift report</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px}} .WARN{{background:#fff3c4}}
.FAIL{{background:#ffd0d0}}</style></head><body>
<h1>Drift: {report.status}</h1>
<p>Model {esc(report.model_version)}. Training window {report.training_window[0]}..{report.training_window[1]}
({report.baseline_n} users, one row each) vs recent window {report.recent_window[0]}..{report.recent_window[1]}
({report.recent_n} users). Thresholds: {esc(str(report.thresholds))}. PSI noise = expected PSI under no drift,
(bins-1)(1/n1+1/n2); a feature drifts only if its PSI is also statistically significant.</p>
<table><tr><th>feature</th><th>status</th><th>PSI</th><th>PSI noise</th><th>PSI p</th><th>KS D</th>
<th>KS p</th></tr>{rows}</table>
<p>Not checked (calendar-driven; list them in monitoring.features to check anyway):
{esc(", ".join(f"{k} ({v})" for k, v in report.skipped.items())) or "none"}</p>
<h2>Drifted features</h2>{plots or "<p>none</p>"}</body></html>
"""


def write_report(report: DriftReport, out_dir: Path) -> tuple[Path, Path]:
    """Write drift/<recent end>.json and .html under `out_dir`."""
    stem = out_dir / "drift" / report.recent_window[1]
    json_path = atomic_write_json(stem.with_suffix(".json"), report.to_dict())
    html_path = atomic_write_text(stem.with_suffix(".html"), render_html(report))
    return json_path, html_path
