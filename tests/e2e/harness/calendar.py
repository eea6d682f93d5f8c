"""The data's calendar against the wall clock, for the alerts that compare the two.

ChurnScoresMissing compares the newest scored day with Prometheus's clock: the synthetic
world must therefore end on a day relative to today. The harness sets the generator's
calendar in the parsed ConfigMap (before anything is played), and makes a second ConfigMap
one day longer for the Jobs of "the next daily cycle" (a new name, so podman never reuses the
first one's content).
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path

import yaml

from harness import kube

DAY_S = 86400
CONFIG_KEY = "config.yaml"


def scores_deadline_s(rules_file: Path) -> int:
    """Seconds after midnight UTC by which yesterday's scores are due, read from the rule
    `time() - ... >= 2 days + deadline` (one source: the rules file)."""
    rules = yaml.safe_load(rules_file.read_text())
    (expr,) = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "ChurnScoresMissing"]
    match = re.search(r">=\s*(\d+)\s*$", expr.strip())
    assert match, f"ChurnScoresMissing: no '>= SECONDS' threshold in {expr!r}"
    return int(match.group(1)) - 2 * DAY_S


def due_day(now: dt.datetime, deadline_s: int) -> dt.date:
    """The newest as-of day whose scores are due at `now` (yesterday once past the deadline)."""
    return (now - dt.timedelta(seconds=deadline_s)).date() - dt.timedelta(days=1)


def day_start(day: dt.date) -> float:
    """Epoch seconds of the day's 00:00 UTC (how the metrics give days)."""
    return dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()


def churn_config(objs: list[kube.Obj]) -> kube.Obj:
    (config_map,) = [o for o in objs if o["kind"] == "ConfigMap"
                     and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "config"]
    return config_map


def _edit(config_map: kube.Obj, generator: dict) -> None:
    config = yaml.safe_load(config_map["data"][CONFIG_KEY]) or {}
    config.setdefault("generator", {}).update(generator)
    config_map["data"][CONFIG_KEY] = yaml.safe_dump(config, sort_keys=False)


def end_on(objs: list[kube.Obj], last_day: dt.date, days: int) -> None:
    """The churn ConfigMap's generator makes `days` days ending on `last_day`."""
    _edit(churn_config(objs), {"start_date": (last_day - dt.timedelta(days=days - 1)).isoformat(), "days": days})


def next_day_variant(objs: list[kube.Obj], workloads: list[kube.Obj], suffix: str, days: int) -> list[kube.Obj]:
    """Copies of `workloads` reading a new ConfigMap whose calendar is one day longer (appended to objs)."""
    original = churn_config(objs)
    variant = copy.deepcopy(original)
    variant["metadata"]["name"] = f"{original['metadata']['name']}-{suffix}"
    _edit(variant, {"days": days + 1})
    objs.append(variant)
    out = []
    for workload in workloads:
        copied = copy.deepcopy(workload)
        for volume in kube.pod_spec(copied).get("volumes") or []:
            if volume.get("configMap", {}).get("name") == original["metadata"]["name"]:
                volume["configMap"]["name"] = variant["metadata"]["name"]
        copied["metadata"]["name"] = f"{workload['metadata']['name']}-{suffix}"
        out.append(copied)
    return out
