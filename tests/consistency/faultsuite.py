"""The fault-injection suite's harness: a failure at each storage point of a command, then checks.

For one command: a clean run on a copy of the seeded root counts its fault points
(`faults.Recorder`) and gives the new state; then for each point i and each mode (crash: as
after kill -9, nothing more reaches the disk; enospc: the error path runs), on a fresh copy of
the seeded root (built once per test target, never per point):

  (a) every reader sees the complete old or the complete new state of each area the command
      publishes (the verified bytes of the current generation, compared with the seeded
      root's and the clean run's);
  (b) rerunning the command succeeds and gives the clean run's new state;
  (c) the registry's history explains the production alias (after the fault and the rerun);
  (d) no temp file or directory survives the rerun.

Commit points (renames and symlink switches that make something visible: not those inside a
temp entry, e.g. the files of a model version or a generation being assembled, which nobody
can see before the entry's own rename) are all injected; other points (writes, mkdirs,
links, removals, renames inside a temp entry) too unless there are more than `sample` of
them, then `sample` of them chosen with a fixed seed. Each target prints its counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from churn.config.settings import Settings
from churn.errors import ChurnError
from churn.pipeline.steps import StepResult, bootstrap, last_complete_run
from churn.raw.store import REPORTS, batch_report, raw_files, read_manifest
from churn.raw.verdict import is_validated
from churn.pipeline.testing import tiny_settings
from churn.registry.registry import ModelRegistry
from churn.storage import faults, generations
from churn.storage.files import MANIFEST_NAME, is_temp_name, read_verified
from churn.storage.paths import DRIFT_AREA, TABLES_AREA, DataPaths

# A tiny world: every step runs in about a second, so one command's points take ~a minute.
USERS, DAYS = 200, 90
COMMIT_OPS = ("rename", "symlink")
MODES = ("crash", "enospc")
# fields that differ between two clean runs of one command on one root (timings, clocks)
VOLATILE = frozenset({"seconds", "generated_at", "created", "at", "written_at", "updated_at"})


def seed(root: Path) -> Path:
    """Bootstrap the tiny world into `root` (once per test target)."""
    t0 = time.perf_counter()
    results = bootstrap(tiny_settings(root, users=USERS, days=DAYS))
    assert [r.exit_code for r in results] == [0] * len(results), [(r.name, r.message) for r in results]
    print(f"seeded root ({USERS} users, {DAYS} days) bootstrapped once in {time.perf_counter() - t0:.1f} s")
    return root


def settings_for(root: Path) -> Settings:
    return tiny_settings(root, users=USERS, days=DAYS)


def _normalized(name: str, data: bytes, roots: tuple[Path, ...]) -> str:
    """sha256 of a file's content, without what differs between two clean runs on two copies
    of one root (timing fields; the root's path in recorded output paths: the copy's own, or
    the seeded root's in files copied from it)."""
    if name.endswith(".json"):
        for root in roots:
            data = data.replace(str(root).encode(), b"<root>")
        def strip(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
            if isinstance(value, list):
                return [strip(v) for v in value]
            return value
        data = json.dumps(strip(json.loads(data)), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def view(root: Path, area: str, seeded: Path | None = None) -> dict[str, str]:
    """What a reader of `area` sees: {file: normalized sha256} of the generation current now,
    each file read once through `read_verified` (so a torn or rewritten file fails here)."""
    gen = generations.current(root, area)
    if gen is None:
        return {}
    roots = (root,) if seeded is None else (root, seeded)
    return {p.relative_to(gen).as_posix(): _normalized(p.name, read_verified(p), roots)
            for p in sorted(gen.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}


def raw_state(root: Path, seeded: Path | None = None) -> dict[str, Any]:
    """What a reader of the raw store sees: the users table, each day's events and each
    batch's report (`raw/reports/`, read through `store.batch_report`: a report missing or
    changed since its batch committed is a DataError here), by content (batch numbers in file
    names differ between a clean run and a crashed one plus a rerun, so a report's own
    `batch` field is left out with the timing fields)."""
    paths = DataPaths.from_root(root)
    m = read_manifest(paths)
    users = hashlib.sha256(read_verified(paths.raw / m.users)).hexdigest() if m.users else None
    days = sorted((p.date, p.rows, hashlib.sha256(read_verified(paths.raw / p.path)).hexdigest()) for p in m.parts)
    roots = (root,) if seeded is None else (root, seeded)
    reports = []
    for batch in m.batches:
        report = batch_report(paths, batch)
        if report is not None:
            doc = {k: v for k, v in report.items() if k != "batch"}
            reports.append((batch.kind, _normalized("report.json", json.dumps(doc).encode(), roots)))
    return {"users": users, "users_rows": m.users_rows, "events": days, "reports": reports}


def another_world(settings: Settings) -> StepResult:
    """`generate` of another world (seed 7, 60 users, 20 days): every raw file differs."""
    from churn.pipeline.steps import step_generate

    return step_generate(dataclasses.replace(
        settings, generator=dataclasses.replace(settings.generator, seed=7, n_users=60, days=20)))


def no_unlisted_raw_file(root: Path) -> None:
    """A crashed batch's part files and report are removed by the next writer; what is left
    beside the listed files (and the reports the batches name) is only what the manifest keeps
    for readers in flight (the state before)."""
    paths = DataPaths.from_root(root)
    m = read_manifest(paths)
    reports = {paths.raw / str(b.detail["report"]["path"]) for b in m.batches
               if isinstance(b.detail.get("report"), dict) and b.detail["report"].get("path")}
    allowed = set(raw_files(paths, m)) | {paths.raw / f for f in m.kept} | reports
    stray = [f for sub in ("users", "events", REPORTS) for f in (paths.raw / sub).rglob("*")
             if f.is_file() and f not in allowed]
    assert not stray, stray


# Checks of a healed root by name (the full-disk driver runs them in another process): each
# raises AssertionError naming what it found.
ROOT_CHECKS: dict[str, Callable[[Path], None]] = {"no_unlisted_raw_file": no_unlisted_raw_file}


def training_set_state(root: Path, seeded: Path | None = None) -> str:
    """`labels/training_set.parquet` (one file, replaced by one rename), read verified, by its
    rows and columns: the file also records the tables generation it was sampled from
    (`built_from`), whose id differs between a clean run and a crashed one plus its rerun."""
    import io

    import pandas as pd

    frame = pd.read_parquet(io.BytesIO(read_verified(DataPaths.from_root(root).training_set)))
    rows = pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()
    return hashlib.sha256(",".join(map(str, frame.columns)).encode() + rows).hexdigest()


# card fields that differ between two trainings of the same models (ids, clocks, pickles)
CARD_VOLATILE = frozenset({"version", "created_at", "fit_seconds", "model_sha256", "code_revision"})


def training_state(root: Path, seeded: Path | None = None) -> dict[str, Any] | None:
    """The last complete training run as a reader (a plain promote, an operator) finds it
    (`steps.last_complete_run`), each of its versions complete (the model file's and the
    portable scorer's sha256 equal the card's), by content (cards without ids and clocks)."""
    record = last_complete_run(DataPaths.from_root(root))
    if record is None:
        return None
    registry = ModelRegistry(root)
    models = []
    for version in record["versions"]:
        card = registry.card(version)  # a RegistryError if the record names a missing version
        folder = registry.version_dir(version)
        assert hashlib.sha256(read_verified(folder / card["model_file"])).hexdigest() == card["model_sha256"]
        if card.get("scorer"):
            assert hashlib.sha256(read_verified(folder / card["scorer"]["file"])).hexdigest() == card["scorer"]["sha256"]
        models.append(json.dumps({k: v for k, v in card.items() if k not in CARD_VOLATILE}, sort_keys=True))
    return {"models": models, "best": record["versions"].index(record["best"]), "split": record["split"]}


def production_state(root: Path, seeded: Path | None = None) -> str | None:
    """The production alias's version (its history is checked by `explain`)."""
    return ModelRegistry(root).get_alias()


def predictions_state(root: Path, seeded: Path | None = None) -> dict[str, dict[str, str]]:
    """Every predictions/<date> area, as `view` reads it."""
    top = root / "predictions"
    days = sorted(p.name for p in top.iterdir() if not p.name.startswith(".")) if top.is_dir() else []
    return {day: view(root, f"predictions/{day}", seeded) for day in days}


def drift_state(root: Path, seeded: Path | None = None) -> dict[str, str]:
    return view(root, DRIFT_AREA, seeded)


def validation_state(root: Path, seeded: Path | None = None) -> dict[str, Any]:
    """The verdict `prepare`/`update` go by on the raw data as committed now, and the report."""
    paths = DataPaths.from_root(root)
    report = paths.validation_report
    roots = (root,) if seeded is None else (root, seeded)
    return {"validated": is_validated(paths),
            "report": _normalized(report.name, read_verified(report), roots) if report.is_file() else None}


def raw_and_verdict(root: Path, seeded: Path | None = None) -> dict[str, Any]:
    """The raw store's state with its verdict: one state (an ingest commits both by one rename;
    the verdict alone does not change: valid before, valid after)."""
    return {**raw_state(root, seeded), "validated": validation_state(root, seeded)["validated"]}


def score_distribution_state(root: Path, seeded: Path | None = None) -> dict[str, str]:
    """monitoring/score_distribution/<date>.json (one file per day, each replaced by one rename)."""
    folder = DataPaths.from_root(root).monitoring / "score_distribution"
    roots = (root,) if seeded is None else (root, seeded)
    return {p.name: _normalized(p.name, read_verified(p), roots) for p in sorted(folder.glob("*.json"))}


def prepare_report_state(root: Path, seeded: Path | None = None) -> str | None:
    """`processed/prepare_report.json` (one file beside the tables, replaced by one rename)."""
    report = DataPaths.from_root(root).prepare_report
    roots = (root,) if seeded is None else (root, seeded)
    return _normalized(report.name, read_verified(report), roots) if report.is_file() else None


def inbox_state(root: Path, seeded: Path | None = None) -> dict[str, list[str]]:
    """The inbox's batch folders: waiting, ingested (`done/`), rejected (each moved by one rename)."""
    from churn.daily.inbox import DONE, REJECTED, pending

    paths = DataPaths.from_root(root)
    moved = {sub: sorted(p.name for p in (paths.inbox / sub).iterdir()) if (paths.inbox / sub).is_dir() else []
             for sub in (DONE, REJECTED)}
    return {"pending": [p.name for p in pending(paths)], **moved}


def derived_state(root: Path, seeded: Path | None = None) -> dict[str, str]:
    """What `update` publishes: the current generation of `tables` (grid, features, labels,
    the update state), as `view` reads it."""
    return view(root, TABLES_AREA, seeded)


# The readers by name (the full-disk driver runs them in another process): root, seeded -> state.
STATE_READERS: dict[str, Callable[[Path, Path | None], Any]] = {
    "raw": raw_state, "training_set": training_set_state, "training": training_state,
    "production": production_state, "predictions": predictions_state, "drift": drift_state,
    "validation": validation_state, "score_distribution": score_distribution_state, "derived": derived_state,
    "prepare_report": prepare_report_state, "inbox": inbox_state,
}


def temps(root: Path) -> list[Path]:
    return [Path(d) / n for d, dirs, files in os.walk(root) for n in [*dirs, *files] if is_temp_name(n)]


def explain(root: Path) -> None:
    """(c): the production alias is explained by a committed history line (or there is none)."""
    registry = ModelRegistry(root)
    registry.reconcile()
    if registry.get_alias() is not None:
        assert registry.explain_alias() is not None


@dataclass
class Command:
    """One command of the suite: how to run it on a root and what its readers see.

    `areas`: the generation areas it publishes (read by `view`); `readers`: other states,
    each a function of the root and the root it was copied from (e.g. `raw_state`);
    `after_rerun`: extra checks of the healed root (e.g. no unlisted leftover)."""

    name: str
    run: Callable[[Settings], StepResult]
    areas: tuple[str, ...] = ()
    ok_exits: tuple[int, ...] = (0,)
    readers: dict[str, Callable[[Path, Path | None], Any]] = field(default_factory=dict)
    after_rerun: Callable[[Path], None] | None = None

    def state(self, root: Path, seeded: Path | None = None) -> dict[str, Any]:
        """Everything a reader sees, by area or reader name (`seeded`: the root it was copied from)."""
        out: dict[str, Any] = {area: view(root, area, seeded) for area in self.areas}
        out.update({name: read(root, seeded) for name, read in self.readers.items()})
        return out


@dataclass
class Counts:
    command: str
    points: int = 0
    commit_points: int = 0
    injected_points: int = 0
    injections: int = 0
    consistent: int = 0
    seconds: float = 0.0
    ops: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
        return (f"fault injection {self.command}: {self.points} points ({ops}; {self.commit_points} commit), "
                f"{self.injected_points} injected x {len(MODES)} modes = {self.injections} injections, "
                f"{self.consistent} consistent, {self.seconds:.0f} s")


def is_commit(op: str, path: Path) -> bool:
    """A rename or symlink that readers can see: its path has no temp component (a rename
    inside a version or generation being assembled, or of a temp symlink, is invisible)."""
    return op in COMMIT_OPS and not any(is_temp_name(part) for part in path.parts)


def _copy(seeded: Path, dest: Path) -> Path:
    shutil.copytree(seeded, dest, symlinks=True)
    return dest


def run_suite(command: Command, seeded: Path, work: Path, sample: int = 40, rng_seed: int = 14) -> Counts:
    """Inject a crash and an ENOSPC at each chosen point of `command`; assert (a)-(d) each time."""
    t0 = time.perf_counter()
    counts = Counts(command.name)
    old = command.state(seeded)
    clean = _copy(seeded, work / "clean")
    recorder = faults.Recorder()
    with faults.injecting(recorder):
        result = command.run(settings_for(clean))
    assert result.exit_code in command.ok_exits, (command.name, result.message)
    new = command.state(clean, seeded)
    for name in new:  # else (a) could not tell a torn state from the old one
        assert new[name] and new[name] != old[name], f"{command.name}: the clean run changed nothing in {name}"
    shutil.rmtree(clean)
    counts.points = len(recorder.ops)
    for op, _ in recorder.ops:
        counts.ops[op] = counts.ops.get(op, 0) + 1
    commit = [i for i, (op, path) in enumerate(recorder.ops, 1) if is_commit(op, path)]
    other = [i for i in range(1, counts.points + 1) if i not in commit]
    if len(other) > sample:
        other = sorted(random.Random(rng_seed).sample(other, sample))
    chosen = sorted(commit + other)
    counts.commit_points, counts.injected_points = len(commit), len(chosen)
    for at in chosen:
        for mode in MODES:
            root = _copy(seeded, work / f"{mode}-{at}")
            fail = faults.FailAt(at, mode)
            with faults.injecting(fail):
                try:
                    command.run(settings_for(root))
                except (faults.SimulatedCrash, ChurnError, OSError):
                    pass
            assert fail.fired is not None, (command.name, mode, at)
            where = (command.name, mode, at, fail.fired[0], str(fail.fired[1].relative_to(root)))
            counts.injections += 1
            seen = command.state(root, seeded)
            for name in seen:  # (a): each area old or new, never a mix
                assert seen[name] in (old[name], new[name]), (*where, name)
            explain(root)  # (c)
            rerun = command.run(settings_for(root))  # (b)
            assert rerun.exit_code in command.ok_exits, (*where, rerun.message)
            assert command.state(root, seeded) == new, where
            if command.after_rerun is not None:
                command.after_rerun(root)
            explain(root)
            assert not temps(root), (*where, temps(root))  # (d)
            counts.consistent += 1
            shutil.rmtree(root)
    counts.seconds = time.perf_counter() - t0
    print(counts.line())
    return counts
