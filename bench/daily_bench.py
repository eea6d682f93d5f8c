"""One new day against a full rebuild of the same state (the daily cycle's point).

    ./bazelw run //bench:daily_bench [-- --users 100000 --root DIR]

Bootstraps a data root (generate, validate, update, training set, train, promote: not timed),
lets the synthetic world go on by one day into the inbox, then times
  daily:    ingest-inbox + update (incremental) + batch-score as of the new day
  baseline: a full rebuild of the same state (update from scratch: grid, features and labels
            of every day) + the same batch-score
in one run, on the same data, and checks that both give the same features and scores for
the new day. Goal: the new day under 10% of the rebuild.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import logging
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from churn.config.settings import load_config
from churn.daily.update import state_path
from churn.daily.world import next_days
from churn.invocation.workdir import enter_invocation_directory
from churn.pipeline import steps
from churn.pipeline.steps import EXIT_OK, StepResult, with_root
from churn.storage.daytables import day_file
from churn.storage.paths import DataPaths
from churn.storage.tables import read_parquet


def _ok(result: StepResult) -> StepResult:
    if result.exit_code != EXIT_OK:
        raise SystemExit(f"{result.name} failed (exit {result.exit_code}): {result.message}")
    return result


def _timed(runs: list[tuple[str, Callable[[], StepResult]]]) -> list[tuple[str, float, StepResult]]:
    out = []
    for name, run in runs:
        t0 = time.perf_counter()
        result = _ok(run())
        out.append((name, time.perf_counter() - t0, result))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--root", help="data root (default: a temporary directory, removed after)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="also print where the new day's time goes (cProfile, cumulative, top 30)")
    args = parser.parse_args()
    enter_invocation_directory()  # --root relative to where `bazel run` was typed
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="daily-bench-") as tmp:
        root = Path(args.root or tmp)
        base = load_config(None)
        settings = with_root(dataclasses.replace(base, generator=dataclasses.replace(base.generator, n_users=args.users)),
                             root)
        paths = DataPaths.from_root(root)  # unbound: the tables as published at each use
        t0 = time.perf_counter()
        for name in ("generate", "validate", "update", "training-set", "train", "promote"):
            _ok(dict(steps.bootstrap_steps(settings))[name]())
        print(f"bootstrapped {args.users:,} users x {settings.generator.days} days in {time.perf_counter() - t0:.1f}s")
        batch = next_days(settings.generator, paths, 1)
        day = batch.last_day
        print(f"new day {day}: {batch.events:,} events, {batch.new_users} new users")

        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        daily = _timed([("ingest-inbox", lambda: steps.step_ingest_inbox(settings)),
                        ("update (incremental)", lambda: steps.step_update(settings)),
                        ("batch-score", lambda: steps.step_batch_score(settings, as_of=day))])
        if profiler:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
        features_new = read_parquet(day_file(paths.features_file, day))
        scores_new = read_parquet(paths.predictions / day.isoformat() / "scores.parquet")

        state_path(paths).unlink()  # the same state, rebuilt from scratch
        rebuild = _timed([("update (full rebuild)", lambda: steps.step_update(settings)),
                          ("batch-score", lambda: steps.step_batch_score(settings, as_of=day))])
        pd.testing.assert_frame_equal(features_new, read_parquet(day_file(paths.features_file, day)))
        pd.testing.assert_frame_equal(scores_new, read_parquet(paths.predictions / day.isoformat() / "scores.parquet"))

        total_daily = sum(s for _, s, _ in daily)
        total_rebuild = sum(s for _, s, _ in rebuild)
        print(f"\none new day at {args.users:,} users (same features and scores for {day} both ways)\n")
        print(f"{'step':<24} {'rows':>12} {'seconds':>9}")
        for title, runs in (("new day (daily cycle)", daily), ("full rebuild (baseline)", rebuild)):
            print(f"-- {title}")
            for name, secs, result in runs:
                print(f"{name:<24} {result.rows:>12,} {secs:>9.2f}")
        print(f"\nnew day {total_daily:.2f}s vs rebuild {total_rebuild:.2f}s: "
              f"{100 * total_daily / total_rebuild:.1f}% of the rebuild (goal < 10%)")


if __name__ == "__main__":
    main()
