"""Atomic writes, checked reads, content digests, and the clean-up of dead runs' temp files.

Why atomic: readers (the API, concurrent Jobs on a shared volume) must only ever see a
complete old file or a complete new one; the reference project wrote in place, and one of
its CronJobs even corrupted the feature file on purpose. Every writer here writes a temp
file in the destination directory, fsyncs it, then `os.replace`s it over the target (atomic
on POSIX within one filesystem); on any exception the temp file is removed and the old
file is untouched. Several files that must change together go through
`churn.storage.generations.publish` (docs/consistency.md).

Temp files and directories are named `.tmp-*` and are flock()ed by their writer for as long
as it lives: `sweep_dead_temps` removes exactly those whose writer died (a killed Job), so a
crash leaves no litter behind the next run, and a live writer's temp is never touched.
Files are created group-readable (0666 and directories 0777, less the umask), so a second
pod or an operator in the group can read predictions and reports.

A full disk is a `StorageFullError` naming the file and the free space, not an OSError
traceback. Every mutating operation calls `faults.point` first (fault-injection tests).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from churn.errors import ChangedSincePublished, DataError
from churn.storage import faults

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
# a temp symlink cannot be flock()ed: one older than this is a dead run's
_SYMLINK_TEMP_MAX_AGE_S = 60.0
# temp files of the writer before this design (`.<name>.<random>.tmp`, never locked)
_LEGACY_TEMP_MAX_AGE_S = 600.0


def require_file(path: Path, producer: str) -> Path:
    """DataError naming the missing input and the command that produces it (a file, or a
    day-partitioned folder holding at least one day: `churn.storage.daytables`)."""
    p = Path(path)
    if not (p.is_file() or (p.is_dir() and any(p.glob("*.parquet")))):
        raise DataError(f"{path}: not found (produce it with `ml_jobs {producer}`)")
    return Path(path)


class StorageFullError(DataError):
    """The filesystem of a file being written is full (ENOSPC/EDQUOT): names the file."""


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def file_mode() -> int:
    """Mode of a new file: 0666 less the umask (group-readable under the usual 002/022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    return 0o777 & ~_umask()


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when a library (pyarrow, joblib) only kept the message."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def disk_full_error(path: Path, exc: BaseException) -> StorageFullError:
    """One line naming the file and the free space (instead of a 64-line OSError traceback)."""
    free = "?"
    with contextlib.suppress(OSError):
        st = os.statvfs(path.parent if not path.is_dir() else path)
        free = f"{st.f_bavail * st.f_frsize / 1e6:.1f} MB"
    return StorageFullError(f"{path}: no space left on device while writing it ({free} free there); "
                            "nothing was replaced: free space and rerun the step")


@contextlib.contextmanager
def naming_disk_full(path: Path) -> Iterator[None]:
    """Turn a full disk inside the block into a StorageFullError naming `path`."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise


def mkdirs(directory: Path) -> Path:
    """mkdir -p with group-readable modes (a fault-injection point when something is created)."""
    if not directory.is_dir():
        with naming_disk_full(directory):
            faults.point("mkdir", directory)
            directory.mkdir(parents=True, exist_ok=True, mode=dir_mode())
    return directory


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



def _temp_name(parent: Path, name: str) -> Path:
    return parent / f"{TEMP_PREFIX}{name[:80]}-{uuid.uuid4().hex[:12]}"


def _still_ours(path: Path, fd: int) -> bool:
    """After flock: is `path` still the inode we created (a sweeper may have got there first)?"""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def locked_temp(parent: Path, name: str, directory: bool = False) -> tuple[Path, int]:
    """Create `.tmp-<name>-<random>` in `parent`, flock()ed through the returned fd.

    The lock says "my writer is alive" to `sweep_dead_temps`; the inode check closes the
    window between creating the entry and locking it (if a sweeper removed it, we retry).
    """
    mkdirs(parent)
    for _ in range(100):
        tmp = _temp_name(parent, name)
        with naming_disk_full(tmp):
            if directory:
                os.mkdir(tmp, dir_mode())
                fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
            else:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, file_mode())
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _still_ours(tmp, fd):
            return tmp, fd
        os.close(fd)
    raise DataError(f"{parent}: cannot create a temp entry (removed by a concurrent clean-up 100 times)")


def remove_path(path: Path) -> None:
    """Remove a file, symlink or directory tree (missing is fine); a fault-injection point."""
    faults.point("remove", path)
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _is_dead_temp(path: Path, now: float) -> bool:
    """A temp entry nobody holds: its writer died (flock is released by the kernel then)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return now - st.st_mtime > _SYMLINK_TEMP_MAX_AGE_S
    flags = os.O_RDONLY | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    # locked by us now: a writer that created it just before we locked re-checks and retries
    try:
        if path.name.endswith(".tmp") and not path.name.startswith(TEMP_PREFIX):
            return now - st.st_mtime > _LEGACY_TEMP_MAX_AGE_S
        return True
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) or (name.startswith(".") and name.endswith(".tmp"))


