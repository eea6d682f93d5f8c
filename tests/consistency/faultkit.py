"""What the consistency tests share: the CLI in-process, scenarios per command, state checks.

Every `ml_jobs` command is a scenario: a state to start from (a seeded tiny data root plus
set-up commands) and the command line to run. `check_state` is the reader's view: every
published area is a complete generation that is either the one before the run or one with
exactly the files a clean run publishes; the production alias is explained by the registry
history; a finished training record names models that exist. See docs/consistency.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from churn.pipeline.testing import TINY_YAML
from churn.raw.store import event_dates, read_events, read_users
from churn.registry.registry import ModelRegistry
from churn.storage.paths import DataPaths
from churn.storage.files import is_temp_name, read_json, read_verified
from churn.storage.generations import areas, current

USERS, DAYS = 150, 90


def load_cli() -> Any:
    """apps/ml_jobs/main.py as a module (from the runfiles), so commands run in this process
    and the storage layer's fault hook sees every write."""
    base = Path(os.environ.get("TEST_SRCDIR", "."), os.environ.get("TEST_WORKSPACE", "_main"))
    path = base / "apps" / "ml_jobs" / "main.py"
    spec = importlib.util.spec_from_file_location("ml_jobs_main", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Run:
    code: int | None
    stdout: str
    stderr: str
    exception: BaseException | None = None


@pytest.fixture(scope="module")
def cli() -> Any:
    """The CLI module, loaded once per test module."""
    return load_cli()


@pytest.fixture(scope="module")
def seeded(cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bootstrapped tiny root, the starting state of most scenarios (copied, never changed)."""
    return seed_root(cli, tmp_path_factory.mktemp("seeded") / "root")


def seed_root(cli: Any, root: Path) -> Path:
    """A data root made by `ml_jobs bootstrap` (the starting state of most scenarios)."""
    run = run_cli(cli, write_config(root), ["bootstrap"])
    assert run.code == 0, run.stderr + repr(run.exception)
    return root


def write_config(root: Path, users: int = USERS, days: int = DAYS) -> Path:
    config = root.parent / f"{root.name}.yaml"
    config.write_text(TINY_YAML.format(root=root, users=users, days=days))
    return config


def run_cli(cli: Any, config: Path, argv: list[str]) -> Run:
    """`ml_jobs --config CONFIG -q ARGV...` in this process; exceptions are returned, not raised."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["--config", str(config), "-q", *argv])
        except BaseException as exc:  # noqa: BLE001 - a simulated crash or an unexpected error
            return Run(None, out.getvalue(), err.getvalue(), exc)
    return Run(code, out.getvalue(), err.getvalue())


def copy_root(src: Path, dst: Path) -> None:
    """A copy keeping the relative symlinks (areas stay pointers into .generations)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)


@dataclass
class Scenario:
    """`argv` run on a seeded root after `setup` commands; `exit_code` of a clean run."""

    argv: list[str]
    setup: list[list[str]] = field(default_factory=list)
    exit_code: int = 0
    from_empty: bool = False
    budget: int = 24  # a command with more points: every commit plus a sample (`injection_points`)


# the commit of a publish (manifest write + rename, directory rename, symlink, switch, clean-up)
# and of a registry change is always in the last points: these are injected without exception
TAIL = 12
COMMIT_BEFORE, COMMIT_AFTER = 3, 2  # a publish's commit: MANIFEST write + rename, directory rename, symlink, switch, clean-up


def injection_points(ops: list[tuple[str, Path]], budget: int) -> list[int]:
    """Which points (1-based) to fail: all of them when there are at most `budget`; otherwise
    every commit (the MANIFEST write, the renames and the pointer switch around each `symlink`
    point: one per publish), the last TAIL, and an even sample of the others (e.g. the hard
    links a merge publish seeds, generate's writes of one kind per day partition)."""
    points = len(ops)
    if points <= budget:
        return list(range(1, points + 1))
    commits = {k for i, (op, _) in enumerate(ops, start=1) if op == "symlink"
               for k in range(max(1, i - COMMIT_BEFORE), min(points, i + COMMIT_AFTER) + 1)}
    head = points - TAIL
    step = max(1, -(-head // max(budget - TAIL, 1)))
    return sorted(set(range(1, head + 1, step)) | set(range(head + 1, points + 1)) | commits)


def other_version(root: Path) -> str:
    """A model of the seed's training run that is not production."""
    record = read_json(root / "registry" / "last_training_run.json")
    production = ModelRegistry(root).get_alias()
    return next(v for v in record["versions"] if v != production)


def ingest_files(root: Path) -> tuple[Path, Path]:
    """An export of 3 new users and their logins on the last day (CSV, as a customer sends it),
    written beside the root: what `ingest` gets in its scenario."""
    paths = DataPaths.from_root(root)
    users = read_users(paths, columns=["user_id"])["user_id"]
    events = read_events(paths, columns=["event_id"])["event_id"]
    day = event_dates(paths)[-1].isoformat()
    new_users = [int(users.max()) + i for i in (1, 2, 3)]
    users_csv, events_csv = root.parent / "ingest-users.csv", root.parent / "ingest-events.csv"
    users_csv.write_text("user_id,signup_date,plan,is_paid,country\n"
                         + "".join(f"{u},{day},free,0,IN\n" for u in new_users))
    events_csv.write_text("event_id,user_id,event_time,event_type\n"
                          + "".join(f"{int(events.max()) + i + 1},{u},{day}T12:00:00Z,login\n"
                                    for i, u in enumerate(new_users)))
    return users_csv, events_csv


# argv placeholders resolved against the seeded root
OTHER = "{other}"
INGEST_USERS, INGEST_EVENTS = "{ingest_users}", "{ingest_events}"


def resolve(argv: list[str], root: Path) -> list[str]:
    files = ingest_files(root) if INGEST_USERS in argv or INGEST_EVENTS in argv else None
    values = {OTHER: other_version(root) if OTHER in argv else OTHER,
              **({INGEST_USERS: str(files[0]), INGEST_EVENTS: str(files[1])} if files else {})}
    return [values.get(a, a) for a in argv]


SCENARIOS: dict[str, Scenario] = {
    "generate": Scenario(["generate"]),
    "ingest": Scenario(["ingest", "--users", INGEST_USERS, "--events", INGEST_EVENTS]),
    "validate": Scenario(["validate"]),
    "prepare": Scenario(["prepare"]),
    "features": Scenario(["features"]),
    "labels": Scenario(["labels"]),
    "train": Scenario(["train"]),
    "promote": Scenario(["promote", "--version", OTHER, "--force", "--reason", "fault test"]),
    "rollback": Scenario(["rollback"], setup=[["promote", "--version", OTHER, "--force", "--reason", "setup"]]),
    "batch-score": Scenario(["batch-score"]),
    "merge-shards": Scenario(["merge-shards", "2"], setup=[["batch-score", "--shard", "0/2"],
                                                           ["batch-score", "--shard", "1/2"]]),
    "score-distribution": Scenario(["score-distribution"]),
    "drift-check": Scenario(["drift-check"]),
    "retrain": Scenario(["retrain"]),
    "bootstrap": Scenario(["bootstrap"], from_empty=True, budget=16),
    # the daily cycle (churn.daily): a world that goes on, its inbox, the incremental update
    "generate-next-days": Scenario(["generate", "--next-days", "2"]),
    "ingest-inbox": Scenario(["ingest-inbox"], setup=[["generate", "--next-days", "2"]]),
    "update": Scenario(["update"], setup=[["generate", "--next-days", "2"], ["ingest-inbox"]]),
    "daily": Scenario(["daily"], setup=[["generate", "--next-days", "1"]]),
    "merge-update": Scenario(["merge-update", "2"], setup=[["generate", "--next-days", "1"], ["ingest-inbox"],
                                                           ["update", "--shard", "0/2"], ["update", "--shard", "1/2"]]),
}


# commands without a scenario yet, each with the reason (listed by the suite, not hidden)
UNCOVERED = {"schema": "prints the raw-data contract, writes nothing"}


def inbox_listing(root: Path) -> list[str]:
    """The inbox's batch folders (pending, done/, rejected/) and their files, temp entries left
    out: after a rerun it must be what a clean run leaves."""
    inbox = DataPaths.from_root(root).inbox
    if not inbox.is_dir():
        return []
    return sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*")
                  if not any(is_temp_name(part) for part in p.relative_to(inbox).parts))


def inbox_problems(root: Path) -> list[str]:
    """A visible inbox batch must be whole: each of its Parquet files readable to the end."""
    import pyarrow.parquet as pq

    inbox = DataPaths.from_root(root).inbox
    problems = []
    for f in (inbox.rglob("*.parquet") if inbox.is_dir() else []):
        if any(is_temp_name(part) for part in f.relative_to(inbox).parts):
            continue
        try:
            pq.read_table(f)
        except Exception as exc:  # noqa: BLE001 - reported as a problem
            problems.append(f"{f}: a visible inbox batch file is not whole ({exc})")
    return problems


def temp_entries(root: Path) -> list[Path]:
    """Temp files and directories anywhere under the root (a dead run's litter)."""
    found = []
    for current_dir, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            if is_temp_name(name):
                found.append(Path(current_dir) / name)
    return found


@dataclass(frozen=True)
class AreaState:
    generation: str
    files: frozenset[str]


def state(root: Path) -> dict[str, AreaState]:
    """Every published area's current generation and file names."""
    out = {}
    for area in areas(root):
        gen = current(root, area)
        if gen is not None:
            out[area] = AreaState(gen.id, frozenset(gen.files))
    return out


def check_state(root: Path, before: dict[str, AreaState], after_clean: dict[str, AreaState],
                aliases: set[str | None], before_versions: set[str]) -> list[str]:
    """Problems a reader would meet now ([] = consistent): see the module docstring."""
    problems = []
    now = state(root)
    for area, st in now.items():
        gen = current(root, area)
        assert gen is not None
        problems += gen.verify()
        for name in gen.files:
            read_verified(gen.path(name))
        old, new = before.get(area), after_clean.get(area)
        if old is not None and st.generation == old.generation:
            continue
        if new is None or st.files != new.files:
            problems.append(f"{area}: generation {st.generation} is neither the old one nor complete "
                            f"(files {sorted(st.files)}, a clean run has {sorted(new.files) if new else None})")
    for area in before:
        if area not in now:
            problems.append(f"{area}: disappeared")
    problems += inbox_problems(root)
    registry = ModelRegistry(root)
    try:
        registry.explain_alias()
    except Exception as exc:  # noqa: BLE001 - reported as a problem
        problems.append(f"registry: {exc}")
    alias = registry.get_alias() if registry.aliases_dir.exists() else None
    if alias not in aliases | (set(registry.versions()) - before_versions):
        problems.append(f"registry: production is {alias}, expected one of {sorted(map(str, aliases))}")
    if alias is not None:
        registry.load(alias)
    run_path = root / "registry" / "last_training_run.json"
    if run_path.is_file():
        record = read_json(run_path)
        if record.get("status", "complete") == "complete":
            for version in record["versions"]:
                registry.card(version)
    return problems


Check = Callable[[Path], list[str]]
