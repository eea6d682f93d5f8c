"""The layer tools are byte-stable: the same inputs give the same blob, whatever the output path.

Rebuilds, in the test's temp dir, layers that Bazel built in its own actions and compares bytes:
the Python runtime layer (from the pinned .debs) and the third-party layer of the stand-in
binary (its manifest rewritten to runfiles paths). Also builds an app-style layer twice.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNFILES = Path(os.environ["RUNFILES_DIR"])
TOOLS = RUNFILES / "_main/tools/oci/private"
TMP = Path(os.environ.get("TEST_TMPDIR", "/tmp"))


def runfile(path: str) -> Path:
    """A runfile by its `$(rootpath)` (relative to _main, `../repo/...` for external repos)."""
    return (RUNFILES / "_main" / path).resolve()


def env_files(name: str) -> list[Path]:
    return [runfile(p) for p in os.environ[name].split()]


def build(tool: str, *args: str) -> None:
    subprocess.run([sys.executable, str(TOOLS / tool), *args], check=True)


def exec_to_runfiles(exec_path: str) -> Path:
    """Maps an execroot-relative input path (as in a manifest) to the same file in runfiles."""
    parts = exec_path.split("/")
    if parts[0] == "external":
        return RUNFILES / "/".join(parts[1:])
    if parts[0] == "bazel-out":
        return RUNFILES / "_main" / "/".join(parts[3:])
    return RUNFILES / "_main" / exec_path


def test_runtime_layer_matches_bazel_output() -> None:
    bazel_blob = next(p for p in env_files("BASE_LAYER") if p.name.endswith(".tar.gz"))
    debs = [str(p) for p in env_files("BASE_DEBS")]
    out = TMP / "base.tar.gz"
    build("rootfs.py", "--compile", "--out", str(out), "--descriptor", str(TMP / "base.json"), *debs)
    assert out.read_bytes() == bazel_blob.read_bytes()


def test_third_party_layer_matches_bazel_output() -> None:
    files = env_files("HELLO_LAYERS")
    manifest = next(p for p in files if p.name == "third_party.manifest")
    bazel_blob = next(p for p in files if p.name == "third_party.tar.gz")
    rewritten = TMP / "third_party.manifest"
    lines = [line.split("\t") for line in manifest.read_text().splitlines()]
    rewritten.write_text("".join(f"{dest}\t{exec_to_runfiles(src)}\n" for dest, src in lines))
    out = TMP / "third_party.tar.gz"
    build("layer.py", "--compile", "--manifest", str(rewritten), "--out", str(out),
          "--descriptor", str(TMP / "third_party.json"))
    assert out.read_bytes() == bazel_blob.read_bytes()


@pytest.mark.parametrize("compile_pyc", [True, False])
def test_layer_is_byte_stable(compile_pyc: bool) -> None:
    sources = sorted(TOOLS.glob("*.py"))
    manifest = TMP / "app.manifest"
    manifest.write_text("".join(f"app/{p.name}\t{p}\n" for p in sources) + "app/empty/__init__.py\t\n")
    blobs = []
    for attempt in ("one", "two"):
        out = TMP / attempt / "layer.tar.gz"
        out.parent.mkdir(exist_ok=True)
        flags = ["--compile"] if compile_pyc else []
        build("layer.py", *flags, "--manifest", str(manifest), "--out", str(out),
              "--descriptor", str(out.with_suffix(".json")))
        blobs.append(out.read_bytes())
    assert blobs[0] == blobs[1]
    descriptor = json.loads((TMP / "one/layer.tar.json").read_text())
    assert descriptor["size"] == len(blobs[0])
