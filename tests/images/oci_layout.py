"""Read an OCI image layout built by //tools/oci (helpers for the image tests)."""

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

RUNFILES = Path(os.environ.get("RUNFILES_DIR", "."))


@dataclass(frozen=True)
class Image:
    """An oci_image output: the layout directory and its `.digest` file."""

    layout: Path
    digest: str

    def blob(self, digest: str) -> bytes:
        return (self.layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes()

    def manifest(self) -> dict:
        return json.loads(self.blob(self.digest))

    def config(self) -> dict:
        return json.loads(self.blob(self.manifest()["config"]["digest"]))

    def layers(self) -> Iterator[tarfile.TarFile]:
        for layer in self.manifest()["layers"]:
            path = self.layout / "blobs/sha256" / layer["digest"].removeprefix("sha256:")
            with tarfile.open(path, "r:gz") as tar:
                yield tar


def image_from_env(variable: str) -> Image:
    """The image whose `$(rootpaths //x:image)` is in `variable`."""
    paths = [(RUNFILES / "_main" / p).resolve() for p in os.environ[variable].split()]
    layout = next(p for p in paths if p.is_dir())
    digest = next(p for p in paths if p.name.endswith(".digest")).read_text().strip()
    return Image(layout, digest)
