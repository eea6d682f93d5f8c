"""Generations: the outputs of one step become visible together, or not at all.

Every step publishes its outputs as one *area* (a directory such as `features/` or
`predictions/2025-04-30/`) through `publish`:

    <root>/.generations/<area>/<generation id>/   immutable: the files + MANIFEST
    <root>/<area> -> .generations/<area>/<id>     a relative symlink, switched last

The step writes into a locked staging directory; at commit the manifest (every file's sha256
and size, the digests of the inputs the step read, the step) is written, the directory is
renamed to its generation id, and the symlink is replaced by a rename: one atomic switch. A
crash before it leaves the old generation current (the staging directory is removed by the
next run, see `files.sweep_dead_temps`); after it, the new one is complete. Readers resolve
the symlink once (`current`) and read every file of one generation; `read_parquet` and
`read_json` check each file's bytes against the manifest, so what is parsed is what the step
published. Stale outputs show in the recorded input digests (`stale_inputs`).

`merge=True` (an incremental step such as `update`, many writers of one area such as scoring
shards) starts the staging directory as a copy of the current generation made of hard links
(no bytes copied, no hashing: the manifest entries are reused), so the step reads and changes
the area in place: it replaces files (always through `files.atomic_*`, never writing into an
existing file, which the previous generation shares) and deletes files. At the commit, under
the area's lock, what another writer committed meanwhile is merged in: a file this step did
not touch takes the newest committed version (or its removal), a file it wrote or removed
keeps its change. So concurrent writers never lose each other's files. Old generations are removed after `KEEP` newer ones
exist and `MIN_AGE_S` has passed (a reader that resolved one a moment ago still finds it).

Details and the failure analysis: docs/consistency.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from churn.errors import LockTimeout
from churn.storage import faults
from churn.storage.files import (
    GENERATIONS_DIR,
    MANIFEST_NAME,
    TEMP_PREFIX,
    DataError,
    is_temp_name,
    atomic_write_json,
    fsync_dir,
    locked_temp,
    mkdirs,
    naming_disk_full,
    remove_path,
    sweep_dead_temps,
)
from churn.storage.filelock import FileLock
from churn.storage.paths import DataPaths

log = logging.getLogger(__name__)

UNMANAGED = "unmanaged"
KEEP = 3
MIN_AGE_S = 300.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Generation:
    """One published (or, for data roots from before generations, unmanaged) state of an area."""

    area: str
    id: str
    dir: Path
    manifest: dict[str, Any]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self.manifest.get("files", {}))

    @property
    def digest(self) -> str:
        """One sha256 over every file's name and digest: what downstream records as its input."""
        return str(self.manifest.get("digest") or files_digest(self.files))

    @property
    def inputs(self) -> dict[str, Any]:
        return dict(self.manifest.get("inputs", {}))

    @property
    def managed(self) -> bool:
        return self.id != UNMANAGED

    def path(self, name: str) -> Path:
        return self.dir / name

    def ref(self) -> dict[str, str]:
        """How an output records this generation as its input."""
        return {"generation": self.id, "digest": self.digest}

    def verify(self) -> list[str]:
        """Problems of this generation (missing, extra or changed files); [] when intact."""
        problems = []
        for name, entry in self.files.items():
            path = self.dir / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif file_sha256(path) != entry.get("sha256"):
                problems.append(f"{path}: changed since published")
        extra = set(_walk_files(self.dir)) - set(self.files)
        problems += [f"{self.dir / name}: not in the manifest" for name in sorted(extra)]
        return problems


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def files_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 over `name\\0sha256\\n` lines in name order (renaming a file changes it too)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode("utf-8") + b"\0" + str(files[name]["sha256"]).encode("ascii") + b"\n")
    return h.hexdigest()


def _walk_files(directory: Path) -> list[str]:
    """Relative names of the files under `directory` (not the manifest, not temp entries)."""
    out = []
    for current, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not is_temp_name(d)]
        here = Path(current)
        for name in files:
            if name == MANIFEST_NAME or is_temp_name(name):
                continue
            out.append((here / name).relative_to(directory).as_posix())
    return sorted(out)


def generations_dir(root: Path, area: str) -> Path:
    return Path(root) / GENERATIONS_DIR / area


