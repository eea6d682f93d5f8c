"""The daily cycle through the real CLI, as the churn-daily CronJob runs it (`ml_jobs daily`).

A tiny bootstrapped data root; then the world goes on by a day (`generate --next-days 1`) and
the cycle runs: a new day is ingested, updated, scored and summarised, each output naming
that day; a second run without new data says so, exits 0 and rewrites nothing; a batch that
fails validation makes the Job exit 1 and leaves yesterday's state as it was; the same batch
delivered twice adds nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cli_testing import Cli

# What a cycle may rewrite even when it changes no data: nothing. The ingest report is the
# last ingest's receipt (it says what was rejected), so it is the one file a rejected batch writes.
RECEIPTS = {"ingest_report.json"}


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("daily") / "root")
    cli.ok("bootstrap")
    return cli


@pytest.fixture()
def cli(bootstrapped: Cli, tmp_path: Path) -> Cli:
    return bootstrapped.copy(tmp_path / "root")


def snapshot(root: Path, skip: set[str] = frozenset()) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under the data root outside the inbox and the lock files
    (a writer records its pid in the lock it takes, even when it then writes nothing)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file() and p.name not in skip
            and not {"inbox", "locks"} & set(p.relative_to(root).parts)}


def newest_day(cli: Cli) -> str:
    return json.loads((cli.root / "tables" / "update_state.json").read_text())["newest_day"]


def test_a_new_day_flows_through_and_every_output_names_it(cli: Cli) -> None:
    before = newest_day(cli)
    out = cli.ok("generate", "--next-days", "1").stdout
    assert "inbox" in out
    result = cli.ok("daily")
    day = newest_day(cli)
    assert day > before
    for step in ("ingest", "update", "batch-score", "score-distribution"):
        assert f"\n{step}" in "\n" + result.stdout, (step, result.stdout)
    summary = json.loads((cli.root / "predictions" / day / "summary.json").read_text())
    assert summary["as_of"] == day
    scores = pd.read_parquet(cli.root / "predictions" / day / "scores.parquet")
    assert len(scores) > 100 and (scores["as_of_date"].dt.date.astype(str) == day).all()
    distribution = json.loads((cli.root / "monitoring" / "score_distribution" / f"{day}.json").read_text())
    assert distribution["as_of"] == day
    assert (cli.root / "inbox" / "done").is_dir() and not [p for p in (cli.root / "inbox").iterdir()
                                                           if p.name not in ("done", "rejected")]


def test_a_cycle_without_new_data_says_so_exits_0_and_rewrites_nothing(cli: Cli) -> None:
    cli.ok("generate", "--next-days", "1")
    cli.ok("daily")
    before = snapshot(cli.root)
    result = cli("daily")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no new data" in result.stdout, result.stdout
    assert "batch-score" not in result.stdout
    assert snapshot(cli.root) == before


def test_the_same_batch_twice_adds_nothing(cli: Cli) -> None:
    cli.ok("generate", "--next-days", "1")
    cli.ok("daily")
    [done] = list((cli.root / "inbox" / "done").iterdir())
    shutil.copytree(done, cli.root / "inbox" / f"{done.name}-redelivered")
    before = snapshot(cli.root, RECEIPTS)
    result = cli.ok("daily")
    assert "0 new events" in result.stdout and "no new data" in result.stdout, result.stdout
    assert snapshot(cli.root, RECEIPTS) == before


def test_a_rejected_batch_exits_1_and_leaves_yesterday_untouched(cli: Cli) -> None:
    cli.ok("generate", "--next-days", "1")
    [batch] = [p for p in (cli.root / "inbox").iterdir() if p.name not in ("done", "rejected")]
    events = pd.read_parquet(batch / "events.parquet")
    events.loc[events.index[:3], "user_id"] = 10**12  # users nobody knows
    events.to_parquet(batch / "events.parquet", index=False)
    before = snapshot(cli.root, RECEIPTS)
    result = cli("daily")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "REJECTED" in result.stdout and "user_id" in result.stdout, result.stdout
    assert "update" not in result.stdout.split("REJECTED", 1)[1].split("\n", 1)[0]
    assert snapshot(cli.root, RECEIPTS) == before
    assert (cli.root / "inbox" / "rejected" / batch.name).is_dir()
    assert (cli.root / "inbox" / "rejected" / f"{batch.name}.report.json").is_file()


def test_the_daily_update_as_indexed_job_pods_then_merge_equals_one_update(cli: Cli, tmp_path: Path) -> None:
    """`update --shard I/N` in each pod, then `merge-update N`: the day files of one update."""
    cli.ok("generate", "--next-days", "1")
    cli.ok("ingest-inbox")
    one = cli.copy(tmp_path / "one")
    one.ok("update")
    pods = [cli.ok("update", "--shard", f"{i}/3") for i in (2, 0)]  # any order
    assert all("merge-update 3" in p.stdout for p in pods), pods[0].stdout
    missing = cli("merge-update", "3")
    assert missing.returncode == 1 and "shard 1/3 has not completed (run `ml_jobs update --shard 1/3`)" in missing.stderr
    cli.ok("update", "--shard", "1/3")
    merged = cli.ok("merge-update", "3")
    assert "merged 3 shards" in merged.stdout
    assert newest_day(cli) == newest_day(one)
    for area in ("tables/user_days.parquet", "tables/features.parquet", "tables/labels.parquet"):
        files = sorted(p.name for p in (one.root / area).iterdir())
        assert files == sorted(p.name for p in (cli.root / area).iterdir()), area
        for name in files:
            pd.testing.assert_frame_equal(pd.read_parquet(cli.root / area / name), pd.read_parquet(one.root / area / name),
                                          obj=f"{area}/{name}")
    assert not (cli.root / "shards" / "update").exists()
    assert "no new data" in cli.ok("update", "--shard", "0/3").stdout
