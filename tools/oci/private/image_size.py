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


def layer_sizes(layout: Path) -> list[tuple[str, int, int]]:
    """(digest, compressed bytes, unpacked tar bytes) of each layer of an OCI image layout."""
    blobs = layout / "blobs/sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    return [(layer["digest"], layer["size"], unpacked_size(blobs / layer["digest"][7:])) for layer in manifest["layers"]]


def layout_sizes(layout: Path, layers: list[tuple[str, int, int]] | None = None) -> tuple[int, int]:
    """(compressed, unpacked) bytes of the whole image (also bench/api_bench.py's figure)."""
    layers = layer_sizes(layout) if layers is None else layers
    return sum(c for _, c, _ in layers), sum(u for _, _, u in layers)


def report(layout: Path) -> None:
    layers = layer_sizes(layout)
    for digest, compressed, unpacked in layers:
        print(f"  {digest[7:19]}  {compressed / 1e6:8.1f} MB gz  {unpacked / 1e6:8.1f} MB tar")
    total_compressed, total_unpacked = layout_sizes(layout, layers)
    print(f"{layout}: {total_compressed / 1e6:.1f} MB compressed, {total_unpacked / 1e6:.1f} MB unpacked")


def main() -> int:
    root = Path(os.environ.get("BUILD_WORKSPACE_DIRECTORY", "."))
    for arg in sys.argv[1:] or sys.exit(__doc__):
        report(root / arg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
