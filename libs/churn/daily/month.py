"""A month of operation without containers (`//:simulate`): the daily cycle, day after day.

Why: the e2e month test proves the CronJobs in containers; this runs the same steps in one
process so anyone can watch a month of drift, scores, matured labels and promotions on a
laptop in a minute or two, in a data root of their choice.

Each simulated day: `generate --next-days 1` (with the shift from the chosen day on) drops a
batch into the inbox -> the daily cycle (ingest, update, batch-score, score-distribution) -> drift
check -> on every 7th day the weekly retrain (training set, train, promote through the gate).
`DayRow` records what an operator would look at; `production_pr_auc` is measured on the
labels as they mature: the scores of day t against the labels of t once t + W <= newest day.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from churn.config.settings import Settings
from churn.errors import ChurnError
from churn.pipeline import steps
from churn.pipeline.steps import EXIT_DRIFT, EXIT_OK, StepResult
from churn.storage.daytables import day_files
from churn.storage.paths import DataPaths
from churn.storage.tables import read_parquet

log = logging.getLogger(__name__)

RETRAIN_EVERY_DAYS = 7


@dataclass
class DayRow:
    """One day of the month as the per-day table and the timeline show it."""

    day: int
    date: str
    users_scored: int
    drift: str
    production: str
    mean_risk: float | None
    psi: dict[str, float] = field(default_factory=dict)
    retrain: str = ""  # "", "promoted <version>", "kept <version>"
    matured_pr_auc: dict[str, float] = field(default_factory=dict)  # as-of date -> PR-AUC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def table(rows: list[DayRow]) -> str:
    """The per-day table (day, users scored, drift status, production version, mean risk)."""
    return steps.format_table([{"day": r.day, "date": r.date, "users_scored": r.users_scored, "drift": r.drift,
                                "production": r.production,
                                "mean_risk": None if r.mean_risk is None else round(r.mean_risk, 4),
                                "retrain": r.retrain or "-"} for r in rows])


def _check(result: StepResult, allowed: tuple[int, ...] = (EXIT_OK,)) -> StepResult:
    if result.exit_code not in allowed:
        raise ChurnError(f"{result.name} exited {result.exit_code}: {result.message}")
    return result


def matured_pr_auc(settings: Settings, paths: DataPaths) -> dict[str, float]:
    """PR-AUC of the scores of every scored day whose labels have matured (t + W <= newest day)."""
    from churn.training.metrics import pr_auc

    labels = day_files(paths.bound().labels_file)
    out = {}
    for folder in sorted(paths.predictions.iterdir()) if paths.predictions.is_dir() else []:
        day = dt.date.fromisoformat(folder.name)
        if day not in labels or not (folder / "scores.parquet").is_file():
            continue
        scores = read_parquet(folder / "scores.parquet", columns=["user_id", "risk"])
        joined = scores.merge(read_parquet(labels[day], columns=["user_id", "churn_label"]), on="user_id")
        if len(joined) and joined["churn_label"].nunique() == 2:
            out[folder.name] = round(pr_auc(joined["churn_label"].to_numpy(), joined["risk"].to_numpy()), 4)
    return out


def _drift_psi(result: StepResult) -> dict[str, float]:
    path = next((p for p in result.outputs if p.endswith(".json")), None)
    if not path:
        return {}
    report = json.loads(Path(path).read_text())
    return {f["name"]: float(f["psi"]) for f in report.get("features", []) if f.get("psi") is not None}


def run_month(settings: Settings, days: int, shift_from_day: int | None,
              on_day: Callable[[DayRow], None] | None = None) -> list[DayRow]:
    """`days` daily cycles after the seed period; the shift starts on day `shift_from_day` (1-based)."""
    paths = DataPaths.from_root(settings.paths.root)  # unbound: each day reads the tables as published then
    if not (paths.registry / "aliases" / "production.json").is_file():  # bootstrap: 120 days, first model
        for result in steps.bootstrap(settings):  # refuses a data root that holds anything already
            _check(result, (EXIT_OK, EXIT_DRIFT))
    registry = steps.registry_for(paths)
    g = settings.generator
    first_new = dt.date.fromisoformat(g.start_date) + dt.timedelta(days=g.days)
    shift_from = first_new + dt.timedelta(days=shift_from_day - 1) if shift_from_day else None
    rows: list[DayRow] = []
    for day in range(1, days + 1):
        gen = _check(steps.step_generate_next(settings, 1, shift_from))
        cycle = [_check(r) for r in steps.step_daily(settings)]
        scored = next(r for r in cycle if r.name == "batch-score")
        proxy = next(r for r in cycle if r.name == "score-distribution")
        drift = _check(steps.step_drift_check(settings), (EXIT_OK, EXIT_DRIFT))
        retrain = ""
        if day % RETRAIN_EVERY_DAYS == 0:
            promote = [_check(r) for r in steps.step_retrain(settings)][-1]
            retrain = f"{'promoted' if promote.detail['promoted'] else 'kept'} {promote.detail['to']}"
        row = DayRow(day, gen.detail["last_day"], scored.rows, str(drift.detail["status"]),
                     str(registry.get_alias()), proxy.detail.get("mean"), _drift_psi(drift), retrain,
                     matured_pr_auc(settings, paths))
        rows.append(row)
        if on_day:
            on_day(row)
    return rows


def top_features(rows: list[DayRow], n: int = 3) -> list[str]:
    """The features with the highest PSI on any day (the timeline plots these)."""
    best: dict[str, float] = {}
    for r in rows:
        for k, v in r.psi.items():
            best[k] = max(best.get(k, 0.0), v)
    return [k for k, _ in sorted(best.items(), key=lambda kv: -kv[1])[:n]]


def timeline_png(rows: list[DayRow], shift_from_day: int | None, psi_fail: float) -> bytes:
    """Drift PSI of the top features, mean risk, production PR-AUC on matured labels; promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from churn.plotting.figures import figure_png

    x = [r.day for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for name in top_features(rows):
        axes[0].plot(x, [r.psi.get(name, np.nan) for r in rows], marker=".", label=name)
    axes[0].axhline(psi_fail, color="grey", linestyle=":", label=f"PSI fail {psi_fail}")
    axes[0].set_ylabel("drift PSI")
    axes[0].legend(fontsize=7, loc="upper left")
    axes[1].plot(x, [np.nan if r.mean_risk is None else r.mean_risk for r in rows], marker=".", color="tab:red")
    axes[1].set_ylabel("mean predicted risk")
    last = rows[-1].matured_pr_auc if rows else {}
    dates = {r.date: r.day for r in rows}
    matured = sorted((dates[d], v) for d, v in last.items() if d in dates)
    if matured:
        axes[2].plot([m[0] for m in matured], [m[1] for m in matured], marker="o", color="tab:green")
    axes[2].set_ylabel("production PR-AUC\n(scores of day t, labels of t)")
    axes[2].set_xlabel("day of the month (scores of that day)")
    for ax in axes:
        if shift_from_day:
            ax.axvline(shift_from_day, color="tab:orange", linestyle="--", linewidth=1)
        for r in rows:
            if r.retrain.startswith("promoted"):
                ax.axvline(r.day, color="tab:purple", linewidth=1.5, alpha=0.6)
    axes[0].set_title("a month of operation (orange: behaviour shift; purple: promotion)")
    png = figure_png(fig, dpi=110)
    plt.close(fig)
    return png


def month_frame(rows: list[DayRow]) -> pd.DataFrame:
    return pd.DataFrame([{k: v for k, v in r.to_dict().items() if k not in ("psi", "matured_pr_auc")} for r in rows])
