"""A disk that fills up during a daily cycle at scale (`pipeline_bench --fill-disk`, #16).

The fault suite injects ENOSPC at every write of a 200-user root and `full_disk_test` fills a
small tmpfs; neither says what happens when a real filesystem fills up in the middle of a
1,000,000-user update, whose writes are the day files of a million users. Here, after the
bench's daily cycle (whose disk growth is the need, sampled like the peak RSS), the world
goes on by one day, a filler file takes all but half of that need, and the daily cycle runs
again:

1. it must fail with one error line naming a path under the data root (no traceback);
2. every area must still be a complete generation (the pointers the readers follow, and
   every file the MANIFEST of each lists, with its size; the files written after the trial
   began are hashed against it);
3. with the filler removed, the same cycle must succeed and leave no temp file.

The filler is only ever made on a filesystem of its own (`--root` must be a mount point, e.g.
a loop-mounted ext4 image), never on the disk the machine runs on.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any, Callable

from bench.rss import PeakSampler
from churn.errors import ChurnError
from churn.raw.store import manifest_path
from churn.storage.paths import DataPaths
from churn.storage.files import GENERATIONS_DIR, MANIFEST_NAME, TEMP_PREFIX, file_digest, load_manifest

FILLER_NAME = "disk-full-filler"


def used_bytes(mount: Path) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def peak_disk_use(mount: Path) -> PeakSampler:
    """`growth` of the `with` block: the largest growth of the used bytes of `mount` while it
    ran, sampled as `bench.rss.PeakRss` samples memory: the block's disk need."""
    return PeakSampler(lambda: used_bytes(mount))


def require_own_filesystem(scratch: Path) -> None:
    """Refuse to fill anything but a filesystem made for it (a mount point of its own)."""
    if not os.path.ismount(scratch):
        raise SystemExit(f"--fill-disk: {scratch} is not a mount point; mount a filesystem of its own there "
                         "(e.g. a loop-mounted ext4 image), the filler takes all its free space")


def _held_back(mount: Path) -> int:
    """Bytes ext4 keeps from every writer, root too (`reserved_clusters`, at least 16 MB on a
    small disk: its own metadata's reserve), which statvfs still counts as free; 0 elsewhere."""
    dev = os.stat(mount).st_dev
    name = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().name
    reserve = Path("/sys/fs/ext4") / name / "reserved_clusters"
    return int(reserve.read_text()) * os.statvfs(mount).f_frsize if reserve.is_file() else 0


def free_bytes(mount: Path) -> int:
    """The bytes this process may still write there: root may use the blocks a filesystem
    reserves for root (ext4's 5%), nobody its metadata reserve."""
    st = os.statvfs(mount)
    return max((st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize - _held_back(mount), 0)


def fill(filler: Path, leave: int) -> None:
    """Grow `filler` until its filesystem has `leave` bytes free (for this process) or less.

    In steps short of the gap: one allocation of all of it fails (ENOSPC), since the file's
    own extent tree needs blocks too."""
    mount = filler.parent
    with open(filler, "ab") as fh:
        while (gap := free_bytes(mount) - leave) > 4096:
            try:
                os.posix_fallocate(fh.fileno(), os.fstat(fh.fileno()).st_size, max(gap - (gap >> 6), 4096))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break


def _area_links(root: Path) -> dict[str, str]:
    """{area symlink under the root: its target}: the generations the readers follow."""
    return {str(p.relative_to(root)): os.readlink(p) for p in root.rglob("*")
            if p.is_symlink() and GENERATIONS_DIR not in p.parts}


def pointers(root: Path) -> dict[str, str]:
    """Every pointer a reader follows: the area symlinks, and the raw data's commit point
    (`raw/manifest.json`, replaced last by a batch: its digest)."""
    raw = manifest_path(DataPaths.from_root(root))
    return _area_links(root) | ({str(raw.relative_to(root)): file_digest(raw)} if raw.is_file() else {})


def incomplete(root: Path, since: float) -> list[str]:
    """What is wrong with the generations the area links lead to (empty: all complete)."""
    problems = []
    for link in _area_links(root):
        generation = (root / link).resolve()
        if not (generation / MANIFEST_NAME).is_file():
            continue  # an area of an older root, read as it is (not a generation)
        for rel, entry in load_manifest(generation / MANIFEST_NAME)["files"].items():
            path = generation / rel
            if not path.is_file() or path.stat().st_size != entry["size"]:
                problems.append(f"{path}: missing or not {entry['size']} bytes")
            elif path.stat().st_mtime > since and file_digest(path) != entry["sha256"]:
                problems.append(f"{path}: sha256 differs from its MANIFEST")
    return problems


def temps(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(f"{TEMP_PREFIX}*")]


def _attempt(cycle: Callable[[], Any]) -> tuple[str | None, float]:
    """Run the cycle; the first line of the error it stops with (None: it succeeded)."""
    t0 = time.perf_counter()
    try:
        cycle()
    except (ChurnError, SystemExit) as exc:  # SystemExit: a step's failing result (pipeline_scale._ok)
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__, time.perf_counter() - t0
    return None, time.perf_counter() - t0


def trial(root: Path, need: int, next_day: Callable[[], Any], cycle: Callable[[], Any]) -> dict[str, Any]:
    """Steps 1-3 of the module docstring; the figures and verdicts for the bench's table."""
    next_day()
    mount, since = root.parent, time.time()
    before = pointers(root)
    filler = mount / FILLER_NAME
    try:
        fill(filler, need // 2)
        free_then = free_bytes(mount)
        error, failed_s = _attempt(cycle)
        after_failure = pointers(root)
        problems = incomplete(root, since)
    finally:
        filler.unlink(missing_ok=True)
    rerun_error, rerun_s = _attempt(cycle)
    return {"need_mb": need / 2**20, "free_mb": free_then / 2**20, "error": error, "failed_s": failed_s,
            "names_root_path": bool(error) and str(root) in error,
            "areas_switched": sorted(k for k in after_failure if after_failure[k] != before.get(k)),
            "incomplete": problems[:5], "rerun_error": rerun_error, "rerun_s": rerun_s,
            "temps_left": temps(root)[:5]}


def verdict(result: dict[str, Any]) -> str:
    """One line: did the full disk behave (fail cleanly, stay complete, recover)?"""
    ok = (result["error"] is not None and result["names_root_path"] and not result["incomplete"]
          and result["rerun_error"] is None and not result["temps_left"])
    return (f"full disk ({result['free_mb']:.1f} MB free of a {result['need_mb']:.1f} MB need): "
            f"{'OK' if ok else 'FAILED'}: failed in {result['failed_s']:.0f}s with {result['error']!r}; "
            f"areas switched before it: {result['areas_switched'] or 'none'}; incomplete: "
            f"{result['incomplete'] or 'none'}; rerun: {result['rerun_error'] or 'ok'} in {result['rerun_s']:.0f}s; "
            f"temps left: {result['temps_left'] or 'none'}")
