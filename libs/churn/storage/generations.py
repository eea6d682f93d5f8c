"""Generations: the outputs of one step become visible together, or not at all.

Why: a step that writes several files (drift's JSON and HTML, generate's users and events)
replaced them one by one, so a kill in between left a mix (a new JSON beside the old HTML)
that every reader took for one state. Here a step writes all its outputs into a fresh
directory, and one pointer is switched last (docs/consistency.md, "Generations"):

    <root>/.generations/<area>/<id>/...      one published generation (never changed again)
    <root>/.generations/<area>/<id>/MANIFEST sha256 and size of each file, the step's inputs
    <root>/<area> -> ../.generations/<area>/<id>   relative symlink, replaced by one rename

`publish` yields a locked temp directory (`.tmp-*`, see `files.locked_temp`); when the block
ends without an exception it writes the MANIFEST last, renames the directory to its id,
switches the symlink (a temp symlink renamed over it, then an fsync of the folder) and
removes generations older than the previous one (a reader may still be bound to it) and the
leftovers of dead runs; a live writer's directory (its flock held) is never removed.

Readers call `current` once and keep the directory it returns for the whole run (bound to
one generation even if the pointer moves meanwhile), and read through `files.read_verified`
(the sha256 of the bytes actually read, compared with the MANIFEST).

Migration: a plain directory `<root>/<area>` (a root from before generations) is read as
generation 0; the first `publish` moves it into `.generations/<area>/` and points at it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from churn.errors import DataError
from churn.storage import faults
from churn.storage.files import (
    GENERATIONS_DIR,
    MANIFEST_NAME,
    TEMP_PREFIX,
    atomic_write_json,
    digest_and_size,
    disk_full_error,
    fsync_dir,
    is_disk_full,
    is_temp_name,
    load_manifest,
    locked_temp,
    mkdirs,
    remove_path,
)
from churn.storage.filelock import FileLock

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
LEGACY_ID = "00000000000000000000-legacy"  # sorts before every id `publish` makes
LOCK_TIMEOUT_S = 600.0


def link_path(root: str | Path, area: str) -> Path:
    """`<root>/<area>`: the pointer readers open (`area` may hold a slash: monitoring/drift)."""
    return Path(root) / area


def store_dir(root: str | Path, area: str) -> Path:
    """`<root>/.generations/<area>`: every generation of the area."""
    return Path(root) / GENERATIONS_DIR / area


def _lock(root: str | Path, area: str) -> FileLock:
    """One publisher of an area at a time switches the pointer and prunes."""
    return FileLock(Path(root) / "locks" / f"generations-{area.split('/')[0]}.lock", timeout=LOCK_TIMEOUT_S)


def _new_id() -> str:
    """Sortable by creation time (the newest generation sorts last), unique across writers."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _committed(root: str | Path, area: str) -> list[Path]:
    """The area's renamed-into-place generations, oldest first (temp dirs excluded)."""
    store = store_dir(root, area)
    if not store.is_dir():
        return []
    return sorted((p for p in store.iterdir() if p.is_dir() and not is_temp_name(p.name)), key=lambda p: p.name)


def current(root: str | Path, area: str) -> Path | None:
    """The directory of the area's current generation, resolved once; None if there is none.

    Why resolved: a reader that kept `<root>/<area>` would follow a switch in the middle of its
    run and mix two generations; the resolved directory stays complete and unchanged (the
    previous generation is kept by the next publish). A plain directory (a root from before
    generations) is generation 0. A missing pointer while generations exist (only a crash in
    the middle of the migration leaves that) is the newest complete one.
    """
    link = link_path(root, area)
    if link.is_symlink():
        target = Path(os.path.realpath(link))
        return target if target.is_dir() else None
    if link.is_dir():
        return link
    done = [g for g in _committed(root, area) if (g / MANIFEST_NAME).is_file() or g.name == LEGACY_ID]
    return done[-1] if done else None


def read_manifest(generation: Path) -> dict[str, Any]:
    """The MANIFEST of one generation (DataError naming it if missing or malformed)."""
    manifest = generation / MANIFEST_NAME
    if not manifest.is_file():
        raise DataError(f"{manifest}: no manifest (not a published generation)")
    return load_manifest(manifest)


def _digest_and_sync(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, after an fsync (its bytes are durable before the switch)."""
    return digest_and_size(path, sync=True)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
                  and not any(is_temp_name(part) for part in p.relative_to(directory).parts))


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link a published file into a generation being written (a copy across filesystems
    or where links are refused): a fault point."""
    mkdirs(dst.parent)
    faults.point("link", dst)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)


def _carry(previous: Path, new: Path, wanted: Callable[[str], bool] | None = None) -> dict[str, dict[str, Any]]:
    """Hard-link (copy across filesystems) into `new` every file of `previous` it lacks
    (and `wanted` accepts, by its relative path).

    For areas that accumulate (one drift report per day, the day files of the update's
    tables): the new generation holds the old files and the new ones. Returns the previous
    MANIFEST's entries of the carried files, so they are not hashed again: publishing costs
    the bytes the step wrote, not the history. A file rewritten in place since its publish
    keeps the entry of what was published (before, one of another size was hashed again, so
    the next publish certified the changed bytes): its readers still refuse it
    (`churn.storage.verified`) until a step rewrites it.
    """
    known: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(DataError):
        known = dict(read_manifest(previous).get("files", {}))
    carried: dict[str, dict[str, Any]] = {}
    for src in _files(previous):
        rel = src.relative_to(previous).as_posix()
        dst = new / rel
        if dst.exists() or (wanted is not None and not wanted(rel)):
            continue
        link_or_copy(src, dst)
        if rel in known:  # what was published, also for a file changed since: its readers refuse it
            carried[rel] = known[rel]
    return carried