def _check_area(area: str) -> str:
    parts = Path(area).parts
    if not parts or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or Path(area).is_absolute():
        raise ValueError(f"invalid area name {area!r}")
    return area


def current(root: str | Path, area: str) -> Generation | None:
    """The area's current generation, resolved once (None if it was never published)."""
    link = Path(root) / _check_area(area)
    if link.is_symlink():
        target = Path(os.path.realpath(link))
        if not (target / MANIFEST_NAME).is_file():
            raise DataError(f"{link}: points at {target}, which has no manifest "
                            "(removed by hand?): rerun the step that writes it")
    return generation_at(link, area)


def generation_at(directory: Path, area: str) -> Generation | None:
    """The generation in `directory` (a generation directory or a link to one): its MANIFEST;
    for a plain directory (a data root from before generations, or files put there by hand)
    a manifest computed from the files there; None if there is nothing."""
    target = Path(os.path.realpath(directory))
    manifest_path = target / MANIFEST_NAME
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{manifest_path}: cannot read the generation manifest ({exc})") from exc
        return Generation(area, str(manifest.get("generation", target.name)), target, manifest)
    if not target.is_dir():
        return None
    files = {name: {"sha256": file_sha256(target / name), "bytes": (target / name).stat().st_size}
             for name in _walk_files(target)}
    if not files:
        return None
    return Generation(area, UNMANAGED, target, {"area": area, "generation": UNMANAGED, "files": files,
                                                "digest": files_digest(files), "inputs": {}})


def require(root: str | Path, area: str, producer: str) -> Generation:
    """The current generation of `area`, or a DataError naming it and the command that makes it."""
    gen = current(root, area)
    if gen is None:
        raise DataError(f"{Path(root) / area}: not found (produce it with `ml_jobs {producer}`)")
    return gen


def stale_inputs(gen: Generation, upstream: Mapping[str, Generation]) -> list[str]:
    """Which recorded inputs of `gen` differ from the current `upstream` generations.

    Unmanaged generations (no record) are never called stale: nothing says they are.
    """
    stale = []
    for name, up in upstream.items():
        recorded = gen.inputs.get(name)
        if gen.managed and up.managed and isinstance(recorded, Mapping) \
                and recorded.get("digest") != up.digest:
            stale.append(f"{gen.area}/ was built from {name}/ generation {recorded.get('generation')}, "
                         f"but {name}/ is now {up.id}")
    return stale


def require_fresh(gen: Generation, upstream: Mapping[str, Generation], producer: str) -> Generation:
    """`gen` if built from the current `upstream`; else a DataError saying what to rerun."""
    stale = stale_inputs(gen, upstream)
    if stale:
        raise DataError(f"{gen.dir}: stale: {'; '.join(stale)} (rerun `ml_jobs {producer}`)")
    return gen


@dataclass
class Publication:
    """A step's outputs under construction: write into `dir` (or through `paths`)."""

    area: str
    step: str
    dir: Path
    paths: DataPaths
    inputs: dict[str, Any] = field(default_factory=dict)
    generation: Generation | None = None
    # merge=True: which files the new generation keeps of those it did not write (default: all)
    carry: Callable[[str], bool] = lambda name: True
    # merge=True: the generation the staging directory started from, and the inode of each
    # file as seeded (a file still on that inode was not touched by the step)
    base: Generation | None = None
    seeded: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """Where to write output `name` (sub-directories are created)."""
        target = self.dir / name
        mkdirs(target.parent)
        return target

    def add_input(self, name: str, ref: Generation | Mapping[str, Any]) -> None:
        """Record one more input (a generation read, or facts such as a model version)."""
        self.inputs[name] = ref.ref() if isinstance(ref, Generation) else dict(ref)

    def untouched(self, name: str) -> bool:
        """Is `name` still the file seeded from the base generation (not replaced, not removed)?"""
        if name not in self.seeded:
            return False
        try:
            st = os.stat(self.dir / name)
        except FileNotFoundError:
            return False
        dev, ino, size, mtime = self.seeded[name]
        if (st.st_dev, st.st_ino) != (dev, ino):
            return False
        if (st.st_size, st.st_mtime_ns) != (size, mtime):  # the inode the previous generation shares
            raise DataError(f"{self.dir / name}: written in place, which changed the file of generation "
                            f"{self.base.id if self.base else '?'} too; replace outputs through "
                            "churn.storage.files.atomic_* (docs/consistency.md)")
        return True


