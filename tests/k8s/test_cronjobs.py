"""CronJob schedules are valid cron expressions, in UTC, and no two fire at the same time;
each CronJob has the run-control fields."""

from __future__ import annotations

import itertools

import pytest

from tests.k8s.k8s_stream import by_kind

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


def expand(field: str, low: int, high: int) -> set[int]:
    """Values of one numeric cron field (*, a, a-b, lists, /step); ValueError if invalid."""
    values: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = int(step_text) if slash else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first, last = (int(x) for x in base.split("-", 1))
        else:
            first = int(base)
            last = high if slash else first
        if step < 1 or not low <= first <= last <= high:
            raise ValueError(f"{part!r} out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


def parse(schedule: str) -> list[set[int]]:
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"{schedule!r}: expected 5 fields, got {len(fields)}")
    return [expand(f, low, high) for f, (_, low, high) in zip(fields, FIELDS)]


def times_of_day(schedule: str) -> set[tuple[int, int]]:
    minutes, hours, *_ = parse(schedule)
    return {(h, m) for h in hours for m in minutes}


def collisions(schedules: dict[str, str]) -> list[str]:
    """Pairs of schedules sharing an hour:minute (on any day: stricter than needed)."""
    return [f"{a} and {b} at {sorted(times_of_day(schedules[a]) & times_of_day(schedules[b]))}"
            for a, b in itertools.combinations(sorted(schedules), 2)
            if times_of_day(schedules[a]) & times_of_day(schedules[b])]


@pytest.fixture
def cronjobs(docs: list[dict]) -> dict[str, dict]:
    jobs = by_kind(docs, "CronJob")
    # the daily-simulator component (demos) adds churn-simulator
    assert set(jobs) - {"churn-simulator"} == {"churn-daily", "churn-drift-check", "churn-retrain"}
    return jobs


def test_schedules_are_valid_and_do_not_collide(cronjobs: dict[str, dict]) -> None:
    schedules = {name: cj["spec"]["schedule"] for name, cj in cronjobs.items()}
    for schedule in schedules.values():
        parse(schedule)
    assert collisions(schedules) == []


def test_weekly_retrain_and_daily_jobs(cronjobs: dict[str, dict]) -> None:
    def days(name: str) -> tuple[set[int], set[int]]:
        _, _, dom, month, dow = parse(cronjobs[name]["spec"]["schedule"])
        return dom, dow
    assert days("churn-daily") == (set(range(1, 32)), set(range(0, 8)))
    assert days("churn-drift-check") == (set(range(1, 32)), set(range(0, 8)))
    dom, dow = days("churn-retrain")
    assert dom == set(range(1, 32)) and len(dow) == 1


@pytest.mark.parametrize("schedules", [
    {"a": "15 2 * * *", "b": "15 2 * * 0"},
    {"a": "*/15 * * * *", "b": "30 3 * * 0"},
    {"a": "0-5 1 * * *", "b": "5 1,2 * * *"},
])
def test_collision_checker_finds_collisions(schedules: dict[str, str]) -> None:
    assert collisions(schedules)


@pytest.mark.parametrize("schedule", ["60 2 * * *", "15 24 * * *", "15 2 * *", "15 2 0 * *", "*/0 * * * *", "a b c d e"])
def test_invalid_schedules_are_rejected(schedule: str) -> None:
    with pytest.raises(ValueError):
        parse(schedule)


def test_run_control_fields(cronjobs: dict[str, dict]) -> None:
    for name, cj in cronjobs.items():
        spec, job = cj["spec"], cj["spec"]["jobTemplate"]["spec"]
        assert spec["timeZone"] == "Etc/UTC", name
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["startingDeadlineSeconds"] > 0, name
        assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1, name
        assert 0 <= job["backoffLimit"] <= 3, name
        assert job["activeDeadlineSeconds"] > 0, name
        assert job["template"]["spec"]["restartPolicy"] == "Never", name


def test_commands(cronjobs: dict[str, dict]) -> None:
    def args(name: str, part: str) -> list[list[str]]:
        return [c["args"] for c in cronjobs[name]["spec"]["jobTemplate"]["spec"]["template"]["spec"].get(part, [])]
    # one container runs the whole cycle (ingest -> update -> batch-score -> score-distribution), so that
    # "no new data" can skip the rest without rewriting anything
    assert args("churn-daily", "initContainers") == []
    (daily,) = args("churn-daily", "containers")
    assert daily[:1] == ["daily"] and daily[1:] in ([], ["--shard", "$(JOB_COMPLETION_INDEX)/4"])  # indexed-daily
    assert args("churn-drift-check", "containers") == [["drift-check"]]
    assert args("churn-retrain", "containers") == [["retrain"]]


def test_daily_cycle_runs_before_drift_and_a_rejected_batch_fails_the_job_without_retry(
        cronjobs: dict[str, dict]) -> None:
    (daily,), (drift,) = (sorted(times_of_day(cronjobs[n]["spec"]["schedule"])) for n in ("churn-daily", "churn-drift-check"))
    assert daily < drift  # drift checks the window the daily cycle has just brought up to date
    rules = cronjobs["churn-daily"]["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "daily", "operator": "In",
                                                  "values": [1]}} in rules


def test_drift_exit_code_2_fails_the_job_without_retry(cronjobs: dict[str, dict]) -> None:
    rules = cronjobs["churn-drift-check"]["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "drift-check", "operator": "In",
                                                  "values": [2]}} in rules


def test_simulator_component_feeds_the_inbox_before_the_daily_cycle(full_docs: list[dict]) -> None:
    jobs = by_kind(full_docs, "CronJob")
    pod = jobs["churn-simulator"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["containers"]] == [["generate", "--next-days", "1"]]
    (sim,), (daily,) = (sorted(times_of_day(jobs[n]["spec"]["schedule"])) for n in ("churn-simulator", "churn-daily"))
    assert sim < daily
