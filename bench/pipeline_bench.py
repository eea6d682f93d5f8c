"""Pipeline benchmark: the whole seed and one daily update against the number of users.

    bazel run //bench:pipeline_bench -- --sizes 2000,10000,100000,1000000 --png docs/images/pipeline-scale.png

prints, per size, the whole seed (every `ml_jobs bootstrap` step), train, one daily cycle and the
peak RSS of the child process that ran it (summed over its process tree: the update's
worker processes, `bench.rss.tree_rss`), sharded (`sharding.shard_users`) beside the unsharded
code up to `--baseline-max` users (`bench/pipeline_scale.py`), and draws seconds and peak
memory against users.

`--per-step --users N`: the older table of one size, step by step. Prints one table: step, rows, seconds, rows/s, peak RSS during the step, and a baseline
measured in the same run: re-implementations of the reference project's per-user Python
loops (generator, prepare) and its groupby-apply rolling features. The baselines are run on
a subset of users (`--baseline-users`, default 200) and scaled linearly to the full user
count (they are per-user loops, so time is linear in users); the table says so.

Each step is exactly what `ml_jobs bootstrap` runs (`churn.pipeline.steps.bootstrap_steps`: Parquet
in/out, atomic writes) on a temporary data root.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench import pipeline_scale
from bench.rss import PeakRss, cpu_seconds
from churn.config.settings import GeneratorSettings, Settings, load_config
from churn.data.generate import generate
from churn.invocation.workdir import enter_invocation_directory
from churn.pipeline.steps import EXIT_DRIFT, EXIT_OK, StepResult, bootstrap_steps, with_root


@dataclass
class Step:
    """A timed step: `run()` returns its row count; `baseline()` returns seconds for the FULL size."""

    name: str
    run: Callable[[], int]
    baseline: Callable[[], float] | None = None
    baseline_note: str = ""


@dataclass
class Result:
    name: str
    rows: int
    seconds: float
    cpu_s: float  # user + sys CPU of the step (getrusage): its own work, without waiting for a core
    peak_rss_mb: float
    baseline_s: float | None
    note: str


# ---------------------------------------------------------------- reference re-implementations


def ref_generate(cfg: GeneratorSettings) -> pd.DataFrame:
    """The reference generator's structure: a Python loop over users, days and sessions."""
    rng = np.random.default_rng(cfg.seed)
    start = dt.datetime.fromisoformat(cfg.start_date)
    rows: list[dict[str, object]] = []
    for uid in range(1, cfg.n_users + 1):
        e = float(rng.beta(2.0, 2.5))
        paid = rng.random() < cfg.paid_share
        p = min(0.95, cfg.churn_base * (0.75 if paid else 1.0) * (0.4 + 1.4 * (1 - e) ** 1.6))
        churn_day = int(rng.integers(cfg.days // 4, cfg.days)) if rng.random() < p else cfg.days
        for d in range(min(churn_day + 1, cfg.days)):
            day = start + dt.timedelta(days=d)
            if rng.random() >= 0.15 + 0.8 * e:
                continue
            for _ in range(int(rng.integers(1, 4))):
                t = day + dt.timedelta(minutes=int(rng.integers(0, 1440)))
                rows.append({"user_id": uid, "event_time": t.isoformat(), "event_type": "login"})
                course = rng.choice(list(cfg.courses))
                if rng.random() < 0.5 + 0.4 * e:
                    rows.append({"user_id": uid, "event_time": t.isoformat(), "event_type": "video_watch",
                                 "course_id": course, "watch_minutes": float(np.clip(rng.normal(20 + 40 * e, 10), 2, 180))})
                if rng.random() < 0.25 + 0.35 * e:
                    rows.append({"user_id": uid, "event_time": t.isoformat(), "event_type": "quiz_attempt",
                                 "course_id": course, "quiz_score": float(np.clip(rng.normal(50 + 40 * e, 15), 0, 100))})
                if rng.random() < 0.05:
                    rows.append({"user_id": uid, "event_time": t.isoformat(), "event_type": "course_enroll",
                                 "course_id": course})
            if paid and day.day <= 3:
                kind = "payment_success" if rng.random() < 0.93 else "payment_failed"
                rows.append({"user_id": uid, "event_time": day.isoformat(), "event_type": kind,
                             "amount": float(np.clip(rng.normal(499, 80), 199, 999))})
            if rng.random() < 0.005:
                rows.append({"user_id": uid, "event_time": day.isoformat(), "event_type": "support_ticket"})
    events = pd.DataFrame(rows).sort_values(["user_id", "event_time"]).reset_index(drop=True)
    events.insert(0, "event_id", np.arange(1, len(events) + 1))
    return events


def ref_prepare(users: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """The reference prepare: a Python loop over (user, day) groups building one dict each."""
    e = events.copy()
    e["event_type"] = e["event_type"].astype(object)  # as pandas 2 read it from CSV (faster than pandas 3 str)
    e["as_of_date"] = pd.to_datetime(e["event_time"]).dt.date
    days = pd.date_range(e["as_of_date"].min(), e["as_of_date"].max(), freq="D")
    grid = pd.MultiIndex.from_product([users["user_id"].tolist(), days], names=["user_id", "as_of_date"]).to_frame(index=False)
    grid["as_of_date"] = grid["as_of_date"].dt.date

    def count(df: pd.DataFrame, kind: str) -> int:
        return int((df["event_type"] == kind).sum())

    rows = []
    for (uid, day), df in e.groupby(["user_id", "as_of_date"]):
        quiz = df["event_type"] == "quiz_attempt"
        rows.append({
            "user_id": uid, "as_of_date": day,
            "logins_count": count(df, "login"), "enroll_count": count(df, "course_enroll"),
            "watch_minutes_sum": float(df.loc[df["event_type"] == "video_watch", "watch_minutes"].sum()),
            "quiz_attempts_count": count(df, "quiz_attempt"),
            "quiz_avg_score": float(df.loc[quiz, "quiz_score"].mean()) if quiz.any() else np.nan,
            "payment_success_count": count(df, "payment_success"), "payment_failed_count": count(df, "payment_failed"),
            "support_ticket_count": count(df, "support_ticket"), "total_events": int(len(df)),
        })
    merged = grid.merge(pd.DataFrame(rows), on=["user_id", "as_of_date"], how="left").fillna(0)
    merged["is_active_day"] = (merged["total_events"] > 0).astype(int)
    return merged


def ref_features(daily: pd.DataFrame, windows: tuple[int, ...]) -> pd.DataFrame:
    """The reference features: groupby(user).apply(rolling) once per column and window."""
    x = daily.sort_values(["user_id", "as_of_date"]).reset_index(drop=True)
    cols = ["is_active_day", "total_events", "logins_count", "enroll_count", "watch_minutes_sum",
            "quiz_attempts_count", "payment_success_count", "payment_failed_count", "support_ticket_count"]
    for w in windows:
        for c in cols:
            x[f"{c}_{w}d"] = x.groupby("user_id", group_keys=False)[c].apply(
                lambda s, w=w: s.rolling(window=w, min_periods=1).sum()).astype(float)
        x[f"quiz_avg_{w}d"] = x.groupby("user_id", group_keys=False)["quiz_avg_score"].apply(
            lambda s, w=w: s.rolling(window=w, min_periods=1).mean())
    return x


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- steps


def build_steps(settings: Settings, baseline_users: int) -> list[Step]:
    """The bootstrap's steps, with the reference-style baselines where the reference had a loop."""
    n = settings.generator.n_users
    sub_cfg = dataclasses.replace(settings.generator, n_users=min(baseline_users, n))
    scale = n / sub_cfg.n_users
    note = f"ref loop on {sub_cfg.n_users} users x{scale:g}" if scale != 1 else "ref loop, same size"
    cache: dict[str, pd.DataFrame] = {}

    def sub_raw() -> tuple[pd.DataFrame, pd.DataFrame]:
        if "users" not in cache:
            cache["users"], cache["events"] = generate(sub_cfg)
        return cache["users"], cache["events"]

    def base_prepare() -> float:
        users, events = sub_raw()
        secs = _timed(lambda: cache.__setitem__("daily", ref_prepare(users, events)))
        return secs * scale

    def base_features() -> float:
        if "daily" not in cache:
            base_prepare()
        return _timed(lambda: ref_features(cache["daily"], settings.features.windows_days)) * scale

    baselines = {
        "generate": (lambda: _timed(lambda: ref_generate(sub_cfg)) * scale, note),
        # the seed's first `update` builds the grid and the features (and the labels)
        "update": (lambda: base_prepare() + base_features(),
                   f"ref prepare loop + groupby-apply rolling on {sub_cfg.n_users} users x{scale:g}"),
    }
    return [Step(name, _rows_of(name, run), *baselines.get(name, (None, "")))
            for name, run in bootstrap_steps(settings)]


def _rows_of(name: str, run: Callable[[], StepResult]) -> Callable[[], int]:
    def rows() -> int:
        result = run()
        if result.exit_code not in (EXIT_OK, EXIT_DRIFT):
            raise SystemExit(f"{name} failed (exit {result.exit_code}): {result.message}")
        return result.rows
    return rows


def run(steps: list[Step], with_baseline: bool) -> list[Result]:
    results = []
    for step in steps:
        with PeakRss() as rss:
            t0, c0 = time.perf_counter(), cpu_seconds()
            rows = step.run()
            secs, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        base = step.baseline() if (with_baseline and step.baseline) else None
        results.append(Result(step.name, rows, secs, cpu, rss.peak_mb, base, step.baseline_note if base else ""))
    return results


def render(results: list[Result], title: str) -> str:
    head = f"{'step':<18} {'rows':>12} {'seconds':>9} {'CPU s':>7} {'rows/s':>12} {'peak RSS':>10} {'baseline s':>11} {'speed-up':>9}  baseline"
    lines = [title, head, "-" * len(head)]
    for r in results:
        rate = r.rows / r.seconds if r.seconds > 0 else float("inf")
        base = f"{r.baseline_s:11.1f}" if r.baseline_s is not None else f"{'-':>11}"
        speed = f"{r.baseline_s / r.seconds:8.0f}x" if r.baseline_s is not None else f"{'-':>9}"
        lines.append(f"{r.name:<18} {r.rows:>12,} {r.seconds:>9.2f} {r.cpu_s:>7.2f} {rate:>12,.0f} {r.peak_rss_mb:>8.0f}MB {base} {speed}  {r.note}")
    total = sum(r.seconds for r in results)
    cpu = sum(r.cpu_s for r in results)
    # this process's own high-water mark, or a step's sampled process tree (its workers) if higher
    peak_mb = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024] + [r.peak_rss_mb for r in results])
    if any(r.baseline_s is not None for r in results):
        # Steps without a reference loop count at our own time: a lower bound of the reference.
        base_total = sum(r.baseline_s if r.baseline_s is not None else r.seconds for r in results)
        lines.append(f"{'total':<18} {'':>12} {total:>9.2f} {cpu:>7.2f} {'':>12} {peak_mb:>8.0f}MB {base_total:11.1f} "
                     f"{base_total / total:8.0f}x  baselines above + our time for the other steps")
    else:
        lines.append(f"{'total':<18} {'':>12} {total:>9.2f} {cpu:>7.2f} {'':>12} {peak_mb:>8.0f}MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    enter_invocation_directory()  # a relative --config as the user typed it
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=None, help="default: generator.days from the config")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--baseline-users", type=int, default=200, help="users for the reference loops (scaled)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--root", default=None, help="data root (default: a temporary directory)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--per-step", action="store_true", help="one size (--users), step by step, with reference baselines")
    ap.add_argument("--sizes", default="2000,10000,100000", help="user counts of the scale table (comma-separated)")
    ap.add_argument("--shard-users", type=int, default=None, help="sharding.shard_users (default: from the config)")
    ap.add_argument("--baseline-max", type=int, default=100_000,
                    help="largest size also run unsharded (the code before #16) as the baseline")
    ap.add_argument("--png", default=None, help="write the figure of seconds and peak memory against users here")
    ap.add_argument("--runs-json", default=None, help="also save every run's figures here (JSON)")
    ap.add_argument("--plot-runs", default=None,
                    help="comma-separated --runs-json files: print their table (and --png) without running")
    ap.add_argument("--config", default=None, help="YAML config (default: built-in)")
    ap.add_argument("--profile", default=None, metavar="STEP",
                    help="print where the time of one step goes (cProfile, e.g. update, train, daily)")
    ap.add_argument("--fill-disk", action="store_true",
                    help="then one more daily cycle on a full disk (bench/disk_full.py; --root must be a mount point)")
    ap.add_argument("--child-json", default=None, help=argparse.SUPPRESS)  # one size in a child process
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    base = load_config(args.config)
    shard_users = args.shard_users or base.sharding.shard_users
    if args.child_json:
        pipeline_scale.child(pipeline_scale.child_settings(base, args.users, shard_users, args.root), Path(args.child_json),
                             args.profile, args.fill_disk)
        return 0
    if args.plot_runs:
        print(pipeline_scale.plot_runs([Path(p) for p in args.plot_runs.split(",")], Path(args.png) if args.png else None))
        return 0
    if not args.per_step:
        sizes = [int(x) for x in args.sizes.split(",")]
        print(f"pipeline bench: {os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
              f"numpy {np.__version__}, pandas {pd.__version__}, shard_users {shard_users:,}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        print(pipeline_scale.scale_table(__file__, sizes, shard_users, args.baseline_max, args.config,
                                         Path(args.png) if args.png else None, Path(args.root) if args.root else None,
                                         args.profile, Path(args.runs_json) if args.runs_json else None,
                                         args.fill_disk))
        return 0
    gen = dataclasses.replace(base.generator, n_users=args.users, days=args.days or base.generator.days,
                              seed=base.generator.seed if args.seed is None else args.seed)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="churn-bench-") as tmp:
        settings = with_root(dataclasses.replace(base, generator=gen), args.root or tmp)
        results = run(build_steps(settings, args.baseline_users), not args.no_baseline)
    title = (f"pipeline bench: {gen.n_users:,} users x {gen.days} days, seed {gen.seed}, "
             f"{os.cpu_count()} CPUs, numpy {np.__version__}, pandas {pd.__version__}, "
             f"load average {load0:.1f}-{os.getloadavg()[0]:.1f}; CPU s = user + sys (getrusage)")
    print(render(results, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
