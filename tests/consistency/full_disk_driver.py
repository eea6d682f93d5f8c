"""One step on a really full disk, run inside a private user + mount namespace (full_disk_test).

Started by the test as `unshare --user --map-root-user --mount python full_disk_driver.py SPEC`:
as the namespace's root it mounts a tmpfs that only this namespace sees, then

1. copies the seeded root onto it and runs the step there once (the ml_jobs CLI, a child
   process), sampling the tmpfs's used space every millisecond: the step's need is its peak
   growth, measured on the copy itself (a copy made elsewhere and compared would count hard
   links as copies);
2. on a fresh copy, fills the tmpfs with a filler file until less than that need is free,
   runs the step (it must fail), reads the state through the fault suite's readers;
3. removes the filler, reruns the step, reads the state and lists the temp entries left.

It prints one JSON line (what the test asserts on): exit codes, stderr, the states (the
readers' digests), need and free space. No assertion here: the test owns the verdicts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.consistency import faultsuite


def used(mount: Path) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def free(mount: Path) -> int:
    st = os.statvfs(mount)
    return st.f_bavail * st.f_frsize


def run_step(spec: dict[str, Any], root: Path, mount: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run the step's CLI on `root`; returns it and the peak growth of the tmpfs during the run."""
    config = Path(spec["configs"]) / f"{root.name}.yaml"  # beside the spec: not on the full tmpfs
    config.write_text(spec["config"].format(root=root))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    base = used(mount)
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], used(mount))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        proc = subprocess.run([sys.executable, spec["main"], "--config", str(config), *spec["argv"]], env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        done.set()
        sampler.join()
    config.unlink()
    return proc, peak[0] - base


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    mount = Path(spec["mount"])
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec['size_mb']}m", "none", str(mount)], check=True)
    seeded = Path(spec["seeded"])
    readers = faultsuite.STATE_READERS
    out: dict[str, Any] = {"step": spec["name"]}

    clean = mount / "clean"
    shutil.copytree(seeded, clean, symlinks=True)
    proc, need = run_step(spec, clean, mount)
    out["clean"] = {"rc": proc.returncode, "stderr": proc.stderr[-2000:],
                    "state": {r: readers[r](clean) for r in spec["readers"]}}
    out["need"] = need
    shutil.rmtree(clean)

    root = mount / "root"
    shutil.copytree(seeded, root, symlinks=True)
    out["old"] = {r: readers[r](root) for r in spec["readers"]}
    left = max(0, need // 2)  # clearly less than the step needs (the sampled peak may miss a spike)
    filler = mount / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(1, free(mount) - left))
    out["free_before"] = free(mount)
    proc, _ = run_step(spec, root, mount)
    out["full"] = {"rc": proc.returncode, "stderr": proc.stderr[-4000:],
                   "state": {r: readers[r](root) for r in spec["readers"]}}
    filler.unlink()
    proc, _ = run_step(spec, root, mount)
    out["rerun"] = {"rc": proc.returncode, "stderr": proc.stderr[-2000:],
                    "state": {r: readers[r](root) for r in spec["readers"]},
                    "temps": [str(p.relative_to(root)) for p in faultsuite.temps(root)]}
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
