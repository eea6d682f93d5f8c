"""Atomic writes, checked Parquet reads and content digests.

Why atomic: readers (the API, concurrent Jobs on a shared volume) must only ever see a
complete old file or a complete new one; the reference project wrote in place, and one of
its CronJobs even corrupted the feature file on purpose. Every writer here writes a temp
file in the destination directory, fsyncs it, then `os.replace`s it over the target (atomic
on POSIX within one filesystem); on any exception the temp file is removed and the old
file is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from churn.errors import DataError

_CHUNK = 1 << 20


def require_file(path: Path, producer: str) -> Path:
    """DataError naming the missing input and the command that produces it."""
    if not Path(path).is_file():
        raise DataError(f"{path}: not found (produce it with `ml_jobs {producer}`)")
    return Path(path)


def _fsync_dir(directory: Path) -> None:
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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is deleted.

    For writers that need a file name (pyarrow, joblib) rather than a file object.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


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


def read_json(path: str | Path) -> Any:
    """Read a JSON file; missing or malformed is a DataError naming the path."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{p}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: cannot read JSON ({exc})") from exc


def file_digest(path: str | Path) -> str:
    """sha256 hex of a file's bytes (artifacts record the digest of their inputs)."""
    p = Path(path)
    h = hashlib.sha256()
    try:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                h.update(block)
    except FileNotFoundError as exc:
        raise DataError(f"{p}: file not found") from exc
    return h.hexdigest()


def dataset_digest(paths: Iterable[str | Path]) -> str:
    """One sha256 over several files: name and digest of each, in sorted name order.

    Why names too: swapping users.parquet and events.parquet must change the digest.
    """
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode("utf-8") + b"\0" + file_digest(p).encode("ascii") + b"\n")
    return h.hexdigest()
