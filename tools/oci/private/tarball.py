"""Deterministic, gzip-compressed layer tars (stdlib only).

Every layer of an image is written here: entries sorted by path, mtime 0, owner root (unless an
entry says otherwise), modes normalised by the caller, POSIX (pax) format, gzip with mtime 0 and
no file name. Python sources may be accompanied by `.pyc` files compiled with the unchecked-hash
invalidation mode: they are never compared with the (mtime 0) sources, so they stay valid, and
their content depends only on the source (compiled with PYTHONHASHSEED=0).
"""

import gzip
import hashlib
import io
import json
import marshal
import os
import sys
import tarfile
import warnings
from dataclasses import dataclass
from importlib.util import MAGIC_NUMBER, cache_from_source, source_hash
from pathlib import Path
from typing import BinaryIO, Iterable

GZIP_LEVEL = 6
_UNCHECKED_HASH_FLAGS = (0b01).to_bytes(4, "little")  # hash-based pyc, source never checked


@dataclass(frozen=True)
class Entry:
    """One member of a layer. `path` is relative to the image root (no leading slash)."""

    path: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "pyc" (compiled from `source`)
    mode: int = 0o644
    source: str | None = None  # file content (file, pyc); None means empty
    target: str = ""  # symlink / hardlink target
    uid: int = 0
    gid: int = 0


class _Digest(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def require_fixed_hash_seed() -> None:
    """Re-executes this process with PYTHONHASHSEED=0 (set constants marshal in hash order)."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})


def pyc_bytes(source: bytes, image_path: str) -> bytes | None:
    """An unchecked-hash .pyc of `source` (as /`image_path`), or None if it does not compile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = compile(source, "/" + image_path, "exec", dont_inherit=True, optimize=0)
        except (SyntaxError, ValueError):
            return None
    return MAGIC_NUMBER + _UNCHECKED_HASH_FLAGS + source_hash(source) + marshal.dumps(code)


def with_pycs(entries: Iterable[Entry]) -> list[Entry]:
    """`entries` plus a pyc entry (and its __pycache__ dir) for every `.py` file."""
    result = list(entries)
    for entry in list(result):
        if entry.kind == "file" and entry.path.endswith(".py"):
            pyc = cache_from_source("/" + entry.path)[1:]
            result.append(Entry(os.path.dirname(pyc), "dir", 0o755))
            result.append(Entry(pyc, "pyc", 0o644, source=entry.source or os.devnull, target=entry.path))
    return result


def complete(entries: Iterable[Entry]) -> list[Entry]:
    """Sorted, de-duplicated entries with every parent directory present (0755 root)."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        previous = by_path.get(entry.path)
        if previous is not None and previous != entry and not _same_content(previous, entry):
            raise SystemExit(f"layer: two different sources for /{entry.path}: "
                             f"{previous.source} and {entry.source}")
        by_path.setdefault(entry.path, entry)
    for path in list(by_path):
        parent = os.path.dirname(path)
        while parent and parent not in by_path:
            by_path[parent] = Entry(parent, "dir", 0o755)
            parent = os.path.dirname(parent)
    return [by_path[p] for p in sorted(by_path)]


def _same_content(a: Entry, b: Entry) -> bool:
    if a.kind != b.kind or a.kind not in ("file", "pyc") or (a.mode, a.target) != (b.mode, b.target):
        return False
    return Path(a.source or os.devnull).read_bytes() == Path(b.source or os.devnull).read_bytes()


def _tarinfo(entry: Entry, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 0
    info.uname = info.gname = ""
    info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}.get(
        entry.kind, tarfile.REGTYPE)
    info.linkname = entry.target if entry.kind in ("symlink", "hardlink") else ""
    info.size = size
    return info


def _content(entry: Entry) -> bytes | None:
    """The bytes of a file or pyc entry (None: the pyc could not be compiled, skip it)."""
    data = Path(entry.source).read_bytes() if entry.source else b""
    return pyc_bytes(data, entry.target) if entry.kind == "pyc" else data


def write_layer(entries: list[Entry], blob: Path) -> dict:
    """Writes the entries as a gzipped tar to `blob`; returns its OCI descriptor fields."""
    with open(blob, "wb") as raw_out:
        compressed = _Digest(raw_out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=GZIP_LEVEL, mtime=0) as gz:
            uncompressed = _Digest(gz)
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in entries:
                    if entry.kind in ("file", "pyc"):
                        data = _content(entry)
                        if data is None:
                            continue
                        tar.addfile(_tarinfo(entry, len(data)), io.BytesIO(data))
                    else:
                        tar.addfile(_tarinfo(entry, 0))
    return {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": compressed.digest(),
        "size": compressed.size,
        "diff_id": uncompressed.digest(),
    }


def write_descriptor(descriptor: dict, path: Path) -> None:
    """Compact, key-sorted JSON (the form every tool here reads and hashes)."""
    path.write_text(json.dumps(descriptor, sort_keys=True, separators=(",", ":")) + "\n")


def finish_layer(entries: Iterable[Entry], blob: Path, descriptor: Path, compile_python: bool) -> None:
    """The common end of every layer tool: .pyc if asked, implied parents, the blob, its descriptor."""
    if compile_python:
        entries = with_pycs(entries)
    write_descriptor(write_layer(complete(entries), blob), descriptor)
