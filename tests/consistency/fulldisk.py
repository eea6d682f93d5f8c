"""The full-disk targets' shared part: the roots, a step's spec, its run in a namespace, the checks.

For every step, `full_disk_driver.py` runs inside `unshare --user --map-root-user --mount`
(an unprivileged user's own namespace: the tmpfs is mounted there only), copies one root
(seeded once per target, or a copy of it changed outside the tmpfs) onto the tmpfs,
measures the step's need on that copy (its peak growth during a clean run), then on a fresh
copy leaves half of it free and runs the step through the CLI. Checked (`check`): exit 1
with one error line naming a path under the root and "no space left on device" (a
StorageFullError, no traceback): every step is seen to hit the full disk; the state every
reader of the fault suite sees is the old one (nothing half-written; for a step made of
steps that each commit on their own, `daily`: each reader the old or the clean run's state,
not all new); after the filler is removed the rerun succeeds, gives the clean run's state
and leaves no temp entry (nor any of the step's `absent` paths), and the step's `after`
checks hold on the healed root (`RAW_CHECKS`: no unlisted raw file).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from churn.config.settings import Settings
from churn.pipeline.steps import StepResult, step_training_set
from churn.pipeline.testing import TINY_YAML

from tests.consistency import faultsuite

RUNFILES = Path(os.environ.get("TEST_SRCDIR", "."), os.environ.get("TEST_WORKSPACE", "_main"))
MAIN = RUNFILES / "apps/ml_jobs/main.py"
DRIVER = RUNFILES / "tests/consistency/full_disk_driver.py"
TMPFS_MB = 64
SEEDED_TRAIN_ROWS = 3_000  # the seeded training set, so `train` learns other models than the bootstrap
# TINY_YAML with the root left as a placeholder, and a section or two more per step
BASE = TINY_YAML.replace("{root}", "<root>").format(users=faultsuite.USERS, days=faultsuite.DAYS)

ERROR = re.compile(r"^ml_jobs [a-z-]+: error: (\S+): no space left on device while writing it \(.* free there\); "
                   r"nothing was replaced: free space and rerun the step$")


def config(extra: str = "", generator: str = "") -> str:
    """The tiny world's YAML with `{root}` to fill in, `extra` sections and another generator."""
    text = BASE if not generator else "\n".join(
        f"generator: {{{generator}}}" if line.startswith("generator:") else line for line in BASE.splitlines()) + "\n"
    return (text + extra).replace("{", "{{").replace("}", "}}").replace("<root>", "{root}")


@dataclass(frozen=True)
class Step:
    """One command on a full disk: its argv (`{other}`: the seeded run's model that is not in
    production, `{production}`: the one that is), the readers of what it publishes, its
    config, the root it runs on (a key of the target's roots), `parts`: made of steps that
    commit one by one (each reader old or new), `absent`: paths the rerun must leave absent,
    `after`: checks of the healed root (names in `faultsuite.ROOT_CHECKS`, e.g. `RAW_CHECKS`)."""

    argv: tuple[str, ...]
    readers: tuple[str, ...]
    config: str = dataclasses.field(default_factory=config)
    root: str = "seeded"
    parts: bool = False
    absent: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


# for the steps that write raw data (generate, ingest, ingest-inbox, daily): after the rerun no
# raw file (part, users file, batch report) is left that the manifest neither lists nor keeps
RAW_CHECKS = ("no_unlisted_raw_file",)


def seed(tmp_path_factory: Any) -> Path:
    """The target's one bootstrapped root, its training set rebuilt from fewer rows (so that
    `train`, `labels` and `training-set` change what their readers see)."""
    root = faultsuite.seed(tmp_path_factory.mktemp("seeded") / "root")
    settings = faultsuite.settings_for(root)
    rebuilt = step_training_set(dataclasses.replace(
        settings, training=dataclasses.replace(settings.training, max_train_rows=SEEDED_TRAIN_ROWS)))
    assert rebuilt.exit_code == 0, rebuilt.message
    return root


def changed(root: Path, dest: Path, *changes: Callable[[Settings], StepResult]) -> Path:
    """A copy of `root` at `dest` (outside the tmpfs) after each of `changes` ran on it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root, dest, symlinks=True)
    for change in changes:
        result = change(faultsuite.settings_for(dest))
        assert result.exit_code == 0, result.message
    return dest


def other_version(seeded: Path) -> str:
    """The seeded training run's model that is not in production."""
    record = json.loads((seeded / "registry" / "last_training_run.json").read_text())
    production = faultsuite.production_state(seeded)
    return next(v for v in record["versions"] if v != production)


def _namespace_works(tmp: Path) -> None:
    """Fail (never skip) with unshare's own words if this host forbids the namespace."""
    tmp.mkdir()
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=1m none '{tmp}' && df -k '{tmp}'"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, f"cannot make a private tmpfs: {probe.stderr.strip()}"


def run(name: str, step: Step, roots: dict[str, Path], tmp_path: Path) -> dict[str, Any]:
    """The driver's run of `step` in a namespace of its own: its JSON (clean, full, rerun)."""
    _namespace_works(tmp_path / "probe")
    seeded = roots["seeded"]
    versions = {"{other}": other_version(seeded), "{production}": faultsuite.production_state(seeded) or ""}
    argv = [versions.get(a, a) for a in step.argv]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": name, "argv": argv, "readers": list(step.readers), "config": step.config,
                                "seeded": str(roots[step.root]), "mount": str(tmp_path / "tmpfs"),
                                "size_mb": TMPFS_MB, "main": str(MAIN), "configs": str(tmp_path),
                                "absent": list(step.absent), "after": list(step.after)}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, str(DRIVER), str(spec)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(name: str, step: Step, roots: dict[str, Path], tmp_path: Path) -> None:
    """Run `step` on a full disk and assert every rule of the module docstring."""
    out = run(name, step, roots, tmp_path)
    clean, full, rerun, old = out["clean"], out["full"], out["rerun"], out["old"]
    assert clean["rc"] == 0, clean["stderr"]
    new = ", ".join(r for r in step.readers if full["state"][r] != old[r])
    print(f"full disk {name}: needs {out['need'] / 1e3:.0f} kB, given {out['free_before'] / 1e3:.0f} kB free: "
          f"exit {full['rc']}{f' (committed before it: {new})' if new else ''}; rerun exit {rerun['rc']}")
    errors = [line for line in full["stderr"].splitlines() if " error: " in line]
    assert full["rc"] == 1 and "Traceback" not in full["stderr"], full["stderr"]
    assert len(errors) == 1 and ERROR.match(errors[0]), full["stderr"]
    named = Path(ERROR.match(errors[0]).group(1))
    assert named.is_relative_to(tmp_path / "tmpfs" / "root"), errors[0]
    if step.parts:
        for reader in step.readers:
            assert full["state"][reader] in (old[reader], clean["state"][reader]), f"{name}: {reader} is a mix"
        assert full["state"] != clean["state"], f"{name}: failed with everything committed"
    else:
        assert full["state"] == old, f"{name}: a reader sees a changed state after the full disk"
    assert rerun["rc"] == 0, rerun["stderr"]
    assert rerun["state"] == clean["state"] != old, f"{name}: the rerun did not give the clean run's state"
    assert not rerun["temps"], rerun["temps"]
    assert not rerun["present"], f"{name}: left after the rerun: {rerun['present']}"
    assert rerun["checks"] == {c: "ok" for c in step.after}, f"{name}: after the rerun: {rerun['checks']}"
