"""Drift report files: JSON (machines, exit code) and a self-contained HTML page (people).

One PNG per drifted feature (baseline vs recent share per bin) is embedded as base64, so the
page is a single file that survives being copied off the volume.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any

from churn.monitoring.drift import DriftReport, FeatureDrift
from churn.plotting.charts import Bars, bars_png
from churn.storage.files import atomic_write_json, atomic_write_text
from churn.storage.generations import publish
from churn.storage.paths import DRIFT_AREA, DataPaths

log = logging.getLogger(__name__)


def feature_png(feature: FeatureDrift) -> bytes:
    """Bar chart of the bin shares of both windows."""
    return bars_png(f"{feature.name}: PSI {feature.psi:.3f} ({feature.status})", feature.bins,
                    [Bars(feature.baseline_share, f"training window (n={feature.baseline_n})"),
                     Bars(feature.recent_share, f"recent window (n={feature.recent_n})", "orange")], "share")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _row(f: FeatureDrift) -> str:
    esc = html.escape
    missing = (f"{f.baseline_missing_share:.3f} &rarr; {f.recent_missing_share:.3f}" if f.missing_test else "-")
    return (f"<tr class='{f.status}'><td>{esc(f.name)}</td><td>{f.value_kind}</td><td>{f.status}</td>"
            f"<td>{f.psi:.3f}</td><td>{f.value_psi:.3f} ({f.value_psi_low:.3f})</td><td>{f.value_test}</td>"
            f"<td>{_fmt(f.value_p_value)}</td><td>{f.baseline_values_n} / {f.recent_values_n}</td>"
            f"<td>{missing}</td><td>{_fmt(f.missing_psi)} ({_fmt(f.missing_psi_low)})</td>"
            f"<td>{_fmt(f.missing_p_value)}</td><td>{esc(f.reason)}</td></tr>")


def render_html(report: DriftReport) -> str:
    esc = html.escape
    rows = "".join(_row(f) for f in report.features)
    plots = "".join(
        f"<h3>{esc(f.name)}</h3><img alt='{esc(f.name)}' src='data:image/png;base64,"
        f"{base64.b64encode(feature_png(f)).decode('ascii')}'>" for f in report.drifted())
    skipped = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in report.skipped.items()) or "<li>none</li>"
    t = report.thresholds
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Drift report</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px}} .WARN{{background:#fff3c4}}
.FAIL{{background:#ffd0d0}}</style></head><body>
<h1>Drift: {report.status}</h1>
<p>Model {esc(report.model_version)}. Training window {report.training_window[0]}..{report.training_window[1]}
({report.baseline_n} users, one row each) vs recent window {report.recent_window[0]}..{report.recent_window[1]}
({report.recent_n} users, one row each).</p>
<p>A feature is WARN/FAIL when the lower confidence bound of the PSI of its values (or of its
missing share) is at least {t["psi_warn"]} / {t["psi_fail"]} AND the test suited to it agrees
(KS for continuous values, chi-square for counts and categories, Fisher's exact test for the
missing share), at a family-wise alpha of {t["alpha"]} Bonferroni-corrected over {t["tests"]} tests
({t["alpha_per_test"]:.2g} each). Method: {esc(report.method)} in the repository.</p>
<table><tr><th>feature</th><th>kind</th><th>status</th><th>PSI</th><th>values PSI (lower bound)</th>
<th>test</th><th>p</th><th>values n (training / recent)</th><th>missing share</th>
<th>missing PSI (lower bound)</th><th>Fisher p</th><th>reason</th></tr>{rows}</table>
<h2>Not checked</h2><ul>{skipped}</ul>
<h2>Drifted features</h2>{plots or "<p>none</p>"}</body></html>
"""


def write_report(report: DriftReport, out_dir: Path) -> tuple[Path, Path]:
    """Write <recent end>.json and .html into `out_dir` (a generation being published)."""
    stem = out_dir / report.recent_window[1]
    json_path = atomic_write_json(stem.with_suffix(".json"), report.to_dict())
    html_path = atomic_write_text(stem.with_suffix(".html"), render_html(report))
    return json_path, html_path


def stale_drift_inputs(paths: DataPaths, registry: Any, inputs: dict[str, str],
                       report: DriftReport) -> dict[str, dict[str, Any]]:
    """The inputs `report` is about to record (`inputs`: the features digest of its training
    and recent windows, the model version) that are no longer the current ones ({} when
    current), each logged as a WARNING naming the report, the input and both values.

    `paths`: the layout as it is NOW (not the state drift-check read): the drift CronJob can
    overlap a daily cycle, and an update or a promotion published while drift-check read the
    features makes the report stale when it is written. Compared the way score-distribution
    compares the scores' (`churn.pipeline.recorded_inputs.check`, the digest rebuilt from the
    current tables' MANIFEST); the /metrics gauge `churn_drift_input_stale` says the same later."""
    from churn.pipeline import recorded_inputs  # standard library, storage and registry only

    spans = recorded_inputs.drift_spans({"training_window": report.training_window,
                                         "recent_window": report.recent_window})
    stale = recorded_inputs.stale(recorded_inputs.check(paths, registry, inputs, spans))
    for name, values in stale.items():
        log.warning("%s: drift of %s computed from %s %s, the current %s is %s (published while drift-check "
                    "ran): the report is not of the current state; run `ml_jobs drift-check` again",
                    paths.drift_reports / f"{report.recent_window[1]}.json", report.recent_window[1], name,
                    values["recorded"], name, values["current"])
    return stale


def publish_report(report: DriftReport, paths: DataPaths, inputs: dict[str, str]) -> tuple[Path, Path]:
    """Publish the JSON and the HTML together as a new generation of `monitoring/drift/`.

    Why: written one after the other in place, a kill between them left a new JSON beside the
    old HTML. The generation carries the earlier days' reports; `inputs` (the features'
    digest, the model version) go into its MANIFEST. Returns the paths as readers open them.
    """
    with publish(paths.root, DRIFT_AREA, inputs=inputs, carry=True) as out:
        json_path, html_path = write_report(report, out)
    return paths.drift_reports / json_path.name, paths.drift_reports / html_path.name
