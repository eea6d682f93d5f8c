"""The daily cycle as the pods of an Indexed Job (`ml_jobs daily --shard I/N`, all at once).

Three real processes share one data root as three pods share the PVC. They must produce what
one `ml_jobs daily` produces (the scores, the top-K, the score distribution, the day files),
merge each result exactly once, and say "no new data" the next time; a pod that never starts
is named by the others, and the Job's retry completes the cycle.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cli_testing import Cli

N = 3
AREAS = ("tables/user_days.parquet", "tables/features.parquet", "tables/labels.parquet")  # one generation


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("indexed") / "root")
    cli.ok("bootstrap")
    return cli


@pytest.fixture()
def cli(bootstrapped: Cli, tmp_path: Path) -> Cli:
    """A copy of the bootstrapped root with the next day waiting in its inbox."""
    cli = bootstrapped.copy(tmp_path / "root")
    cli.ok("generate", "--next-days", "1")
    return cli


def pods(cli: Cli, indexes: range | list[int] = range(N)) -> list[subprocess.CompletedProcess[str]]:
    """`daily --shard I/N` for each index, all started before any is waited for."""
    running = [(i, cli.start("daily", "--shard", f"{i}/{N}")) for i in indexes]
    done = []
    for i, proc in running:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def newest_day(root: Path) -> str:
    return json.loads((root / "tables" / "update_state.json").read_text())["newest_day"]


def assert_same_cycle(sharded: Path, single: Path) -> None:
    day = newest_day(single)
    assert newest_day(sharded) == day
    for area in AREAS:
        names = sorted(p.name for p in (single / area).iterdir())
        assert names == sorted(p.name for p in (sharded / area).iterdir()), area
        for name in names:
            pd.testing.assert_frame_equal(pd.read_parquet(sharded / area / name), pd.read_parquet(single / area / name),
                                          obj=f"{area}/{name}")
    out = f"predictions/{day}"
    pd.testing.assert_frame_equal(pd.read_parquet(sharded / out / "scores.parquet"),
                                  pd.read_parquet(single / out / "scores.parquet"))
    assert (sharded / out / "top_k.csv").read_text() == (single / out / "top_k.csv").read_text()
    dist = f"monitoring/score_distribution/{day}.json"
    keep = ("as_of", "rows", "mean", "share_above_threshold", "model_version")
    a, b = (json.loads((r / dist).read_text()) for r in (sharded, single))
    assert {k: a.get(k) for k in keep} == {k: b.get(k) for k in keep}


def test_three_pods_at_once_equal_one_daily_run(cli: Cli, tmp_path: Path) -> None:
    single = cli.copy(tmp_path / "single")
    single.ok("daily")
    runs = pods(cli)
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    text = [r.stdout for r in runs]
    assert sum("ingested" in t for t in text) == 1  # the first pod to take the lock ingests
    assert sum("merged 3 shards" in t for t in text) == 1  # the update is merged once
    assert sum("3 shards merged" in t for t in text) == 1  # the scores too
    assert sum("merged by another pod" in t for t in text) == N - 1
    assert_same_cycle(cli.root, single.root)
    assert not (cli.root / "shards" / "update").exists()  # the merged shards are gone

    again = pods(cli)
    assert all(r.returncode == 0 and "no new data" in r.stdout for r in again), [r.stdout for r in again]


def test_a_pod_that_never_starts_is_named_and_the_retried_job_completes(cli: Cli, tmp_path: Path) -> None:
    single = cli.copy(tmp_path / "single")
    single.ok("daily")
    usual = cli.config.read_text()
    cli.config.write_text(usual + "sharding: {wait_seconds: 5}\n")
    partial = pods(cli, [0, 2])
    for run in partial:
        assert run.returncode == 1, run.stdout + run.stderr
        assert "update shard 1/3" in run.stderr and "sharding.wait_seconds" in run.stderr, run.stderr
    assert newest_day(cli.root) < newest_day(single.root)  # nothing merged without shard 1
    cli.config.write_text(usual)
    retried = pods(cli)  # the Job's backoff: the pods run again, all of them this time
    assert all(r.returncode == 0 for r in retried), [r.stdout + r.stderr for r in retried]
    assert_same_cycle(cli.root, single.root)
