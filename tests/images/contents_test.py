"""What is inside an image: ownership, mtimes, user, config, and (API) no training stack.

Environment: IMAGE (`$(rootpaths)` of an oci_image), FORBIDDEN / REQUIRED (space-separated
top-level Python packages that must be absent from / present in the image).
"""

import hashlib
import os
import re
from pathlib import Path

import pytest

from elf import dynamic_section, missing_libraries
from oci_layout import Image, image_from_env

APP_UID = 10001
SITE = "usr/lib/python3/dist-packages/"


def _build_paths() -> re.Pattern[bytes]:
    """This build's own locations, found at run time: the workspace and Bazel's output base."""
    workspace = Path(__file__).resolve().parents[2]  # the runfile links back to the source tree
    srcdir = str(Path(os.environ["TEST_SRCDIR"]).resolve())
    output_base = srcdir.split("/execroot/")[0].split("/sandbox/")[0]
    places = [f"{workspace}/", output_base, "bazel-out/", "execroot/"]
    return re.compile(b"|".join(re.escape(p.encode()) for p in places))


BUILD_PATHS = _build_paths()


@pytest.fixture(scope="module")
def image() -> Image:
    return image_from_env("IMAGE")


@pytest.fixture(scope="module")
def members(image: Image) -> dict:
    """Every tar member of every layer (upper layers win), by path."""
    result = {}
    for tar in image.layers():
        for member in tar:
            result[member.name] = member
    return result


def test_digest_file_is_the_manifest_digest(image: Image) -> None:
    blob = image.blob(image.digest)
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == image.digest
    index = (image.layout / "index.json").read_text()
    assert image.digest in index


def test_unpacked_size_within_budget(members: dict) -> None:
    """Every image has a size budget (tests/images/BUILD.bazel): a new dependency must earn its bytes."""
    budget_mb = int(os.environ["MAX_UNPACKED_MB"])
    assert budget_mb > 0, "image_tests needs max_unpacked_mb"
    unpacked_mb = sum(m.size for m in members.values() if m.isfile()) / 1e6
    assert unpacked_mb < budget_mb, f"{unpacked_mb:.1f} MB unpacked, budget {budget_mb} MB"


def test_runs_as_the_app_user(image: Image, members: dict) -> None:
    assert image.config()["config"]["User"] == f"{APP_UID}:{APP_UID}"
    assert "etc/passwd" in members


def test_config(image: Image) -> None:
    config = image.config()
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["CHURN_DATA_ROOT"] == "/var/lib/churn"
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert "org.opencontainers.image.version" in config["config"]["Labels"]
    assert len(config["rootfs"]["diff_ids"]) == 3


def test_owners_and_mtimes(members: dict) -> None:
    wrong = [name for name, m in members.items()
             if m.mtime != 0 or (m.uid, m.gid) != (0, 0) and not name.startswith("var/lib/churn")]
    assert not wrong, f"files with mtime != 0 or a non-root owner: {wrong[:10]}"
    assert (members["var/lib/churn"].uid, members["var/lib/churn"].gid) == (APP_UID, APP_UID)
    assert not {m.uname for m in members.values()} - {""}
    assert members["tmp"].mode == 0o1777


def test_no_setuid_and_no_device_files(members: dict) -> None:
    assert not [n for n, m in members.items() if m.mode & 0o6000 or m.isdev()]


def test_no_build_machine_paths(image: Image) -> None:
    """No file (scripts, .pyc, RECORDs) mentions the build's cache or workspace paths."""
    leaks = []
    for tar in image.layers():
        for member in tar:
            if member.isfile() and member.size < 4 << 20 and not member.name.endswith(".so"):
                data = tar.extractfile(member).read()
                if BUILD_PATHS.search(data) and not member.name.startswith("usr/lib/python3.14/"):
                    leaks.append(member.name)
    assert not leaks, f"files mentioning build paths: {leaks[:10]}"


def _packages(names: dict) -> set[str]:
    return {n[len(SITE):].split("/")[0] for n in names if n.startswith(SITE)}


def test_forbidden_packages_absent(members: dict) -> None:
    present = _packages(members) & set(os.environ.get("FORBIDDEN", "").split())
    assert not present, f"must not be in this image: {present}"


def test_required_packages_present(members: dict) -> None:
    missing = set(os.environ.get("REQUIRED", "").split()) - _packages(members)
    assert not missing, f"missing from this image: {missing}"


def test_python_files_have_bytecode(members: dict) -> None:
    """Unchecked-hash .pyc beside (nearly) every source: containers start without compiling."""
    sources = [n for n in members if n.startswith(SITE) and n.endswith(".py")]
    missing = [s for s in sources
               if "{0}/__pycache__/{1}.cpython-314.pyc".format(*s[:-3].rsplit("/", 1)) not in members]
    assert sources and len(missing) <= len(sources) // 100, f"without .pyc: {missing[:10]}"


def test_every_elf_file_finds_its_libraries(image: Image, members: dict) -> None:
    """As the dynamic loader would: each DT_NEEDED of every executable and shared object is in
    its RPATH/RUNPATH or the system library directories (the runtime layer leaves libraries
    out, tools/oci/private/rootfs.py; the wheels bring their own)."""
    present = {name for name, m in members.items() if m.isfile() or m.issym() or m.islnk()}
    checked, missing = 0, {}
    for tar in image.layers():
        for member in tar:
            if not member.isfile() or member.size < 64:
                continue
            handle = tar.extractfile(member)
            if handle.read(4) != b"\x7fELF":
                continue
            dynamic = dynamic_section(b"\x7fELF" + handle.read())
            if dynamic is None:
                continue
            checked += 1
            lost = missing_libraries(member.name, dynamic, present)
            if lost:
                missing[member.name] = lost
    assert checked >= 20 and "usr/bin/python3.14" in members, f"only {checked} ELF files read"
    assert not missing, f"libraries not found: {dict(list(missing.items())[:10])}"
