"""Print the compressed and unpacked size of each layer of OCI image layouts (README figures).

Usage: ./bazelw run //tools/oci:image_size -- bazel-bin/apps/api/image bazel-bin/apps/ml_jobs/image
"""

import gzip
import json
import os
import sys
from pathlib import Path


def unpacked_size(blob: Path) -> int:
    """Bytes of the layer's tar stream (what the engine unpacks)."""
    size = 0
    with gzip.open(blob) as stream:
        while chunk := stream.read(1 << 22):
            size += len(chunk)
    return size


def report(layout: Path) -> None:
    blobs = layout / "blobs/sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    total_compressed = total_unpacked = 0
    for layer in manifest["layers"]:
        unpacked = unpacked_size(blobs / layer["digest"][7:])
        total_compressed, total_unpacked = total_compressed + layer["size"], total_unpacked + unpacked
        print(f"  {layer['digest'][7:19]}  {layer['size'] / 1e6:8.1f} MB gz  {unpacked / 1e6:8.1f} MB tar")
    print(f"{layout}: {total_compressed / 1e6:.1f} MB compressed, {total_unpacked / 1e6:.1f} MB unpacked")


def main() -> int:
    root = Path(os.environ.get("BUILD_WORKSPACE_DIRECTORY", "."))
    for arg in sys.argv[1:] or sys.exit(__doc__):
        report(root / arg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
