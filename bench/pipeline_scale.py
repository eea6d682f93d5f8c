"""The scale table of `bench:pipeline_bench`: whole seed, train and one daily update at several
user counts, each in its own child process, beside the unsharded code (`sharding.shard_users`
above the user count) where it can run.

Why child processes: one child per (users, code) gives each figure its own peak, whatever ran
before it; and a child that runs out of memory does not take the bench down.
The peak is that of the child's process TREE: the sum of the RSS of the child and of its
descendants (the update's worker processes, `sharding.workers`), sampled every 10 ms from /proc
(`bench.rss.tree_rss`), or the kernel's peak of its largest single process (wait4's ru_maxrss)
if that is higher (a spike between two samples); the kernel's figure alone would show one
process of several.

Targets (#16): 1,000,000 users seed < 10 min with peak < 4 GiB; 100,000 < 60 s with peak
< 2 GiB; 2,000 seed < 3 s with train < 1.5 s; one daily update at 1,000,000 < 60 s.
"""

from __future__ import annotations

import cProfile
import dataclasses
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from matplotlib.ticker import FormatStrFormatter, NullFormatter

from bench import disk_full
from bench.rss import PeakRss, cpu_seconds
from churn.config.settings import Settings
from churn.daily.world import next_days
from churn.pipeline import steps
from churn.pipeline.steps import EXIT_DRIFT, EXIT_OK, StepResult, bootstrap_steps, with_root
from churn.plotting.figures import figure_png, subplots
from churn.revision import code_revision
from churn.storage.files import atomic_write_bytes

UNSHARDED = 10**9  # sharding.shard_users for the baseline: every user in one piece (the code before #16)
TARGETS = {  # users -> (seed seconds, peak GiB)
    1_000_000: (600.0, 4.0),
    100_000: (60.0, 2.0),
    2_000: (3.0, None),
}


@dataclass
class Run:
    """One child's figures (or why it did not run)."""

    users: int
    code: str
    steps: dict[str, float] = field(default_factory=dict)
    step_peak_mb: dict[str, float] = field(default_factory=dict)
    daily: dict[str, float] = field(default_factory=dict)
    # CPU seconds (user + sys, getrusage) of each step and of "daily", beside the wall seconds
    # above: what the step did, not what it waited for a core (empty in runs saved before)
    step_cpu_s: dict[str, float] = field(default_factory=dict)
    peak_mb: float = 0.0  # the process tree's (see the module's docstring); before session 12 wait4's alone
    kernel_peak_mb: float = 0.0  # wait4's ru_maxrss: the largest single process of the tree (0: not recorded)
    load: tuple[float, float] = (0.0, 0.0)
    note: str = ""
    revision: str = ""  # the commit measured (empty in runs saved before it was recorded)
    full_disk: dict[str, Any] = field(default_factory=dict)  # `--fill-disk`: bench.disk_full.trial

    @property
    def seed_s(self) -> float:
        return sum(self.steps.values())

    @property
    def seed_cpu_s(self) -> float | None:
        cpu = [self.step_cpu_s[name] for name in self.steps if name in self.step_cpu_s]
        return sum(cpu) if cpu and len(cpu) == len(self.steps) else None


# ---------------------------------------------------------------- the child


def child(settings: Settings, out: Path, profile: str | None = None, fill_disk: bool = False) -> None:
    """Every bootstrap step, then one day of the world and the daily cycle; figures to `out`.

    `profile`: a step name (or "daily") run under cProfile; its top functions go to stderr.
    `fill_disk`: then another day on a full disk (`bench.disk_full`; the need is the daily
    cycle's disk growth)."""
    result: dict[str, Any] = {"steps": {}, "step_peak_mb": {}, "daily": {}, "step_cpu_s": {}}
    for name, run in bootstrap_steps(settings):
        with PeakRss() as rss:
            t0, c0 = time.perf_counter(), cpu_seconds()
            _ok(_profiled(run, name == profile))
            result["steps"][name] = time.perf_counter() - t0
            result["step_cpu_s"][name] = cpu_seconds() - c0
        result["step_peak_mb"][name] = rss.peak_mb
        print(f"{name}: {result['steps'][name]:.1f}s, CPU {result['step_cpu_s'][name]:.1f}s, peak {rss.peak_mb:.0f} MB",
              file=sys.stderr, flush=True)
    def next_day() -> None:  # the world goes on: not the cycle's time
        next_days(settings.generator, steps.data_paths(settings), 1)

    def cycle() -> list[StepResult]:
        return [_ok(r) for r in steps.step_daily(settings)]

    next_day()
    root = Path(settings.paths.root)
    t0, c0 = time.perf_counter(), cpu_seconds()
    with PeakRss() as rss, disk_full.peak_disk_use(root.parent) as disk:
        for r in _profiled(cycle, profile == "daily"):
            result["daily"][r.name] = r.seconds
    result["daily"]["total"] = time.perf_counter() - t0
    result["step_cpu_s"]["daily"] = cpu_seconds() - c0
    result["step_peak_mb"]["daily"] = rss.peak_mb
    if fill_disk:
        result["full_disk"] = disk_full.trial(root, disk.growth, next_day, cycle)
        print(disk_full.verdict(result["full_disk"]), file=sys.stderr, flush=True)
    out.write_text(json.dumps(result))


