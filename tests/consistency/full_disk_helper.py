"""Child of full_disk_test.py, inside `unshare --user --map-root-user --mount`.

argv: SPEC.json MOUNTPOINT. Mounts a tmpfs of spec["size"] bytes, copies the starting root
onto it, fills it up to spec["slack"] free bytes, runs the command (it must fail with a
clear full-disk error), checks the state, frees the space, reruns (it must succeed), checks
again. Prints one JSON line: {"error": <the command's stderr>, "problems": [...]}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import faultkit as fk


def _fill(mount: Path, slack: int) -> Path:
    """A filler file taking all but `slack` bytes of the tmpfs."""
    filler = mount / "filler"
    st = os.statvfs(mount)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as fh:
        remaining = max(free - slack, 0)
        block = b"\0" * (1 << 20)
        while remaining > 0:
            n = fh.write(block[: min(len(block), remaining)])
            remaining -= n
    return filler


def _states(spec: dict, key: str) -> dict[str, fk.AreaState]:
    return {a: fk.AreaState(g, frozenset(f)) for a, (g, f) in spec[key].items()}


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    mount = Path(sys.argv[2])
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec['size']}", "tmpfs", str(mount)], check=True)
    root = mount / "root"
    fk.copy_root(Path(spec["start"]), root)
    config = fk.write_config(root)
    cli = fk.load_cli()
    before, after_clean = _states(spec, "before"), _states(spec, "after_clean")
    aliases, versions = set(spec["aliases"]), set(spec["versions"])
    filler = _fill(mount, spec["slack"])
    problems: list[str] = []
    run = fk.run_cli(cli, config, spec["argv"])
    error = run.stderr.strip()
    if run.exception is not None or run.code != 1:
        problems.append(f"expected exit 1, got {run.code} {run.exception!r}: {error[-1500:]}")
    lines = error.splitlines()
    if not lines or "no space left on device" not in lines[-1] or str(mount) not in lines[-1] or len(lines) > 3:
        problems.append(f"not one clear line naming a file on the full disk: {error[-1500:]!r}")
    # the complete old state: a failed command publishes nothing
    problems += fk.check_state(root, before, before, aliases, versions)
    problems += [f"temp entry left by the failed run: {p}" for p in fk.temp_entries(root)]
    filler.unlink()
    rerun = fk.run_cli(cli, config, spec["argv"])
    if rerun.code != spec["exit_code"]:
        problems.append(f"rerun after freeing space: exit {rerun.code} {rerun.exception!r} {rerun.stderr[-1500:]}")
    problems += [f"after the rerun: {p}" for p in fk.check_state(root, before, after_clean, aliases, versions)]
    problems += [f"temp entry after the rerun: {p}" for p in fk.temp_entries(root)]
    print(json.dumps({"error": lines[-1] if lines else "", "problems": problems}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
