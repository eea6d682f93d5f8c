"""The dependency lock pins every direct dependency, with a hash, and nothing unpinned slips in."""

import re
from pathlib import Path

PINNED = re.compile(r"^([a-z0-9][a-z0-9._-]*)==([^\s\\]+) \\\n    --hash=sha256:[0-9a-f]{64}$", re.M)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _direct_dependencies() -> set[str]:
    names = set()
    for line in Path("requirements.in").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            names.add(_normalise(re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]))
    return names


def _locked() -> dict[str, str]:
    return {_normalise(m[1]): m[2] for m in PINNED.finditer(Path("requirements_lock.txt").read_text())}


def test_every_direct_dependency_is_pinned_with_a_hash() -> None:
    missing = _direct_dependencies() - set(_locked())
    assert not missing, f"in requirements.in but not pinned in requirements_lock.txt: {sorted(missing)}"


def test_every_lock_entry_has_exactly_one_pin_and_hash() -> None:
    text = Path("requirements_lock.txt").read_text()
    entries = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert len(entries) == len(_locked()), "a lock entry lacks a version pin or a sha256 hash"