def _new_id() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:6]}"


def area_lock(root: Path, area: str, timeout: float = 600.0) -> FileLock:
    """Serialises the commits of one area (short: only the switch, not the step's work)."""
    return FileLock(Path(root) / "locks" / f"area-{area.replace('/', '--')}.lock", timeout=timeout)


@contextlib.contextmanager
def publish(paths: DataPaths, area: str, *, step: str,
            inputs: Mapping[str, Generation | Mapping[str, Any]] | None = None,
            merge: bool = False) -> Iterator[Publication]:
    """Write the outputs of `step` into a new generation of `area`, switched in on success.

    Yields a Publication whose `paths` has `area` bound to the staging directory and every
    Generation input bound to the directory it resolved, so the step's functions read one
    generation of each input and write only into the staging directory. On an exception
    nothing becomes visible and the staging directory is removed.
    """
    root = paths.root
    _check_area(area)
    gens = generations_dir(root, area)
    mkdirs(gens)
    sweep_dead_temps(gens)
    staging, fd = locked_temp(gens, Path(area).name, directory=True)
    try:
        bound = {name: ref.dir for name, ref in (inputs or {}).items() if isinstance(ref, Generation)}
        pub = Publication(area, step, staging, paths.bind({**bound, area: staging}))
        for name, ref in (inputs or {}).items():
            pub.add_input(name, ref)
        try:
            if merge:
                with naming_disk_full(staging):
                    _seed(root, pub)
            yield pub
            with naming_disk_full(generations_dir(root, area)):
                pub.generation = _commit(root, pub, merge)
        except BaseException:
            remove_path(staging)
            raise
    finally:
        os.close(fd)
    try:
        collect_garbage(root, area)
    except OSError as exc:  # clean-up must never fail a step whose outputs are published
        log.warning("%s: old generations not removed (%s)", generations_dir(root, area), exc)


def _seed(root: Path, pub: Publication) -> None:
    """Start the staging directory as the current generation: hard links, manifest reused."""
    base = current(root, pub.area)
    pub.base = base
    if base is None:
        return
    for name in base.files:
        src = base.dir / name
        if src.is_file():  # not one deleted by hand
            _link_or_copy(src, pub.dir / name)
            st = os.stat(pub.dir / name)
            pub.seeded[name] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _merged_files(root: Path, pub: Publication) -> tuple[dict[str, dict[str, Any]], Generation | None]:
    """The files of the new generation of a merge=True publication (called under the area's
    lock): the step's own changes, and for everything else the newest committed state."""
    now = current(root, pub.area)
    seed_files = pub.base.files if pub.base is not None else {}
    now_files = now.files if now is not None else {}
    files: dict[str, dict[str, Any]] = {}
    for name in _walk_files(pub.dir):
        if not pub.untouched(name):  # written by the step: its version
            files[name] = {"sha256": file_sha256(pub.dir / name), "bytes": (pub.dir / name).stat().st_size}
            continue
        theirs = now_files.get(name)
        if theirs is None or not pub.carry(name):  # removed by a writer since (or not wanted)
            faults.point("remove", pub.dir / name)
            os.unlink(pub.dir / name)
        elif theirs.get("sha256") != seed_files[name].get("sha256") and now is not None:
            faults.point("remove", pub.dir / name)
            os.unlink(pub.dir / name)  # replaced by a writer since: its version
            _link_or_copy(now.dir / name, pub.dir / name)
            files[name] = dict(theirs)
        else:
            files[name] = dict(seed_files[name])
    if now is not None:
        for name, entry in now_files.items():  # added by a writer since the seed
            if name not in files and name not in pub.seeded and pub.carry(name) and (now.dir / name).is_file():
                _link_or_copy(now.dir / name, pub.dir / name)
                files[name] = dict(entry)
    return files, now


