"""One step on a really full disk, run inside a private user + mount namespace (full_disk_test).

Started by the test as `unshare --user --map-root-user --mount python full_disk_driver.py SPEC`:
as the namespace's root it mounts a tmpfs that only this namespace sees, then

1. copies the seeded root onto it and runs the step there once (the ml_jobs CLI, a child
   process), sampling the tmpfs's used space every millisecond and, inside the child, at
   every storage point (`churn.storage.faults`: before each write, rename, link and removal,
   i.e. with every temp written and every scratch file still there): the step's need is its
   peak growth, measured on the copy itself (a copy made elsewhere and compared would count
   hard links as copies). The 1 ms sampler alone missed steps shorter than its period
   (validate measured 0 kB);
2. on a fresh copy, fills the tmpfs with a filler file until less than that need is free,
   runs the step (it must fail), reads the state through the fault suite's readers;
3. removes the filler, reruns the step, reads the state and lists the temp entries left
   (and which of the spec's `absent` paths, e.g. merged shard folders, are still there), and
   runs the spec's `after` checks (`faultsuite.ROOT_CHECKS`) on the healed root.

It prints one JSON line (what the test asserts on): exit codes, stderr, the states (the
readers' digests), need and free space. No assertion here: the test owns the verdicts.
"""

from __future__ import annotations

import json
import os
import runpy
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


def measure(mount: Path, peak_file: Path, main_py: str, argv: list[str]) -> None:
    """The measuring child: the ml_jobs CLI run as `__main__` with a storage hook that samples
    the tmpfs's used space at every storage point; the peak is written to `peak_file` at exit."""
    from churn.storage import faults

    peak = [used(mount)]

    def sample(op: str, path: Path) -> None:
        peak[0] = max(peak[0], used(mount))

    sys.argv = [main_py, *argv]
    try:
        with faults.injecting(sample):
            runpy.run_path(main_py, run_name="__main__")
    finally:
        peak[0] = max(peak[0], used(mount))
        peak_file.write_text(str(peak[0]))


def run_step(spec: dict[str, Any], root: Path, mount: Path,
             measuring: bool = False) -> tuple[subprocess.CompletedProcess, int]:
    """Run the step's CLI on `root`; returns it and the peak growth of the tmpfs during the run
    (`measuring`: also sampled at every storage point, inside the child)."""
    config = Path(spec["configs"]) / f"{root.name}.yaml"  # beside the spec: not on the full tmpfs
    config.write_text(spec["config"].format(root=root))
    peak_file = Path(spec["configs"]) / f"{root.name}.peak"
    cli = [spec["main"], "--config", str(config), *spec["argv"]]
    if measuring:
        cli = [__file__, "--measure", str(mount), str(peak_file), *cli]
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
        proc = subprocess.run([sys.executable, *cli], env=env, capture_output=True, text=True, timeout=600)
    finally:
        done.set()
        sampler.join()
    config.unlink()
    if measuring:
        peak[0] = max(peak[0], int(peak_file.read_text()))
        peak_file.unlink()
    return proc, peak[0] - base


def _check(name: str, root: Path) -> str:
    """"ok", or what the check found (its AssertionError): the test owns the verdict."""
    try:
        faultsuite.ROOT_CHECKS[name](root)
    except AssertionError as exc:
        return f"failed: {exc}"
    return "ok"


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
    proc, need = run_step(spec, clean, mount, measuring=True)
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
                    "temps": [str(p.relative_to(root)) for p in faultsuite.temps(root)],
                    "present": [p for p in spec.get("absent", []) if (root / p).exists()],
                    "checks": {c: _check(c, root) for c in spec.get("after", [])}}
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--measure":  # the CLI exits through SystemExit, with its own code
        sys.exit(measure(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5:]))
    sys.exit(main(sys.argv[1]))
