"""`run_month` (the engine of `//:simulate`): a short month of real daily cycles on a small root.

The scenario's own config (config/month.yaml: 7-day horizon, weekly retrain) at 300 users and a
60-day seed, 9 daily cycles with a behaviour shift from day 3: every day is scored, the retrain
runs on day 7 only, the production column is the registry's alias, and the PR-AUC of exactly
the scored days whose labels have matured is reported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest

from churn.config.settings import Settings, load_config
from churn.daily.month import RETRAIN_EVERY_DAYS, DayRow, month_frame, run_month, table, timeline_png, top_features
from churn.errors import DataError
from churn.pipeline import steps

DAYS = 9
SHIFT_FROM = 3


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> tuple[Settings, list[DayRow], list[DayRow]]:
    base = load_config(os.environ["MONTH_CONFIG"])
    settings = steps.with_root(base, tmp_path_factory.mktemp("root"))
    settings = dataclasses.replace(settings, generator=dataclasses.replace(settings.generator, n_users=300, days=60))
    seen: list[DayRow] = []
    rows = run_month(settings, DAYS, SHIFT_FROM, seen.append)
    return settings, rows, seen


def test_one_row_per_day_on_consecutive_dates(month):
    settings, rows, seen = month
    assert seen == rows  # progress is reported as each day ends, for every day
    g = settings.generator
    first = dt.date.fromisoformat(g.start_date) + dt.timedelta(days=g.days)
    assert [r.day for r in rows] == list(range(1, DAYS + 1))
    assert [r.date for r in rows] == [str(first + dt.timedelta(days=i)) for i in range(DAYS)]
    assert all(r.users_scored > 0 for r in rows)
    assert all(r.drift in ("OK", "WARN", "FAIL") for r in rows)


def test_the_retrain_runs_weekly_and_production_is_the_alias(month):
    settings, rows, _ = month
    retrained = [r.day for r in rows if r.retrain]
    assert retrained == [RETRAIN_EVERY_DAYS]
    assert rows[RETRAIN_EVERY_DAYS - 1].retrain.split()[0] in ("promoted", "kept")
    registry = steps.registry_for(steps.data_paths(settings))
    assert rows[-1].production == str(registry.get_alias())


def test_pr_auc_only_for_scored_days_whose_labels_matured(month):
    settings, rows, _ = month
    window = settings.churn.window_days
    newest = dt.date.fromisoformat(rows[-1].date)
    matured = rows[-1].matured_pr_auc
    # the seed's last day and the month's first days were scored; their labels need t + W <= newest
    expected = {str(newest - dt.timedelta(days=window + k)) for k in range(DAYS - window + 1)}
    assert set(matured) == expected, (sorted(matured), sorted(expected))
    assert all(0.0 <= v <= 1.0 for v in matured.values())
    assert rows[0].matured_pr_auc == {}  # nothing has matured on the first day


def test_table_frame_and_timeline(month):
    settings, rows, _ = month
    lines = table(rows).splitlines()
    assert len(lines) >= DAYS + 1 and "drift" in lines[0]
    frame = month_frame(rows)
    assert list(frame["day"]) == list(range(1, DAYS + 1)) and "psi" not in frame.columns
    names = top_features(rows)
    assert 0 < len(names) <= 3 and all(any(n in r.psi for r in rows) for n in names)
    png = timeline_png(rows, SHIFT_FROM, settings.monitoring.psi_fail)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_a_root_with_data_but_no_model_is_refused(tmp_path: Path):
    settings = steps.with_root(load_config(os.environ["MONTH_CONFIG"]), tmp_path)
    (tmp_path / "stray.txt").write_text("not a churn data root")
    with pytest.raises(DataError, match="data root is not empty") as err:
        run_month(settings, 1, None)
    assert str(tmp_path) in str(err.value)  # names the root, and nothing was written into it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stray.txt"]
