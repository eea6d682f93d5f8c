"""Build a layer from a manifest of `path-in-image<TAB>file` lines (written by the Starlark rules).

An empty file column means an empty file (e.g. Bazel's generated __init__.py). Modes are
normalised (0755 when the source is executable, else 0644; directories 0755), owner root.
"""

import argparse
import gzip
import hashlib
import os
import shutil
import sys
from pathlib import Path

# The directory of this script (not on sys.path under PYTHONSAFEPATH, which Bazel's stub sets).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tarball import GZIP_LEVEL, Entry, finish_layer, require_fixed_hash_seed, write_descriptor  # noqa: E402


def read_manifest(path: Path) -> list[Entry]:
    """Entries of a manifest; a path listed twice must name the same content."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        dest, sep, source = line.partition("\t")
        if not sep or not dest or dest.startswith("/") or ".." in dest.split("/"):
            raise SystemExit(f"layer: {path}:{number}: want `relative/path<TAB>file`, got {line!r}")
        mode = 0o755 if source and os.access(source, os.X_OK) else 0o644
        entries.append(Entry(dest, "file", mode, source=source or None))
    return entries


def gzip_tar(tar: Path, blob: Path) -> dict:
    """Compresses an existing tar as it is (e.g. from pkg_tar); its descriptor fields."""
    with open(tar, "rb") as src, open(blob, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:" + _sha256(blob), "size": blob.stat().st_size,
            "diff_id": "sha256:" + _sha256(tar)}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="`path<TAB>file` lines")
    source.add_argument("--from-tar", type=Path, help="an existing tar, only compressed")
    parser.add_argument("--out", type=Path, required=True, help="layer blob (.tar.gz) to write")
    parser.add_argument("--descriptor", type=Path, required=True, help="descriptor JSON to write")
    parser.add_argument("--compile", action="store_true", help="add unchecked-hash .pyc files")
    args = parser.parse_args()
    if args.from_tar:
        write_descriptor(gzip_tar(args.from_tar, args.out), args.descriptor)
        return 0
    if args.compile:
        require_fixed_hash_seed()
    finish_layer(read_manifest(args.manifest), args.out, args.descriptor, args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
