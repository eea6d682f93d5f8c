"""A real full disk for every command: a small tmpfs in a user+mount namespace.

For each command of faultkit.SCENARIOS (FAULT_COMMANDS picks a subset) the starting root is
copied onto a tmpfs that a child process mounts inside `unshare --user --map-root-user
--mount` (so it works for non-root users too), a filler file leaves half the space the
command's clean run needs (none when it writes under 256 KiB), and the command runs there. Then: exit 1 with one line naming a
file on the tmpfs and "no space left on device", every reader sees the complete old state,
no temp file is left; after the filler is deleted the rerun succeeds and leaves no temp file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import faultkit as fk
from faultkit import cli, seeded  # noqa: F401 - the shared pytest fixtures
from churn.registry.registry import ModelRegistry

HELPER = Path(__file__).with_name("full_disk_helper.py")
SELECTED = [c for c in os.environ.get("FAULT_COMMANDS", ",".join(fk.SCENARIOS)).split(",") if c and c != "bootstrap"]


def _du(root: Path, links_once: bool = True) -> int:
    """Bytes of the files under `root` in 4 KiB pages (hard links once, as the tmpfs counts
    them; `links_once=False` for a copy, which does not keep the links)."""
    seen, total = set(), 0
    for current_dir, _, files in os.walk(root):
        for name in files:
            st = os.lstat(Path(current_dir) / name)
            if not links_once or st.st_ino not in seen:
                seen.add(st.st_ino)
                total += -(-st.st_size // 4096) * 4096
    return total


def test_namespaces_and_tmpfs_are_available():
    """The premise of the test; a machine without user namespaces fails here, loudly."""
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"unshare --user --map-root-user --mount: {probe.stderr}"


@pytest.mark.parametrize("command", SELECTED)
def test_full_disk(command, cli, seeded, tmp_path):
    scenario = fk.SCENARIOS[command]
    start = tmp_path / "start"
    fk.copy_root(seeded, start)
    config = fk.write_config(start)
    for argv in scenario.setup:
        assert fk.run_cli(cli, config, fk.resolve(argv, start)).code == 0, argv
    argv = fk.resolve(scenario.argv, start)
    clean = tmp_path / "clean"
    fk.copy_root(start, clean)
    run = fk.run_cli(cli, fk.write_config(clean), argv)
    assert run.code == scenario.exit_code, (run.stderr, run.exception)
    needed = max(_du(clean) - _du(start), 4096)
    registry = ModelRegistry(start)
    spec = {
        "start": str(start), "argv": argv, "exit_code": scenario.exit_code,
        "size": _du(start, links_once=False) + needed + 16 * 1024 * 1024, "slack": needed // 2 if needed > 256 * 1024 else 0,  # tiny outputs: no room at all
        "before": {a: [s.generation, sorted(s.files)] for a, s in fk.state(start).items()},
        "after_clean": {a: [s.generation, sorted(s.files)] for a, s in fk.state(clean).items()},
        "aliases": [registry.get_alias(), ModelRegistry(clean).get_alias()],
        "versions": registry.versions(),
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, str(HELPER),
                            str(spec_path), str(tmp_path / "mnt")], capture_output=True, text=True, env=env,
                           timeout=600)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"full disk {command}: {result['error']}")
    assert not result["problems"], result
    shutil.rmtree(tmp_path / "mnt", ignore_errors=True)