def _commit(root: Path, pub: Publication, merge: bool) -> Generation:
    """Manifest, rename to the generation id, switch the pointer: under the area's lock."""
    gens = generations_dir(root, pub.area)
    with area_lock(root, pub.area):
        if merge:
            files, base = _merged_files(root, pub)
        else:
            files, base = {name: {"sha256": file_sha256(pub.dir / name), "bytes": (pub.dir / name).stat().st_size}
                           for name in _walk_files(pub.dir)}, None
        gen_id = _new_id()
        manifest = {"area": pub.area, "generation": gen_id, "step": pub.step,
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), "files": files,
                    "digest": files_digest(files), "inputs": pub.inputs,
                    **({"merged_from": base.id} if base is not None else {})}
        atomic_write_json(pub.dir / MANIFEST_NAME, manifest)
        final = gens / gen_id
        faults.point("rename", final)
        os.rename(pub.dir, final)
        fsync_dir(gens)
        switch_pointer(Path(root) / pub.area, final)
    return Generation(pub.area, gen_id, final, manifest)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (generations share unchanged files), else a copy (filesystems without links)."""
    mkdirs(dst.parent)
    faults.point("link", dst)
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copy2(src, dst)


def _link_temp_prefix(link: Path) -> str:
    return f"{TEMP_PREFIX}link-{link.name}-"


_LINK_TEMP = re.compile(re.escape(TEMP_PREFIX) + r"link-(?P<name>.+)-[0-9a-f]{12}$")


def sweep(root: str | Path) -> list[Path]:
    """Remove what dead runs left under `root`: temp files and staging directories
    (`files.sweep_dead_temps`), and temp symlinks of a switch that died.

    Why the second part: a symlink cannot be flock()ed, but every switch of an area runs
    under the area's lock, so a temp link whose area lock is free is a dead run's (the
    plain sweep would wait a minute for its age). Every step calls this when it starts.
    """
    base = Path(root)
    removed = sweep_dead_temps(base)
    for current_dir, dirs, files in os.walk(base):
        here = Path(current_dir)
        names = [*dirs, *files]  # os.walk lists a symlink to a directory among the directories
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            match = _LINK_TEMP.match(name)
            if match is None or not (here / name).is_symlink():
                continue
            area = (here / match["name"]).relative_to(base).as_posix()
            try:
                with area_lock(base, area, timeout=0.0):
                    remove_path(here / name)
            except LockTimeout:  # a switch of that area is running: its temp link is alive
                continue
            removed.append(here / name)
    return removed


def switch_pointer(link: Path, target: Path) -> None:
    """Point `link` at `target` with one rename; a directory there (an older data root) is
    moved into the generations first, so a real directory never blocks the switch.

    The caller holds the area's lock: a temp symlink of this area still there is a dead
    run's (a symlink cannot be flock()ed, so the lock is what says so) and goes first.
    """
    mkdirs(link.parent)
    for dead in link.parent.glob(_link_temp_prefix(link) + "*"):
        remove_path(dead)
    tmp = link.parent / f"{_link_temp_prefix(link)}{uuid.uuid4().hex[:12]}"
    faults.point("symlink", tmp)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    try:
        if link.is_dir() and not link.is_symlink():
            legacy = target.parent / f"{_new_id()}-{UNMANAGED}"
            faults.point("rename", legacy)
            os.rename(link, legacy)
        faults.point("rename", link)
        os.replace(tmp, link)
    except BaseException:
        remove_path(tmp)
        raise
    fsync_dir(link.parent)


def collect_garbage(root: Path, area: str, keep: int = KEEP, min_age_s: float = MIN_AGE_S) -> list[Path]:
    """Remove generations of `area` older than the `keep` newest, never the current one, and
    none younger than `min_age_s` (a reader that resolved it a moment ago still finds it)."""
    gens = generations_dir(root, area)
    cur = current(root, area)
    names = sorted(p.name for p in gens.iterdir() if not p.name.startswith(".")) if gens.is_dir() else []
    now = time.time()
    removed = []
    for name in names[:-keep] if keep > 0 else names:
        path = gens / name
        if cur is not None and path == cur.dir:
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - path.lstat().st_mtime < min_age_s:
                continue
            remove_path(path)
            removed.append(path)
    return removed


def areas(root: str | Path) -> list[str]:
    """Every area that has generations under `root` (for `ml_jobs status` and the tests)."""
    base = Path(root) / GENERATIONS_DIR
    found = []
    for current_dir, dirs, _ in os.walk(base):
        here = Path(current_dir)
        if any((here / d / MANIFEST_NAME).is_file() for d in dirs):
            found.append(here.relative_to(base).as_posix())
            dirs[:] = []  # an area's generations hold no further areas
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found)
