"""Fault injection: every write, rename, link and removal of every `ml_jobs` command, in turn.

For each command (faultkit.SCENARIOS; `FAULT_COMMANDS` picks the one of each Bazel target):
one clean run counts the storage layer's fault points N. Then for each point i (all of them,
or for a long command every publish's commit, the last TAIL and an even sample, faultkit.injection_points)
and for each mode
(`crash`: the process dies at point i, nothing after it reaches the disk; `enospc`: point i
fails with a full disk and the command's own error handling runs) the command runs on a fresh
copy of the same starting root, and then:
  (a) every reader sees the complete old or the complete new state (faultkit.check_state),
      and a full-disk failure is exit 1 with one line naming the file,
  (b) rerunning the command succeeds (its clean exit code),
  (c) the registry's history explains the production alias (part of check_state),
  (d) no temp file survives the rerun,
and the inbox of the daily cycle shows only whole batches, and after the rerun what a clean
run leaves (faultkit.inbox_listing).
A new command without a scenario fails //tests/consistency:scenarios_test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import faultkit as fk
from faultkit import cli, seeded  # noqa: F401 - the shared pytest fixtures
from churn.registry.registry import ModelRegistry
from churn.storage.faults import FailAt, Recorder, SimulatedCrash, injecting

MODES = ("crash", "enospc")
SELECTED = [c for c in os.environ.get("FAULT_COMMANDS", ",".join(fk.SCENARIOS)).split(",") if c]
COUNTS: dict[str, tuple[int, int, int, int]] = {}  # command -> (points, injected, injections, consistent)


def _start(cli, seeded: Path, scenario: fk.Scenario, work: Path) -> tuple[Path, list[str]]:
    """A fresh copy of the scenario's starting root, with its set-up done."""
    root = work / "root"
    if scenario.from_empty:
        if root.exists():
            import shutil

            shutil.rmtree(root)
        root.mkdir(parents=True)
    else:
        fk.copy_root(seeded, root)
    config = fk.write_config(root)
    for argv in scenario.setup:
        run = fk.run_cli(cli, config, fk.resolve(argv, root))
        assert run.code == 0, (argv, run.stderr, run.exception)
    return root, fk.resolve(scenario.argv, root)


@pytest.mark.parametrize("command", SELECTED)
def test_fault_at_every_point(command, cli, seeded, tmp_path, capsys):
    scenario = fk.SCENARIOS[command]
    # the starting state, kept to restore before each injection
    start, argv = _start(cli, seeded, scenario, tmp_path / "start")
    config_of = lambda root: fk.write_config(root)  # noqa: E731
    before = fk.state(start)
    registry = ModelRegistry(start)
    before_alias = registry.get_alias() if registry.aliases_dir.exists() else None
    before_versions = set(registry.versions())

    clean_root = tmp_path / "clean"
    fk.copy_root(start, clean_root)
    recorder = Recorder()
    with injecting(recorder):
        clean = fk.run_cli(cli, config_of(clean_root), argv)
    assert clean.code == scenario.exit_code, (clean.stdout, clean.stderr, clean.exception)
    after_clean = fk.state(clean_root)
    clean_alias = ModelRegistry(clean_root).get_alias()
    clean_inbox = fk.inbox_listing(clean_root)
    points = len(recorder.ops)
    assert points > 0, f"{command} wrote nothing through the storage layer"

    work = tmp_path / "work"
    injections = consistent = 0
    failures = []
    chosen = fk.injection_points(recorder.ops, scenario.budget)
    for at in chosen:
        for mode in MODES:
            fk.copy_root(start, work)
            config = config_of(work)
            injector = FailAt(at, mode)
            with injecting(injector):
                run = fk.run_cli(cli, config, [*argv])
            injections += 1
            label = f"{command} {mode} at point {at}/{points} ({recorder.ops[at - 1][0]} {recorder.ops[at - 1][1].name})"
            problems = []
            if mode == "crash" and not isinstance(run.exception, SimulatedCrash):
                problems.append(f"expected the simulated crash, got exit {run.code} {run.exception!r}")
            if mode == "enospc":
                if run.exception is not None or run.code != 1:
                    problems.append(f"full disk: expected exit 1, got {run.code} {run.exception!r}")
                elif "no space left on device" not in run.stderr or len(run.stderr.strip().splitlines()) > 3:
                    problems.append(f"full disk: not one clear line: {run.stderr[-500:]!r}")
            problems += fk.check_state(work, before, after_clean, {before_alias, clean_alias}, before_versions)
            rerun = fk.run_cli(cli, config, [*argv])
            if rerun.code != scenario.exit_code:
                problems.append(f"rerun: exit {rerun.code} {rerun.exception!r} {rerun.stderr[-800:]}")
            problems += [f"after the rerun: {p}" for p in
                         fk.check_state(work, before, after_clean, {before_alias, clean_alias}, before_versions)]
            problems += [f"temp entry survived the rerun: {p}" for p in fk.temp_entries(work)]
            if fk.inbox_listing(work) != clean_inbox:
                problems.append(f"after the rerun the inbox holds {fk.inbox_listing(work)}, a clean run {clean_inbox}")
            if problems:
                failures.append(f"{label}: " + "; ".join(problems))
            else:
                consistent += 1
    COUNTS[command] = (points, len(chosen), injections, consistent)
    with capsys.disabled():
        print(f"\nfault injection {command}: {points} points, {len(chosen)} injected "
              f"({'all' if len(chosen) == points else f'every commit, the last {fk.TAIL} and a sample'}) x {len(MODES)} modes "
              f"= {injections} injections, {consistent} consistent")
    assert not failures, "\n".join(failures[:20])


def test_zz_print_counts(capsys):
    """The table for the README (what this target ran)."""
    if not COUNTS:
        pytest.skip("no command ran in this target")
    lines = [f"{'command':<14} {'points':>6} {'injected':>8} {'injections':>10} {'consistent':>10}"]
    lines += [f"{c:<14} {p:>6} {j:>8} {i:>10} {k:>10}" for c, (p, j, i, k) in COUNTS.items()]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
