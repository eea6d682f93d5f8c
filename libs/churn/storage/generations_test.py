"""Tests for churn.storage.generations: one step's outputs visible together, or not at all.

The fault-injection test fails each of publish's own storage operations in turn (crash: no
clean-up reaches the disk, as after kill -9; enospc: the error path runs), then checks that a
reader sees the complete old or the complete new state, that a rerun succeeds, and that no
temp entry and no stray generation survives it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from churn.errors import DataError
from churn.storage import faults, generations
from churn.storage.files import (
    MANIFEST_NAME,
    StorageFullError,
    atomic_write_text,
    is_temp_name,
    locked_temp,
    read_verified,
    sweep_dead_temps,
)

AREA = "monitoring/drift"


def _publish(root: Path, files: dict[str, str], carry: bool = False) -> Path:
    with generations.publish(root, AREA, inputs={"features": "f" * 64}, carry=carry) as out:
        for name, text in files.items():
            atomic_write_text(out / name, text)
    gen = generations.current(root, AREA)
    assert gen is not None
    return gen


def _state(root: Path) -> dict[str, str]:
    """What a reader bound to the current generation sees: {file: sha256} (verified reads)."""
    gen = generations.current(root, AREA)
    if gen is None:
        return {}
    return {p.relative_to(gen).as_posix(): hashlib.sha256(read_verified(p)).hexdigest()
            for p in sorted(gen.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}


def _temps(root: Path) -> list[Path]:
    return [Path(d) / n for d, dirs, files in os.walk(root) for n in [*dirs, *files] if is_temp_name(n)]


def test_publish_switches_a_relative_symlink_and_writes_the_manifest(tmp_path: Path) -> None:
    gen = _publish(tmp_path, {"2024-01-01.json": "{}", "2024-01-01.html": "<html>"})
    link = tmp_path / AREA
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert gen.parent == tmp_path / ".generations" / AREA
    manifest = generations.read_manifest(gen)
    assert manifest["inputs"] == {"features": "f" * 64} and manifest["area"] == AREA
    assert manifest["files"]["2024-01-01.html"] == {"sha256": hashlib.sha256(b"<html>").hexdigest(), "size": 6}
    assert (link / "2024-01-01.json").read_text() == "{}"
    assert not _temps(tmp_path)


def test_a_file_changed_after_publishing_is_refused_by_a_verified_read(tmp_path: Path) -> None:
    gen = _publish(tmp_path, {"r.json": "{}"})
    (gen / "r.json").write_text('{"x": 1}')
    with pytest.raises(DataError, match="changed since it was published"):
        read_verified(tmp_path / AREA / "r.json")


def test_a_bound_reader_keeps_its_generation_and_older_ones_are_pruned(tmp_path: Path) -> None:
    first = _publish(tmp_path, {"r.json": "1"})
    second = _publish(tmp_path, {"r.json": "2"})
    assert (first / "r.json").read_text() == "1"  # a reader bound to the first still reads it
    third = _publish(tmp_path, {"r.json": "3"})
    assert not first.exists() and second.is_dir() and generations.current(tmp_path, AREA) == third
    assert sorted(p.name for p in (tmp_path / ".generations" / AREA).iterdir()) == sorted([second.name, third.name])


def test_carry_keeps_the_earlier_reports(tmp_path: Path) -> None:
    _publish(tmp_path, {"a.json": "a"})
    gen = _publish(tmp_path, {"b.json": "b", "a.json": "A"}, carry=False)
    assert sorted(_state(tmp_path)) == ["a.json", "b.json"]
    gen = _publish(tmp_path, {"c.json": "c"}, carry=True)
    assert sorted(_state(tmp_path)) == ["a.json", "b.json", "c.json"]
    assert (gen / "a.json").read_text() == "A"
    assert set(generations.read_manifest(gen)["files"]) == {"a.json", "b.json", "c.json"}


def test_an_error_in_the_step_publishes_nothing(tmp_path: Path) -> None:
    _publish(tmp_path, {"r.json": "old"})
    before = _state(tmp_path)
    with pytest.raises(RuntimeError):
        with generations.publish(tmp_path, AREA) as out:
            atomic_write_text(out / "r.json", "new")
            raise RuntimeError("the step failed")
    assert _state(tmp_path) == before and not _temps(tmp_path)


def test_a_plain_directory_of_an_older_root_is_generation_zero_then_migrated(tmp_path: Path) -> None:
    plain = tmp_path / AREA
    plain.mkdir(parents=True)
    (plain / "old.json").write_text("old")
    assert generations.current(tmp_path, AREA) == plain  # read as it is
    gen = _publish(tmp_path, {"new.json": "new"}, carry=True)
    assert (tmp_path / AREA).is_symlink()
    assert sorted(_state(tmp_path)) == ["new.json", "old.json"] and gen.name != generations.LEGACY_ID
    assert (tmp_path / ".generations" / AREA / generations.LEGACY_ID / "old.json").read_text() == "old"


def test_a_live_writers_directory_is_never_pruned(tmp_path: Path) -> None:
    _publish(tmp_path, {"r.json": "1"})
    live, fd = locked_temp(tmp_path / ".generations" / AREA, "generation", directory=True)
    try:
        for i in range(3):
            _publish(tmp_path, {"r.json": str(i)})
        assert live.is_dir()
    finally:
        os.close(fd)
    _publish(tmp_path, {"r.json": "x"})
    assert not live.exists()  # its writer is gone now


def _base(tmp_path: Path, legacy: bool) -> Path:
    """A root with two published generations (or one plain legacy directory)."""
    root = tmp_path / ("legacy" if legacy else "base")
    if legacy:
        (root / AREA).mkdir(parents=True)
        (root / AREA / "a.json").write_text("a")
    else:
        _publish(root, {"a.json": "a"})
        _publish(root, {"b.json": "b"}, carry=True)
    return root


@pytest.mark.parametrize("legacy", [False, True], ids=["published", "legacy"])
def test_a_fault_at_each_point_of_publish_leaves_old_or_new_and_a_rerun_heals(tmp_path: Path, legacy: bool) -> None:
    base = _base(tmp_path, legacy)
    new_files = {"c.json": "c", "c.html": "<c>"}
    old = _state(base)
    clean = tmp_path / "clean"
    shutil.copytree(base, clean, symlinks=True)
    recorder = faults.Recorder()
    with faults.injecting(recorder):
        _publish(clean, new_files, carry=True)
    new = _state(clean)
    assert old != new and len(recorder.ops) >= 8, recorder.ops
    ops = {op for op, _ in recorder.ops}
    assert {"rename", "symlink", "write"} <= ops, ops
    injected = 0
    for at in range(1, len(recorder.ops) + 1):
        for mode in ("crash", "enospc"):
            root = tmp_path / f"{mode}-{at}"
            shutil.copytree(base, root, symlinks=True)
            fail = faults.FailAt(at, mode)
            failed = True
            with faults.injecting(fail):
                try:
                    _publish(root, new_files, carry=True)
                    failed = False  # a full disk while removing old generations: published anyway
                except (faults.SimulatedCrash, OSError, StorageFullError):
                    pass
            assert fail.fired is not None
            injected += 1
            seen = _state(root)
            assert seen in (old, new), (mode, at, fail.fired)
            if mode == "enospc":  # an error (not a crash): the step fails and publishes nothing
                assert seen == (old if failed else new) and (failed or fail.fired[0] == "remove"), (at, fail.fired)
            sweep_dead_temps(root)  # what every step does first
            _publish(root, new_files, carry=True)
            assert _state(root) == new, (mode, at)
            assert not _temps(root), (mode, at, _temps(root))
            store = sorted(p.name for p in (root / ".generations" / AREA).iterdir())
            assert len(store) == 2, (mode, at, store)  # the current one and the previous one
            shutil.rmtree(root)
    print(f"generations.publish ({'legacy root' if legacy else 'published root'}): "
          f"{len(recorder.ops)} points x 2 modes = {injected} injections, all consistent")


def test_a_full_disk_at_the_switch_names_the_area(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _publish(root, {"r.json": "1"})
    shutil.copytree(root, tmp_path / "count", symlinks=True)
    n = faults.Recorder()
    with faults.injecting(n):
        _publish(tmp_path / "count", {"r.json": "2"})
    switch = next(i for i, (op, _) in enumerate(n.ops, 1) if op == "symlink")
    with faults.injecting(faults.FailAt(switch, "enospc")):
        with pytest.raises(StorageFullError, match=str(root / AREA)):
            _publish(root, {"r.json": "2"})
    assert _state(root) == {"r.json": hashlib.sha256(b"1").hexdigest()} and not _temps(root)
    assert len(list((root / ".generations" / AREA).iterdir())) == 1  # the unswitched one removed