def write_manifest(generation: Path, area: str, inputs: Mapping[str, Any],
                   known: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write `generation`/MANIFEST (the one writer of the format; `files.load_manifest` reads it).

    `files`: {relative path: {"sha256", "size"}} of every file in the generation; `inputs`:
    what the step read (name -> digest or version), so a reader can tell stale outputs.
    """
    entries: dict[str, dict[str, Any]] = {}
    for f in _files(generation):
        rel = f.relative_to(generation).as_posix()
        if known and rel in known:
            entries[rel] = dict(known[rel])
            continue
        digest, size = _digest_and_sync(f)
        entries[rel] = {"sha256": digest, "size": size}
    doc = {"format": MANIFEST_FORMAT, "area": area, "id": generation.name,
           "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "files": entries, "inputs": dict(inputs)}
    atomic_write_json(generation / MANIFEST_NAME, doc)
    return doc


def _switch(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically: a temp symlink renamed over it, then fsync."""
    mkdirs(link.parent)
    rel = os.path.relpath(target, link.parent)
    tmp = link.parent / f"{TEMP_PREFIX}{link.name}-{uuid.uuid4().hex[:12]}"
    faults.point("symlink", tmp)
    os.symlink(rel, tmp)
    try:
        faults.point("rename", link)
        os.replace(tmp, link)
    except Exception:  # not after a (simulated) crash: a dead process cleans nothing
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(link.parent)


def _remove_dead_link_temps(link: Path) -> None:
    """Temp symlinks of the area's pointer left by a publisher that died.

    A symlink cannot be flock()ed (the sweep waits a minute for those); but every publisher
    makes its temp symlink under the area lock, which we hold: any one found is a dead one's.
    """
    if link.parent.is_dir():
        for tmp in link.parent.glob(f"{TEMP_PREFIX}{link.name}-*"):
            if tmp.is_symlink():
                remove_path(tmp)


def _migrate(root: str | Path, area: str) -> None:
    """Move a plain `<root>/<area>` directory into the store as generation 0 and point at it.

    Between the two renames the pointer is missing; `current` then finds the legacy
    generation, and the next `publish` makes the pointer.
    """
    link = link_path(root, area)
    if link.is_symlink() or not link.is_dir():
        return
    legacy = store_dir(root, area) / LEGACY_ID
    mkdirs(legacy.parent)
    faults.point("rename", legacy)
    os.rename(link, legacy)
    fsync_dir(link.parent)
    fsync_dir(legacy.parent)
    _switch(link, legacy)


def _unheld(path: Path) -> bool:
    """Nobody holds the directory's flock: its writer is dead or done (files' sweep rule)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def prune(root: str | Path, area: str, keep: Iterable[Path] = ()) -> list[Path]:
    """Remove the area's generations except the current one, `keep`, and live writers' ones.

    Also removes dead runs' temp directories and generations renamed but never switched to (a
    crash between the rename and the switch). Returns what was removed.
    """
    store = store_dir(root, area)
    if not store.is_dir():
        return []
    now = current(root, area)
    kept = {Path(os.path.realpath(p)) for p in [*keep, *([now] if now else [])]}
    removed = []
    for entry in sorted(store.iterdir()):
        if Path(os.path.realpath(entry)) in kept or not entry.is_dir() or not _unheld(entry):
            continue
        remove_path(entry)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def publish(root: str | Path, area: str, inputs: Mapping[str, Any] | None = None,
            carry: bool | Callable[[str], bool] = False,
            check: Callable[[Path | None], None] | None = None) -> Iterator[Path]:
    """Yield a fresh directory for the step's outputs; publish them together when the block ends.

    `inputs`: the digests (or versions) of what the step read, recorded in the MANIFEST.
    `carry`: the new generation also holds the current one's files that the step did not
    write (areas that accumulate, e.g. one drift report per day); a function of the relative
    path carries only the files it accepts (the update drops the days it recomputed to no
    rows). `check(previous)`: called under the area lock with the generation about to be
    replaced, before anything is written; it raises to refuse (a step whose outputs were
    computed from another generation). On an exception nothing is
    visible and the directory is removed; a full disk is one error naming the area.
    """
    link = link_path(root, area)
    store = store_dir(root, area)
    tmp, fd = locked_temp(store, "generation", directory=True)
    try:
        try:
            yield tmp
            with _lock(root, area):
                _remove_dead_link_temps(link)
                _migrate(root, area)
                previous = current(root, area)
                if check is not None:
                    check(previous)
                wanted = carry if callable(carry) else None
                known = _carry(previous, tmp, wanted) if carry and previous is not None else {}
                write_manifest(tmp, area, inputs or {}, known)
                final = store / _new_id()
                faults.point("rename", final)
                os.rename(tmp, final)
                fsync_dir(store)
                try:
                    _switch(link, final)
                except Exception:
                    remove_path(final)  # never pointed at: nobody reads it
                    raise
                try:  # the switch took effect: a failed clean-up must not fail the step
                    prune(root, area, keep=[previous] if previous is not None else [])
                except OSError as exc:
                    log.warning("%s: old generations not removed (%s); the next publish retries", store, exc)
        except BaseException as exc:
            if not isinstance(exc, faults.SimulatedCrash):
                with contextlib.suppress(OSError):
                    remove_path(tmp)
            if is_disk_full(exc):
                raise disk_full_error(link, exc) from None
            raise
    finally:
        os.close(fd)