def sweep_dead_temps(directory: str | Path) -> list[Path]:
    """Remove the temp files and directories of dead writers under `directory` (recursively).

    Why: a killed step leaves its temp files (11 MB each at 6k users), which used to pile up
    and made a data root count as "not empty". Returns what was removed.
    """
    root = Path(directory)
    removed: list[Path] = []
    now = time.time()
    for current, dirs, files in os.walk(root):
        here = Path(current)
        for name in [*dirs, *files]:
            if is_temp_name(name) and _is_dead_temp(here / name, now):
                try:
                    remove_path(here / name)
                except OSError as exc:  # clean-up must never fail the step that does it
                    log.warning("%s: cannot remove a dead run's temp entry (%s)", here / name, exc)
                    continue
                removed.append(here / name)
        dirs[:] = [d for d in dirs if not is_temp_name(d)]
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is deleted.

    For writers that need a file name (pyarrow, joblib) rather than a file object.
    """
    target = Path(path)
    mkdirs(target.parent)
    with naming_disk_full(target):
        faults.point("write", target)
    tmp, fd = locked_temp(target.parent, target.name)
    try:
        try:
            yield tmp
            os.fsync(fd)
            faults.point("rename", target)
            os.replace(tmp, target)
        except BaseException as exc:
            remove_path(tmp)
            if is_disk_full(exc):
                raise disk_full_error(target, exc) from None
            raise
    finally:
        os.close(fd)
    fsync_dir(target.parent)


class DurableRenames:
    """Several files written to temps, made durable together, then each renamed over its target.

    Why: `atomic_path` fsyncs every file and then its folder, two fsyncs a file; the update of
    a 2,000-user seed writes 302 day files, and those 606 fsyncs were about a third of its
    time. Here the temps are written first, then fsynced in one pass, then renamed, then each
    folder is fsynced once. The rules of `atomic_path` still hold: nothing is renamed before
    its bytes are durable, a reader sees every file complete (old or new), and a failure
    before the renames (a full disk while writing, an fsync error) removes every temp and
    replaces nothing. At most `max_open` temps are held open (their fds carry the flock that
    keeps `sweep_dead_temps` away); more are committed in groups of that size, each group as above.

    Use: `with DurableRenames() as group: write(group.path(target))`; the renames happen when
    the block ends without an exception.
    """

    def __init__(self, max_open: int = 128) -> None:
        self.max_open = max_open
        self._pending: list[tuple[Path, int, Path]] = []  # (temp, fd, target)
        self.renamed: list[Path] = []

    def __enter__(self) -> "DurableRenames":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self._commit()
            return
        failed = self._pending[-1][2] if self._pending else None
        self._discard()
        if failed is not None and is_disk_full(exc):
            raise disk_full_error(failed, exc) from None

    def path(self, target: str | Path) -> Path:
        """A locked temp beside `target` to write the new file into."""
        if len(self._pending) >= self.max_open:
            self._commit()
        target = Path(target)
        mkdirs(target.parent)
        with naming_disk_full(target):
            faults.point("write", target)
        tmp, fd = locked_temp(target.parent, target.name)
        self._pending.append((tmp, fd, target))
        return tmp

    def _commit(self) -> None:
        pending = self._pending
        try:
            for _, fd, target in pending:
                with naming_disk_full(target):
                    os.fsync(fd)
        except BaseException:
            self._discard()
            raise
        self._pending = []
        try:
            for i, (tmp, _, target) in enumerate(pending):
                faults.point("rename", target)
                os.replace(tmp, target)
                self.renamed.append(target)
        except BaseException:
            for tmp, _, _ in pending[i:]:
                remove_path(tmp)
            raise
        finally:
            for _, fd, _ in pending:
                os.close(fd)
        for folder in dict.fromkeys(target.parent for _, _, target in pending):
            fsync_dir(folder)

    def _discard(self) -> None:
        pending, self._pending = self._pending, []
        try:
            for tmp, _, _ in pending:
                remove_path(tmp)
        finally:
            for _, fd, _ in pending:
                os.close(fd)


def atomic_write_with(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(fileobj)` on a temp file, then atomically move it to `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write_with(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """JSON with sorted keys and a trailing newline (stable bytes -> stable digests)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_text(path, text)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalar
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


MANIFEST_NAME = "MANIFEST"  # JSON; no .json suffix, so globs for outputs (*.json) never match it
GENERATIONS_DIR = ".generations"  # <root>/.generations/<area>/<id>/: published generations


def load_manifest(manifest: Path) -> dict[str, Any]:
    """A generation's MANIFEST (written by `generations.write_manifest`): `files` maps each
    relative path to {"sha256", "size"}, `inputs` the step's input digests."""
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{manifest}: cannot read the generation manifest ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise DataError(f"{manifest}: not a generation manifest (no 'files' mapping)")
    return doc


_MANIFESTS: dict[tuple[str, int, int, int], dict[str, Any]] = {}


