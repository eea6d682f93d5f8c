"""Each step on a really full disk: a private tmpfs, less free space than the step needs.

For every step below, `full_disk_driver.py` runs inside `unshare --user --map-root-user
--mount` (an unprivileged user's own namespace: the tmpfs is mounted there only), copies one
seeded root onto the tmpfs, measures the step's need on that copy (its peak growth during a
clean run), then on a fresh copy leaves half of it free and runs the step through the CLI.
Checked here: exit 1 with one error line naming a path under the root and "no space left on
device" (a StorageFullError, no traceback); the state every reader of the fault suite sees is
the old one (nothing half-written); after the filler is removed the rerun succeeds, gives
the clean run's state and leaves no temp entry.

If the namespace cannot be made (a host or sandbox that forbids user namespaces), the test
fails with unshare's exact error: CI runs as an unprivileged user on a host that allows them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from churn.pipeline.steps import step_generate_next, step_ingest_inbox, step_training_set
from churn.pipeline.testing import TINY_YAML
from churn.raw.store import read_events, read_manifest
from churn.storage.paths import DataPaths

from tests.consistency import faultsuite

RUNFILES = Path(os.environ.get("TEST_SRCDIR", "."), os.environ.get("TEST_WORKSPACE", "_main"))
MAIN = RUNFILES / "apps/ml_jobs/main.py"
DRIVER = RUNFILES / "tests/consistency/full_disk_driver.py"
TMPFS_MB = 64
SEEDED_TRAIN_ROWS = 3_000  # the seeded training set, so `train` learns other models than the bootstrap
# TINY_YAML with the root left as a placeholder, and a section or two more per step
BASE = TINY_YAML.replace("{root}", "<root>").format(users=faultsuite.USERS, days=faultsuite.DAYS)


def config(extra: str = "", generator: str = "") -> str:
    text = BASE if not generator else "\n".join(
        f"generator: {{{generator}}}" if line.startswith("generator:") else line for line in BASE.splitlines()) + "\n"
    return (text + extra).replace("{", "{{").replace("}", "}}").replace("<root>", "{root}")


ERROR = re.compile(r"^ml_jobs [a-z-]+: error: (\S+): no space left on device while writing it \(.* free there\); "
                   r"nothing was replaced: free space and rerun the step$")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")
    settings = faultsuite.settings_for(root)
    rebuilt = step_training_set(dataclasses.replace(
        settings, training=dataclasses.replace(settings.training, max_train_rows=SEEDED_TRAIN_ROWS)))
    assert rebuilt.exit_code == 0, rebuilt.message
    return root


@pytest.fixture(scope="module")
def events_file(seeded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """New events of the seeded users on the newest day (their ids moved past every stored id)."""
    paths = DataPaths.from_root(seeded)
    newest = read_manifest(paths).dates[-1]
    events = read_events(paths, dates=[newest])
    events["event_id"] += 10**12
    path = tmp_path_factory.mktemp("export") / "events.csv"
    events.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def changed(seeded: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The roots of the steps that need new raw data first (made once, outside the tmpfs):
    validate over another world (not validated yet), update after one new day was ingested."""
    roots = {}
    for step, changes in (("validate", [faultsuite.another_world]),
                          ("update", [lambda s: step_generate_next(s, 1), step_ingest_inbox])):
        root = tmp_path_factory.mktemp(f"changed-{step}") / "root"
        shutil.copytree(seeded, root, symlinks=True)
        for change in changes:
            result = change(faultsuite.settings_for(root))
            assert result.exit_code == 0, result.message
        roots[step] = root
    return roots


def _steps(events_file: Path) -> dict[str, tuple[list[str], list[str], str]]:
    """name -> (ml_jobs argv, the readers of its outputs, config); each run changes what its
    readers see (another world, fewer training rows, a top-K of 10, a 7-day recent window)."""
    return {
        "generate": (["generate"], ["raw"], config(generator="n_users: 60, days: 20, seed: 7")),
        "labels": (["labels"], ["training_set"], config("training: {max_train_rows: 2000}\n")),
        "train": (["train"], ["training"], config()),
        "promote": (["promote", "--version", "{other}", "--force", "--reason", "full disk"], ["production"], config()),
        "batch-score": (["batch-score", "--top-k", "10"], ["predictions"], config()),
        "drift-check": (["drift-check"], ["drift"], config("monitoring: {recent_days: 7}\n")),
        "ingest": (["ingest", "--events", str(events_file)], ["raw"], config()),
        "validate": (["validate"], ["validation"], config()),  # on the `changed` root
        "update": (["update"], ["derived"], config()),  # on the `changed` root
    }


def _namespace_works(tmp: Path) -> None:
    """Fail (never skip) with unshare's own words if this host forbids the namespace."""
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=1m none '{tmp}' && df -k '{tmp}'"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, f"cannot make a private tmpfs: {probe.stderr.strip()}"


@pytest.mark.parametrize("step", ["generate", "labels", "train", "promote", "batch-score", "drift-check",
                                  "ingest", "validate", "update"])
def test_a_full_disk_fails_cleanly_and_the_rerun_recovers(step: str, seeded: Path, changed: dict[str, Path],
                                                          events_file: Path, tmp_path: Path) -> None:
    (tmp_path / "probe").mkdir()
    _namespace_works(tmp_path / "probe")
    argv, readers, config = _steps(events_file)[step]
    if "{other}" in argv:
        record = json.loads((seeded / "registry" / "last_training_run.json").read_text())
        production = faultsuite.production_state(seeded)
        argv = [a.replace("{other}", next(v for v in record["versions"] if v != production)) for a in argv]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": step, "argv": argv, "readers": readers, "config": config,
                                "seeded": str(changed.get(step, seeded)), "mount": str(tmp_path / "tmpfs"), "size_mb": TMPFS_MB,
                                "main": str(MAIN), "configs": str(tmp_path)}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, str(DRIVER), str(spec)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    clean, full, rerun = out["clean"], out["full"], out["rerun"]
    assert clean["rc"] == 0, clean["stderr"]
    print(f"full disk {step}: needs {out['need'] / 1e3:.0f} kB, given {out['free_before'] / 1e3:.0f} kB free: "
          f"exit {full['rc']}; rerun exit {rerun['rc']}")
    errors = [line for line in full["stderr"].splitlines() if " error: " in line]
    assert full["rc"] == 1 and "Traceback" not in full["stderr"], full["stderr"]
    assert len(errors) == 1 and ERROR.match(errors[0]), full["stderr"]
    named = Path(ERROR.match(errors[0]).group(1))
    assert named.is_relative_to(tmp_path / "tmpfs" / "root"), errors[0]
    assert full["state"] == out["old"], f"{step}: a reader sees a changed state after the full disk"
    assert rerun["rc"] == 0, rerun["stderr"]
    assert rerun["state"] == clean["state"] != out["old"], f"{step}: the rerun did not give the clean run's state"
    assert not rerun["temps"], rerun["temps"]
