"""Published files opened bound to the bytes checked against their generation's MANIFEST.

Why: the tables' day files (grid, features, labels: a Parquet file per as-of day) were read by
path with pyarrow, never compared with the MANIFEST that published them, so a day file
rewritten in place after the publish fed training, scoring, drift and the update's look-back
unnoticed, and `features_digest` (the inputs predictions and drift record) hashed them in a
second read that need not see the bytes parsed. Reading a whole file into memory and parsing
the buffer (`files.read_verified`, the raw store) costs a day file's size in memory per file
and gives up pyarrow's row-group pruning, which the update's pieces rely on.

So `opened` opens each file once and, unless this process verified that very inode unchanged
already, streams it through sha256 from that fd and compares size and digest with the
MANIFEST entry (`ChangedSincePublished`, one line naming the file and both digests). The
reader then parses the same inode (`Opened.source`, `/proc/self/fd/<fd>`: pyarrow opens it
itself, pruning row groups as before), and when the block ends the fd's fstat must be what it
was when the bytes were hashed: any write into the file sets its ctime, which no user can set
back (the kernel's clock; fine-grained since Linux 6.13 on ext4, xfs, btrfs and tmpfs, else
one clock tick past the file's previous change), so the bytes parsed are the bytes hashed.

Verified inodes are remembered for the process (one run: a CLI step) by (resolved path,
device, inode, size, mtime, ctime): the N in-process pieces of a sharded update hash each
look-back file once, not N times, and a file changed since (other ctime) is hashed again. A
file outside any published generation (a root from before generations, a generation still
being written) is read as it is, unhashed; a file inside one that its MANIFEST does not list
is refused.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from churn.errors import ChangedSincePublished, DataError
from churn.storage import faults
from churn.storage.files import changed_error, dataset_digest, digest_and_size, file_digest, published_entry

_Key = tuple[str, int, int, int, int, int]
# inodes whose bytes matched their MANIFEST entry in this process: key -> the entry's sha256
_VERIFIED: dict[_Key, str] = {}
_PROC_FD = Path("/proc/self/fd")


@dataclass(frozen=True)
class Opened:
    """One file held open while a reader parses it."""

    path: Path  # as the caller named it (the messages name it)
    source: str  # what the reader opens: the very inode that was checked
    sha256: str | None  # its MANIFEST's digest; None outside a published generation (read as it is)
    fd: int
    key: _Key


def _key(real: Path, fd: int) -> _Key:
    st = os.fstat(fd)
    return (str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _source(real: Path, fd: int) -> str:
    """A name of the open inode for a reader that opens files itself (pyarrow); the resolved
    path where there is no /proc (then only the fstat check binds the read)."""
    return str(_PROC_FD / str(fd)) if _PROC_FD.is_dir() else str(real)


def _hash(fd: int) -> tuple[str, int]:
    """sha256 and size of the bytes behind `fd`, from its start (`files.digest_and_size`)."""
    return digest_and_size(fd)


def _verify(path: Path, real: Path, fd: int, key: _Key) -> str | None:
    """The MANIFEST's sha256 of the open file after comparing its bytes (None: unpublished)."""
    if key in _VERIFIED:
        return _VERIFIED[key]
    found = published_entry(real)
    if found is None:
        return None
    manifest, entry = found
    if entry is None:
        raise ChangedSincePublished(f"{path}: not listed in {manifest} (added after the publish): not read; "
                                    "rerun the step that writes it")
    digest, size = _hash(fd)
    if digest != entry.get("sha256") or size != entry.get("size"):
        raise changed_error(path, manifest, digest, entry, size)
    if _key(real, fd) != key:  # written while it was hashed
        raise _moved(path, manifest)
    _VERIFIED[key] = digest
    return digest


def _moved(path: Path, manifest: Path | str) -> ChangedSincePublished:
    return ChangedSincePublished(f"{path}: changed while it was read (written in place after its sha256 was "
                                 f"compared with {manifest}): not used; rerun the step")


def _open(path: Path) -> Opened:
    real = Path(os.path.realpath(path))
    try:
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror})") from exc
    try:
        key = _key(real, fd)
        sha256 = _verify(Path(path), real, fd, key)
        if sha256 is not None:
            faults.checked(real)
        return Opened(Path(path), _source(real, fd), sha256, fd, key)
    except BaseException:
        os.close(fd)
        raise


def _check_unchanged(files: Iterable[Opened]) -> None:
    """After the read: each fd's fstat as when its bytes were checked (else it was written)."""
    for f in files:
        if f.sha256 is None:
            continue
        real = Path(f.key[0])
        moved = _key(real, f.fd) != f.key
        if not moved and f.source == str(real):  # no /proc: the reader opened the path
            st = os.stat(real)
            moved = (st.st_dev, st.st_ino) != f.key[1:3]
        if moved:
            _VERIFIED.pop(f.key, None)
            found = published_entry(real)
            raise _moved(f.path, found[0] if found else "its MANIFEST")


@contextlib.contextmanager
def opened(files: Sequence[str | os.PathLike[str]]) -> Iterator[list[Opened]]:
    """Open `files` checked (see the module doc); parse `Opened.source` inside the block.

    Leaving the block closes them; a file written meanwhile is a `ChangedSincePublished`, also
    when the reader failed on the mixed bytes (that failure is then its cause).
    """
    held: list[Opened] = []
    try:
        for f in files:
            held.append(_open(Path(f)))
        try:
            yield held
        except BaseException as exc:
            if isinstance(exc, Exception):
                try:
                    _check_unchanged(held)
                except ChangedSincePublished as changed:
                    raise changed from exc
            raise
        _check_unchanged(held)
    finally:
        for f in held:
            os.close(f.fd)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file as its MANIFEST records it, after checking the bytes (at once when
    this process verified the file, unchanged, already: what a reader records of its inputs
    without reading them again); a file outside any generation is hashed."""
    with opened([path]) as [f]:
        return f.sha256 if f.sha256 is not None else file_digest(f.source)


def digest_of(files: Iterable[str | os.PathLike[str]]) -> str:
    """`files.dataset_digest` of published files from their checked MANIFEST digests."""
    return dataset_digest(files, sha256_of)
