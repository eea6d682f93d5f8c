"""End to end: the real `ml_jobs` CLI in subprocesses on a tiny config (300 users, 90 days)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churn.pipeline.testing import TINY_YAML
from churn.storage import generations

from cli_testing import MAIN, Cli


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("bootstrapped") / "root")
    for layout_dir in ("raw", "processed", "registry"):  # as the bootstrap Job's init container leaves it
        (cli.root / layout_dir).mkdir(parents=True)
    result = cli.ok("bootstrap")
    for step in ("generate", "validate", "update", "training-set", "train", "promote",
                 "batch-score", "score-distribution", "drift-check"):
        assert f"\n{step}" in "\n" + result.stdout, step
    cli.bootstrap_stdout = result.stdout  # type: ignore[attr-defined]
    return cli


@pytest.fixture()
def cli(bootstrapped: Cli, tmp_path: Path) -> Cli:
    """A private copy of the bootstrapped root."""
    root = tmp_path / "root"
    shutil.copytree(bootstrapped.root, root)
    return Cli(root)


def test_bootstrap_produces_every_artifact_and_refuses_a_non_empty_root(bootstrapped):
    root = bootstrapped.root
    assert "step" in bootstrapped.bootstrap_stdout and "seconds" in bootstrapped.bootstrap_stdout
    version = bootstrapped.production()
    assert (root / "registry" / "models" / version / "card.json").is_file()
    scored = list((root / "predictions").glob("*/scores.parquet"))
    assert len(scored) == 1
    scores = pd.read_parquet(scored[0])
    assert len(scores) > 100 and scores["risk"].notna().all() and scores["user_id"].is_unique
    assert (set(scores["model_version"]) == {version})
    assert list((root / "monitoring" / "drift").glob("*.html"))
    again = bootstrapped("bootstrap")  # the bootstrap Job retried after it had finished: nothing to do
    assert again.returncode == 0 and "already bootstrapped" in again.stdout, again.stdout + again.stderr


def test_bootstrap_refuses_a_root_holding_other_data(tmp_path):
    cli = Cli(tmp_path / "root")
    cli.ok("generate")
    again = cli("bootstrap")
    assert again.returncode == 1 and "not empty" in again.stderr


def test_a_bootstrap_killed_midway_is_finished_by_the_next_one(tmp_path):
    """The bootstrap Job's retry after a SIGKILL (an evicted pod) resumes instead of refusing."""
    import signal
    import time

    cli = Cli(tmp_path / "root")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, str(MAIN), "--config", str(cli.config), "bootstrap"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    record = cli.root / "bootstrap.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # killed inside the step after `validate` (update: grid, features, labels), with a
            # temp file open or not
            if record.is_file() and "validate" in json.loads(record.read_text() or "{}").get("done", []):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "bootstrap finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert json.loads(record.read_text())["status"] == "running"
    resumed = cli.ok("bootstrap")
    assert "generate: done before the interruption, skipped" in resumed.stdout, resumed.stdout
    assert json.loads(record.read_text())["status"] == "complete"
    assert (cli.root / "registry" / "aliases" / "production.json").is_file()
    assert not [p for p in cli.root.rglob(".tmp-*")], "a temp file of the killed run survived"