def _profiled(run: Callable[[], Any], on: bool) -> Any:
    if not on:
        return run()
    prof = cProfile.Profile()
    out = prof.runcall(run)
    stats = io.StringIO()
    pstats.Stats(prof, stream=stats).sort_stats("cumulative").print_stats(30)
    print("PROFILE\n" + stats.getvalue(), file=sys.stderr, flush=True)
    return out


def _ok(result: StepResult) -> StepResult:
    if result.exit_code not in (EXIT_OK, EXIT_DRIFT):
        raise SystemExit(f"{result.name} failed (exit {result.exit_code}): {result.message}")
    return result


def run_child(main_file: str, users: int, shard_users: int, config: str | None, scratch: Path,
              profile: str | None = None, fill_disk: bool = False) -> Run:
    """One child process on a fresh data root; its peak RSS that of its process tree (sampled),
    or wait4's of its largest process if higher."""
    root = Path(tempfile.mkdtemp(prefix=f"pipeline-{users}-", dir=scratch))
    out, log = root.with_suffix(".json"), root.with_suffix(".log")
    argv = [sys.executable, main_file, "--child-json", str(out), "--users", str(users),
            "--shard-users", str(shard_users), "--root", str(root)] + (["--config", config] if config else []) + (
                ["--profile", profile] if profile else []) + (["--fill-disk"] if fill_disk else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    code = "sharded" if shard_users < users else ("unsharded" if shard_users == UNSHARDED else "one shard")
    load0 = os.getloadavg()[0]
    try:
        with open(log, "w") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
            with PeakRss(proc.pid) as tree:
                _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        kernel_mb = usage.ru_maxrss / 1024
        run = Run(users, code, peak_mb=max(tree.peak_mb, kernel_mb), kernel_peak_mb=kernel_mb,
                  load=(load0, os.getloadavg()[0]), revision=code_revision()[:7])
        if proc.returncode != 0:
            tail = log.read_text().strip().splitlines()[-3:]
            run.note = f"failed (exit {proc.returncode}): " + " | ".join(tail) + f" (whole log: {log})"
            return run
        if profile:
            text = log.read_text()
            print(text[text.find("PROFILE"):], file=sys.stderr)
        figures = json.loads(out.read_text())
        run.steps, run.step_peak_mb, run.daily = figures["steps"], figures["step_peak_mb"], figures["daily"]
        run.full_disk = figures.get("full_disk", {})
        run.step_cpu_s = figures.get("step_cpu_s", {})
        log.unlink()  # kept only when the child failed (the note names it)
        return run
    finally:
        shutil.rmtree(root, ignore_errors=True)
        out.unlink(missing_ok=True)


# ---------------------------------------------------------------- the table and the figure


def render(runs: list[Run]) -> str:
    head = (f"{'users':>9} {'code':<10} {'seed s':>8} {'seed CPU s':>10} {'update s':>9} {'train s':>8} "
            f"{'train CPU s':>11} {'daily s':>8} {'daily CPU s':>11} "
            f"{'daily update s':>15} {'peak RSS':>9} {'biggest step':<22} {'load':>9}  target")
    lines = [head, "-" * len(head)]
    for r in runs:
        if not r.steps:
            lines.append(f"{r.users:>9,} {r.code:<10} {r.note}")
            continue
        top = max(r.step_peak_mb, key=lambda k: r.step_peak_mb[k])
        lines.append(f"{r.users:>9,} {r.code:<10} {r.seed_s:>8.1f} {_cpu(r.seed_cpu_s, 10, 1)} "
                     f"{r.steps.get('update', 0):>9.1f} {r.steps.get('train', 0):>8.2f} "
                     f"{_cpu(r.step_cpu_s.get('train'), 11, 2)} {r.daily.get('total', 0):>8.1f} "
                     f"{_cpu(r.step_cpu_s.get('daily'), 11, 1)} {r.daily.get('update', 0):>15.1f} "
                     f"{r.peak_mb / 1024:>7.2f}GB {top + f' {r.step_peak_mb[top] / 1024:.2f}GB':<22} "
                     f"{r.load[0]:>4.1f}-{r.load[1]:<4.1f}  {_verdict(r)}")
    lines.append("seed s = every bootstrap step; daily s = ingest-inbox + update + batch-score + score-distribution "
                 "of one new day; CPU s = user + sys CPU of the same (getrusage, workers "
                 "included); peak RSS = the sum over the child process and its descendants (the workers), "
                 "sampled every 10 ms, or wait4's largest process if higher; GB = GiB; load = load average before-after")
    lines += render_steps(runs)
    lines += [f"{r.users:>9,} {r.code:<10} {disk_full.verdict(r.full_disk)}" for r in runs if r.full_disk]
    return "\n".join(lines)


def _cpu(seconds: float | None, width: int, digits: int) -> str:
    return f"{seconds:>{width}.{digits}f}" if seconds is not None else f"{'-':>{width}}"


def render_steps(runs: list[Run]) -> list[str]:
    """Every step's wall and CPU seconds, one column per run: a step whose wall time is well
    above its CPU time waited (for a core on a loaded machine, or for the disk)."""
    done = [r for r in runs if r.steps]
    if not done:
        return []
    names = list(dict.fromkeys([n for r in done for n in r.steps] + ["daily"]))
    head = f"{'step: wall / CPU s':<20}" + "".join(f" {f'{r.users:,} {r.code}':>20}" for r in done)
    lines = ["", head, "-" * len(head)]
    for name in names:
        cells = []
        for r in done:
            wall = r.daily.get("total") if name == "daily" else r.steps.get(name)
            cpu = r.step_cpu_s.get(name)
            cells.append("-" if wall is None else f"{wall:.2f} / {cpu:.2f}" if cpu is not None else f"{wall:.2f} / -")
        lines.append(f"{name:<20}" + "".join(f" {c:>20}" for c in cells))
    return lines


def _verdict(r: Run) -> str:
    if r.code == "unsharded":
        return "baseline"
    out = []
    seed, peak = TARGETS.get(r.users, (None, None))
    if seed is not None:
        out.append(f"seed < {seed:g}s: {'yes' if r.seed_s < seed else f'NO (+{r.seed_s - seed:.1f}s)'}")
    if peak is not None:
        gib = r.peak_mb / 1024
        out.append(f"peak < {peak:g}GiB: {'yes' if gib < peak else f'NO (+{gib - peak:.2f}GiB)'}")
    if r.users == 2_000:
        train = r.steps.get("train", 0)
        out.append(f"train < 1.5s: {'yes' if train < 1.5 else f'NO (+{train - 1.5:.2f}s)'}")
    if r.users == 1_000_000:
        upd = r.daily.get("total", 0)
        out.append(f"daily < 60s: {'yes' if upd < 60 else f'NO (+{upd - 60:.1f}s)'}")
    return "; ".join(out)


def plot(runs: list[Run], path: Path) -> Path:
    """Seconds and peak memory against users, sharded beside unsharded (log-log)."""
    done = [r for r in runs if r.steps]
    commits: list[str] = []
    with subplots(1, 2, figsize=(11, 4.6)) as (fig, (ax_t, ax_m)):
        series = (("sharded (shards of sharding.shard_users)", ("sharded", "one shard"), "-o"),
                  ("unsharded (before #16)", ("unsharded",), "--s"))
        for label, codes, style in series:
            rs = sorted((r for r in done if r.code in codes), key=lambda r: r.users)
            if not rs:
                continue
            commits.append(f"{label.split(' (')[0]}: {_revisions(rs)}")
            users = [r.users for r in rs]
            ax_t.plot(users, [r.seed_s for r in rs], style, label=f"whole seed, {label}")
            ax_t.plot(users, [r.daily.get("total", 0) for r in rs], style, alpha=0.6, label=f"one daily cycle, {label}")
            ax_m.plot(users, [r.peak_mb / 1024 for r in rs], style, label=f"peak RSS, {label}")
        _target_line(ax_t, 600, "10 min")
        for gib in (2, 4):
            _target_line(ax_m, gib, f"{gib} GiB")
        for ax, ylabel in ((ax_t, "seconds"), (ax_m, "GiB")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("users (x 120 days)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g") if ax is ax_m else NullFormatter())
        ax_t.set_title("time")
        ax_m.set_title("peak memory (child process tree)")
        fig.text(0.01, 0.01, "measured: " + "; ".join(commits), fontsize=7, color="dimgrey")
        fig.subplots_adjust(bottom=0.2)
        png = figure_png(fig, dpi=110)
    return atomic_write_bytes(path, png)


def _revisions(runs: list[Run]) -> str:
    """Which commits a series shows, by size: runs of one figure may come from several
    invocations (`--plot-runs`), so "this code" alone would be untrue."""
    by_rev: dict[str, list[str]] = {}
    for r in runs:
        by_rev.setdefault(r.revision or "commit not recorded", []).append(_short(r.users))
    return ", ".join(f"{'/'.join(sizes)} users at {rev}" for rev, sizes in by_rev.items())


def _short(users: int) -> str:
    return f"{users / 1e6:g}M" if users >= 1_000_000 else f"{users / 1e3:g}k"


def _target_line(ax: Any, y: float, text: str) -> None:
    """A dotted target line labelled inside its own panel: x in axes fractions, so the label
    stays in the panel whatever sizes are drawn (at x = 2,000 users it fell outside the axes,
    beside the other panel, when the smallest size drawn was 10,000)."""
    ax.axhline(y, color="grey", lw=0.8, ls=":")
    ax.text(0.02, y * 1.05, text, color="grey", fontsize=8, transform=ax.get_yaxis_transform())


def save_runs(runs: list[Run], path: Path) -> Path:
    """The runs' figures as JSON (`--runs-json`), so sizes measured in separate invocations (a
    1,000,000-user run takes most of an hour) can be drawn in one figure (`--plot-runs`)."""
    return atomic_write_bytes(path, json.dumps([dataclasses.asdict(r) for r in runs], indent=1).encode())


def load_runs(paths: list[Path]) -> list[Run]:
    runs = []
    for path in paths:
        for d in json.loads(Path(path).read_text()):
            runs.append(Run(**{**d, "load": tuple(d["load"])}))
    return sorted(runs, key=lambda r: (r.users, r.code))


def plot_runs(paths: list[Path], png: Path | None) -> str:
    """The table (and figure) of runs saved by earlier invocations, without running anything."""
    runs = load_runs(paths)
    table = render(runs)
    if png is not None:
        table += f"\nfigure: {plot(runs, png)}"
    return table


def scale_table(main_file: str, sizes: list[int], shard_users: int, baseline_max: int, config: str | None,
                png: Path | None, scratch: Path | None, profile: str | None = None,
                runs_json: Path | None = None, fill_disk: bool = False) -> str:
    """Every size sharded and (up to `baseline_max` users) unsharded; prints as it goes."""
    scratch = scratch or Path(tempfile.gettempdir())
    if fill_disk:
        disk_full.require_own_filesystem(scratch)
    runs = []
    for users in sizes:
        codes = [shard_users] + ([UNSHARDED] if users <= baseline_max and shard_users < users else [])
        for su in codes:
            print(f"pipeline bench: {users:,} users, shard_users {su if su != UNSHARDED else 'unsharded'} ...",
                  file=sys.stderr, flush=True)
            runs.append(run_child(main_file, users, su, config, scratch, profile, fill_disk and su != UNSHARDED))
            print(render(runs[-1:]).splitlines()[2], file=sys.stderr, flush=True)
            if runs_json is not None:
                save_runs(runs, runs_json)
        if users > baseline_max:
            runs.append(Run(users, "unsharded", note=f"not run: above --baseline-max {baseline_max:,} (the unsharded "
                                                     "update holds every user's grid and features at once: about "
                                                     f"{62 * users / 2**20:.0f} GiB at 62 KB per user)"))
    table = render(runs)
    if png is not None:
        table += f"\nfigure: {plot(runs, png)}"
    return table


def child_settings(base: Settings, users: int, shard_users: int, root: str) -> Settings:
    gen = dataclasses.replace(base.generator, n_users=users)
    return with_root(dataclasses.replace(base, generator=gen,
                                         sharding=dataclasses.replace(base.sharding, shard_users=shard_users)), root)