def manifest_files(manifest: Path) -> dict[str, Any]:
    """The `files` mapping of a MANIFEST, parsed once per process per (path, inode, mtime,
    size): a published MANIFEST is never rewritten, and a training set or a drift window looks
    up a hundred day files in the same one (a 360-entry JSON parsed for each)."""
    st = os.stat(manifest)
    key = (str(manifest), st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _MANIFESTS:
        _MANIFESTS[key] = load_manifest(manifest).get("files", {})
    return _MANIFESTS[key]


def published_entry(real: Path) -> tuple[Path, dict[str, Any] | None] | None:
    """(MANIFEST path, the entry of `real` in it, None if it lists no such file) of the
    published generation holding `real` (a resolved path); None outside any published one.

    Only a file below a `.generations` directory can belong to one: a file elsewhere is never
    compared with some unrelated MANIFEST in a parent directory. A generation being written (a
    temp directory, no MANIFEST yet) is none either.
    """
    parts = real.parts
    if GENERATIONS_DIR not in parts[:-1]:
        return None
    top = len(parts) - 1 - parts[::-1].index(GENERATIONS_DIR)  # the innermost .generations
    for parent in real.parents:
        if len(parent.parts) <= top + 1:
            return None
        manifest = parent / MANIFEST_NAME
        if manifest.is_file():
            return manifest, manifest_files(manifest).get(real.relative_to(parent).as_posix())
    return None


def changed_error(path: Path, manifest: Path, got: str, entry: dict[str, Any], size: int | None = None
                  ) -> ChangedSincePublished:
    """One line naming a published file whose bytes are not its MANIFEST's (both digests)."""
    sizes = "" if size is None or size == entry.get("size") else f", {size} bytes, it records {entry.get('size')}"
    return ChangedSincePublished(f"{path}: changed since it was published (sha256 {got[:12]}, {manifest} records "
                                 f"{str(entry.get('sha256'))[:12]}{sizes}): not read; rerun the step that writes it")


def read_verified(path: str | Path) -> bytes:
    """The bytes of `path`, checked against its generation's manifest when it has one.

    Why: a reader must use exactly the bytes that were checked and published. The path is
    resolved once (a pointer switched meanwhile cannot mix two generations), read once, and
    its sha256 compared with what the publishing step recorded; callers parse these bytes,
    never the path again. A file rewritten in place is an error naming it.
    """
    p = Path(path)
    try:
        real = Path(os.path.realpath(p))
        data = real.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{p}: file not found") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{p}: is a directory, expected a file") from exc
    found = published_entry(real)
    if found is not None and found[1] is not None:
        manifest, entry = found
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.get("sha256"):
            raise changed_error(p, manifest, digest, entry)
    return data


def read_json(path: str | Path) -> Any:
    """Read a JSON file (verified if published); missing or malformed is a DataError naming it."""
    p = Path(path)
    try:
        return json.loads(read_verified(p).decode("utf-8"))
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: cannot read JSON ({exc})") from exc


def file_digest(path: str | Path | int) -> str:
    """sha256 hex of a file's bytes (artifacts record the digest of their inputs): by path, or
    from an open fd (`digest_and_size`)."""
    return digest_and_size(path)[0]


def digest_and_size(file: str | Path | int, sync: bool = False) -> tuple[str, int]:
    """(sha256 hex, size) of a file's bytes, by path or from an open fd, through the stdlib's
    loop (`hashlib.file_digest`: ~25% faster here than ours): the one hashing read loop of the
    storage layer (`verified` hashes from the fd it holds, `generations` the files it publishes).

    An fd is read from its start through a duplicate and left open at its offset (the
    duplicate shares it, so it is put back); the size is the fd's fstat after the read (a
    caller binding the bytes to the inode compares the fstat before and after: `verified`).
    `sync`: fsync the file after hashing (its bytes durable before a switch; a filesystem
    that refuses it is ignored)."""
    if isinstance(file, int):
        offset = os.lseek(file, 0, os.SEEK_CUR)
        os.lseek(file, 0, os.SEEK_SET)
        try:
            with os.fdopen(os.dup(file), "rb", buffering=0, closefd=True) as fh:
                return _digest_and_size(fh, sync)
        finally:
            os.lseek(file, offset, os.SEEK_SET)
    p = Path(file)
    try:
        with open(p, "rb", buffering=0) as fh:
            return _digest_and_size(fh, sync)
    except FileNotFoundError as exc:
        raise DataError(f"{p}: file not found") from exc


def _digest_and_size(fh: Any, sync: bool) -> tuple[str, int]:
    digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if sync:
        with contextlib.suppress(OSError):
            os.fsync(fh.fileno())
    return digest, os.fstat(fh.fileno()).st_size


def dataset_digest(paths: Iterable[str | Path], digest: Callable[[Path], str] = file_digest) -> str:
    """One sha256 over several files: name and digest of each (`digest`: sha256 hex of a
    file, by default read from it), in sorted name order.

    Why names too: swapping users.parquet and events.parquet must change the digest.
    """
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode("utf-8") + b"\0" + digest(p).encode("ascii") + b"\n")
    return h.hexdigest()