def test_drift_check_is_ok_on_the_seeded_data(cli):
    result = cli("drift-check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drift OK" in result.stdout


def test_shifted_data_makes_drift_check_fail_with_exit_2(cli):
    cli.ok("generate", "--simulate-shift")
    for step in ("validate", "prepare", "features"):
        cli.ok(step)
    result = cli("drift-check")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "drift FAIL" in result.stdout
    report = json.loads(next((cli.root / "monitoring" / "drift").glob("*.json")).read_text())
    failed = [f["name"] for f in report["features"] if f["status"] == "FAIL"]
    assert failed and report["baseline_n"] > 0 and report["recent_n"] > 0


def test_relative_config_and_data_root_resolve_where_the_user_ran_bazel_run(tmp_path):
    """`bazel run` starts the binary in its runfiles; BUILD_WORKING_DIRECTORY names the user's
    directory: a relative --config and the relative data root must land there."""
    caller, runfiles = tmp_path / "caller", tmp_path / "runfiles"
    caller.mkdir()
    runfiles.mkdir()
    (caller / "tiny.yaml").write_text(TINY_YAML.format(root="var", users=50, days=90))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "BUILD_WORKING_DIRECTORY": str(caller)}
    env.pop("CHURN_DATA_ROOT", None)
    env.pop("CHURN_MLOPS_CONFIG", None)
    result = subprocess.run([sys.executable, str(MAIN.absolute()), "--config", "tiny.yaml", "generate"],
                            cwd=runfiles, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert any((caller / "var" / "raw").iterdir())
    assert list(runfiles.iterdir()) == []


def test_corrupted_raw_fails_validation_and_nothing_downstream_runs(tmp_path):
    cli = Cli(tmp_path / "root")
    cli.ok("generate")
    events_path = sorted((cli.root / "raw" / "events").glob("date=*/part-*.parquet"))[10]
    events = pd.read_parquet(events_path)
    events.loc[events.index[:5], "quiz_score"] = 150.0
    events.to_parquet(events_path, index=False)
    # changed behind the raw manifest's back: no reader takes these bytes (one line naming the file)
    result = cli("validate")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{events_path}: changed since its raw batch was committed" in result.stderr
    # the same rows as a batch would have committed them (the manifest records their digest)
    manifest = cli.root / "raw" / "manifest.json"
    doc = json.loads(manifest.read_text())
    rel = events_path.relative_to(cli.root / "raw").as_posix()
    digest = hashlib.sha256(events_path.read_bytes()).hexdigest()
    doc["parts"] = [{**p, "sha256": digest} if p["path"] == rel else p for p in doc["parts"]]
    manifest.write_text(json.dumps(doc))
    result = cli("validate")
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "quiz" in result.stdout
    prepare = cli("prepare")
    assert prepare.returncode == 1 and "ml_jobs validate" in prepare.stderr
    assert not (cli.root / "processed" / "user_days.parquet").exists() and not (cli.root / "tables").exists()
    assert not list(cli.root.glob("features/**/*.parquet"))   # nothing downstream was written


def test_missing_inputs_name_the_path_and_the_producing_command(tmp_path):
    cli = Cli(tmp_path / "empty")
    result = cli("features")
    assert result.returncode == 1
    assert "user_days.parquet" in result.stderr and "ml_jobs prepare" in result.stderr
    result = cli("batch-score")
    assert result.returncode == 1 and "features.parquet" in result.stderr


def test_bad_arguments_are_argparse_errors(cli):
    for args in (("batch-score", "--shard", "3/2"), ("batch-score", "--as-of", "yesterday"), ("merge-shards", "0"),
                 ("merge-shards",), ("nope",)):
        result = cli(*args)
        assert result.returncode == 2 and "usage:" in result.stderr, args
    forced = cli("promote", "--force")
    assert forced.returncode == 1 and "--reason" in forced.stderr


def test_retrain_promotes_or_refuses_with_recorded_reasons(cli):
    before = len(cli.history())
    production_before = cli.production()
    result = cli.ok("retrain")
    entry = cli.history()[-1]
    assert len(cli.history()) == before + 1
    assert entry["reason"] == "scheduled retrain"
    # the printed verdict, the history and the alias tell the same story, whichever it is
    promoted = entry["action"] == "promote"
    assert entry["action"] in ("promote", "refused")
    verdict = next(line for line in result.stdout.splitlines() if "PROMOTED" in line)
    assert verdict.startswith("PROMOTED " if promoted else "NOT PROMOTED "), verdict
    assert (cli.production() != production_before) == promoted
    assert entry["metrics"]["metric"] == "pr_auc"
    figures = entry["metrics"]
    assert figures["candidate"] is not None and figures["production"] is not None
    # and the story is the gate's rule applied to the recorded figures
    assert promoted == (figures["candidate"] > figures["production"] + figures["min_improvement"]), figures


def test_forced_promotion_then_rollback(cli):
    first = cli.production()
    run = json.loads((cli.root / "registry" / "last_training_run.json").read_text())
    other = next(v for v in run["versions"] if v != first)
    cli.ok("promote", "--version", other, "--force", "--reason", "manual test")
    assert cli.production() == other
    cli.ok("rollback")
    assert cli.production() == first
    cli.ok("rollback", "--to", other)
    assert cli.production() == other
    assert [h["action"] for h in cli.history()][-3:] == ["promote", "rollback", "rollback"]
    bad = cli("rollback", "--to", "20990101T000000Z-00000000")
    assert bad.returncode == 1 and "not found" in bad.stderr


def test_shards_merge_into_exactly_the_full_scoring(cli):
    cli.ok("batch-score")  # the unsharded reference, in this root (its summary names these paths)
    full_dir = next((cli.root / "predictions").iterdir())
    full = pd.read_parquet(full_dir / "scores.parquet")
    full_top = pd.read_csv(full_dir / "top_k.csv")
    full_summary = json.loads((full_dir / "summary.json").read_text())
    for i in range(3):
        cli.ok("batch-score", "--shard", f"{i}/3")
    parts = [pd.read_parquet(p) for p in sorted(full_dir.glob("scores.shard-*.parquet"))]
    assert len(parts) == 3 and all(len(p) for p in parts)
    union = pd.concat(parts, ignore_index=True)
    assert union["user_id"].is_unique
    merged = full.merge(union, on="user_id", suffixes=("_full", "_shard"), validate="one_to_one")
    assert len(merged) == len(full) == len(union)
    assert (merged["risk_full"] == merged["risk_shard"]).all()
    assert len(list(full_dir.glob("top_k.shard-*.csv"))) == 3
    assert any((p["rank"] != merged.set_index("user_id").loc[p["user_id"], "rank_full"].to_numpy()).any()
               for p in parts)  # shard ranks are local: the merge has something to do

    cli.ok("merge-shards", "3")
    pd.testing.assert_frame_equal(pd.read_parquet(full_dir / "scores.parquet"), full)  # users, risks, ranks
    pd.testing.assert_frame_equal(pd.read_csv(full_dir / "top_k.csv"), full_top)
    summary = json.loads((full_dir / "summary.json").read_text())
    assert summary.pop("merged_shards") == 3
    assert {k: v for k, v in summary.items() if k != "seconds"} == \
        {k: v for k, v in full_summary.items() if k != "seconds"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_merge_refuses_missing_or_mismatched_shards_and_writes_nothing(cli):
    folder = next((cli.root / "predictions").iterdir())
    for i in range(3):
        cli.ok("batch-score", "--shard", f"{i}/3")
    (folder / "scores.shard-001-of-003.parquet").unlink()
    (folder / "summary.shard-002-of-003.json").unlink()
    before = _snapshot(folder)
    result = cli("merge-shards", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "scores.shard-001-of-003.parquet" in result.stderr and "summary.shard-002-of-003.json" in result.stderr
    assert "summary.shard-001-of-003.json" not in result.stderr and "shard-000" not in result.stderr
    assert _snapshot(folder) == before

    cli.ok("batch-score", "--shard", "1/3")
    cli.ok("batch-score", "--shard", "2/3")
    summary_path = folder / "summary.shard-002-of-003.json"
    other = json.dumps({**json.loads(summary_path.read_text()), "model_version": "other"})
    summary_path.write_text(other)  # rewritten in place: the merge's verified read refuses it
    result = cli("merge-shards", "3")
    assert result.returncode == 1 and "changed since it was published" in result.stderr, result.stderr
    with generations.publish(cli.root, f"predictions/{folder.name}", carry=True) as out:
        (out / summary_path.name).write_text(other)  # published: the run check refuses it
    before = _snapshot(folder)
    result = cli("merge-shards", "3")
    assert result.returncode == 1 and "shard 2/3" in result.stderr and "'other'" in result.stderr, result.stderr
    assert _snapshot(folder) == before


def test_schema_prints_the_contract_as_tables_and_as_a_data_package(tmp_path):
    cli = Cli(tmp_path / "root")
    text = cli.ok("schema").stdout
    assert "| `event_id` | integer | required |" in text and "| `country` | string | optional |" in text
    package = json.loads(cli.ok("schema", "--json").stdout)
    assert package["profile"] == "tabular-data-package"
    events = next(r for r in package["resources"] if r["name"] == "events")
    assert events["schema"]["primaryKey"] == ["event_id"]
    assert [f["name"] for f in events["schema"]["fields"]][:3] == ["event_id", "user_id", "event_time"]


def test_ingest_errors_are_one_clear_line_and_change_nothing(tmp_path):
    cli = Cli(tmp_path / "root")
    missing = cli("validate")
    assert missing.returncode == 1 and "ml_jobs ingest" in missing.stderr and "ml_jobs generate" in missing.stderr
    bad = tmp_path / "events.csv"
    bad.write_text("event_id;user_id;event_time;event_type\n1;1;2025-01-01T00:00:00;login\n")
    result = cli("ingest", "--events", str(bad))
    assert result.returncode == 1 and str(bad) in result.stderr and "delimited" in result.stderr
    assert "Traceback" not in result.stderr
    users = tmp_path / "users.csv"
    users.write_text("user_id,signup_date,plan,is_paid\n1,2025-01-01,free,0\n2,someday,paid,1\n")
    result = cli("ingest", "--users", str(users))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "users.signup_date.parses_as_date" in result.stdout and "someday" in result.stdout
    assert "Traceback" not in result.stderr
    assert not (cli.root / "raw" / "manifest.json").exists()
    assert json.loads((cli.root / "raw" / "ingest_report.json").read_text())["ok"] is False


def test_a_bug_prints_its_traceback_and_exits_70(cli):
    """Unvalidated input that breaks numpy is a bug to fix, not a one-line user error."""
    training_set = cli.root / "labels" / "training_set.parquet"
    frame = pd.read_parquet(training_set)
    frame["churn_label"] = frame["churn_label"].map({0: "no", 1: "yes"})
    frame.to_parquet(training_set, index=False)
    result = cli("train")
    assert result.returncode == 70, (result.returncode, result.stderr[-2000:])
    assert "Traceback (most recent call last)" in result.stderr and "unexpected error" in result.stderr


def test_expected_errors_are_one_line_and_verbose_adds_the_traceback(tmp_path):
    cli = Cli(tmp_path / "empty")
    quiet = cli("features")
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert "ml_jobs features: error:" in quiet.stderr
    verbose = cli("-v", "features")
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr
    assert "DEBUG" in verbose.stderr or "ml_jobs features: error:" in verbose.stderr


def _rewrite_day_file(file: Path, same_size: bool) -> None:
    """New bytes into a published day file's own inode (what a tool writing over the path does):
    the same size with other bytes, or other rows (another size)."""
    if same_size:
        with open(file, "r+b") as fh:
            fh.seek(100)
            block = fh.read(8)
            fh.seek(100)
            fh.write(bytes(b ^ 0xFF for b in block))
        return
    frame = pd.read_parquet(file)
    frame.head(len(frame) // 2).to_parquet(file, index=False)


def test_a_day_file_rewritten_after_its_publish_stops_its_readers_with_one_line(bootstrapped, tmp_path):
    """The tables' day files are read bound to their MANIFEST (`churn.storage.verified`): the
    newest features day rewritten in place (same size) stops batch-score and drift-check, a
    grid day (another size) the update's look-back, the first features day (another size)
    training-set (alone and in `labels`); each with one line naming the file and both digests,
    exit 1. Broken once (the digest comparison removed): every step succeeded on the
    rewritten bytes."""
    cli = bootstrapped.copy(tmp_path / "root")  # symlinks kept: the generations stay bound
    tables = (cli.root / "tables").resolve()
    features = sorted((tables / "features.parquet").glob("*.parquet"))
    _rewrite_day_file(features[-1], same_size=True)
    _rewrite_day_file(features[0], same_size=False)

    def refused(step: str, file: Path | str) -> None:
        result = cli(step)
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert result.returncode == 1, (step, result.stdout, result.stderr[-2000:])
        assert len(errors) == 1 and "Traceback" not in result.stderr, (step, result.stderr[-2000:])
        assert f"{file}: changed since it was published (sha256 " in errors[0], (step, errors)
        assert "MANIFEST records " in errors[0], (step, errors)

    refused("batch-score", features[-1])
    refused("drift-check", features[-1])
    refused("training-set", features[0])
    refused("labels", f"features.parquet/{features[0].name}")  # its training set, from the labels' new generation
    cli.ok("generate", "--next-days", "1")
    cli.ok("ingest-inbox")
    tables = (cli.root / "tables").resolve()
    grid = sorted((tables / "user_days.parquet").glob("*.parquet"))[-1]  # the day before the new one
    _rewrite_day_file(grid, same_size=False)
    refused("update", grid)
    assert (cli.root / "tables").resolve() == tables  # the update published nothing
