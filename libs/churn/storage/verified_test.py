"""Readers of the tables' day files bound to the bytes their MANIFEST records (`churn.storage.verified`).

Real generations (`generations.publish`), real in-place writes (the same inode, as `cp` over a
file or a careless tool would), pyarrow reading the files: no mocks. The one spy counts the
calls of the hash function, to show a file is hashed once per process.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.errors import ChangedSincePublished, DataError
from churn.storage import daytables, faults, generations, verified
from churn.storage.files import dataset_digest, file_digest

DAYS = [dt.date(2024, 3, 1) + dt.timedelta(days=i) for i in range(3)]


def _frame(users: int = 1000) -> pd.DataFrame:
    ids = np.arange(users, dtype=np.int64)
    return pd.DataFrame({"user_id": np.tile(ids, len(DAYS)),
                         "as_of_date": np.repeat(np.asarray(DAYS, dtype="datetime64[us]"), users),
                         "x": np.arange(users * len(DAYS), dtype=np.float64)})


def _published(root: Path) -> Path:
    """A generation holding one day-partitioned table (the area layout of `tables`)."""
    with generations.publish(root, "tables") as out:
        daytables.write_days(_frame(), out / "features.parquet")
    return generations.current(root, "tables") / "features.parquet"


def _rewrite_in_place(file: Path, frame: pd.DataFrame) -> None:
    """New bytes into the same inode (O_TRUNC), as a tool writing over the path does."""
    ino = os.stat(file).st_ino
    with open(file, "r+b") as fh:
        fh.truncate(0)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), fh)
    assert os.stat(file).st_ino == ino


def _same_size_other_bytes(file: Path) -> None:
    """Flip bytes inside the file (the size stays): a bit rot or a partial overwrite."""
    with open(file, "r+b") as fh:
        fh.seek(200)
        block = fh.read(16)
        fh.seek(200)
        fh.write(bytes(b ^ 0xFF for b in block))


@pytest.fixture()
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fds hashed (a spy around the real hash); the process cache emptied for the test."""
    monkeypatch.setattr(verified, "_VERIFIED", {})
    seen: list[int] = []
    real = verified._hash

    def counting(fd: int) -> tuple[str, int]:
        seen.append(fd)
        return real(fd)

    monkeypatch.setattr(verified, "_hash", counting)
    return seen


def test_a_published_day_file_is_hashed_once_and_read_with_its_row_groups_pruned(tmp_path: Path,
                                                                                  hashes: list[int]) -> None:
    folder = _published(tmp_path)
    got = daytables.read_days_of(folder, DAYS[0], DAYS[-1], np.arange(10, 20))
    assert sorted(got["user_id"].unique()) == list(range(10, 20)) and len(got) == 30
    assert len(hashes) == 3
    for _ in range(4):  # the pieces of a sharded update: each file hashed once, not per piece
        daytables.read_days_of(folder, DAYS[0], DAYS[-1], np.arange(500, 510))
    assert len(hashes) == 3
    digest = verified.digest_of(daytables.day_files(folder).values())  # from the MANIFEST: no 3rd read
    assert len(hashes) == 3
    assert digest == dataset_digest(daytables.day_files(folder).values())  # the value recorded before


@pytest.mark.parametrize("change", ["same size", "other size"])
def test_a_day_file_rewritten_after_the_publish_is_one_line_naming_it_and_both_digests(
        tmp_path: Path, hashes: list[int], change: str) -> None:
    """Broken once (the digest comparison in `_verify` removed): the rewritten rows were read."""
    folder = _published(tmp_path)
    file = daytables.day_file(folder, DAYS[1])
    published = generations.read_manifest(folder.parent)["files"][f"features.parquet/{file.name}"]["sha256"]
    daytables.read_days(folder)  # verified once in this process: the cache must not hide a later write
    if change == "same size":
        size = file.stat().st_size
        _same_size_other_bytes(file)
        assert file.stat().st_size == size
    else:
        frame = _frame()
        _rewrite_in_place(file, frame[frame["as_of_date"] == pd.Timestamp(DAYS[1])].assign(x=-1.0))
    now = file_digest(file)
    for read in (lambda: daytables.read_days(folder), lambda: daytables.read_days_of(folder, DAYS[1], DAYS[1], None),
                 lambda: verified.digest_of([file]), lambda: daytables.row_count([file])):
        with pytest.raises(ChangedSincePublished) as err:
            read()
        message = str(err.value)
        assert message.startswith(f"{file}: changed since it was published (sha256 {now[:12]}, ")
        assert f"MANIFEST records {published[:12]}" in message and "\n" not in message
    assert ChangedSincePublished.exit_code == 1


def test_a_file_written_between_its_check_and_its_read_is_refused(tmp_path: Path, hashes: list[int]) -> None:
    """The write lands after the sha256 matched and before pyarrow parses the inode (the
    storage layer's `faults.after_check` hook). Broken once (the fstat comparison after the
    read removed): the new rows were returned as if checked."""
    folder = _published(tmp_path)
    file = daytables.day_file(folder, DAYS[2])
    frame = _frame()
    tampered = frame[frame["as_of_date"] == pd.Timestamp(DAYS[2])].assign(x=-1.0)

    def write_once(op: str, path: Path) -> None:
        if path == file.resolve() and not written:
            written.append(path)
            _rewrite_in_place(file, tampered)

    written: list[Path] = []
    with faults.after_check(write_once), pytest.raises(ChangedSincePublished) as err:
        daytables.read_days(folder)
    assert written and str(err.value).startswith(f"{file}: changed while it was read (written in place after its "
                                                 "sha256 was compared with ")
    with pytest.raises(ChangedSincePublished, match="changed since it was published"):
        daytables.read_days(folder)  # and from then on refused as changed


def test_a_file_the_manifest_does_not_list_is_refused_and_an_old_layout_is_read_as_it_is(
        tmp_path: Path, hashes: list[int]) -> None:
    folder = _published(tmp_path / "published")
    extra = daytables.day_file(folder, DAYS[-1] + dt.timedelta(days=1))
    extra.write_bytes(daytables.day_file(folder, DAYS[0]).read_bytes())
    with pytest.raises(ChangedSincePublished, match=f"{extra}: not listed in .*MANIFEST"):
        daytables.read_days(folder)
    legacy = tmp_path / "old" / "features" / "features.parquet"  # a root from before generations
    daytables.write_days(_frame(), legacy)
    before = len(hashes)
    assert len(daytables.read_days(legacy)) == 3000 and len(hashes) == before  # read as it is, unhashed
    assert verified.digest_of(daytables.day_files(legacy).values()) == dataset_digest(
        daytables.day_files(legacy).values())


def test_a_carried_file_changed_in_place_keeps_the_published_entry(tmp_path: Path, hashes: list[int]) -> None:
    """The next publish carries a day file it did not write with the entry of what was
    published: before, a file of another size was hashed again and certified. Broken once
    (the size condition of `_carry` restored): the changed file read as published."""
    folder = _published(tmp_path)
    file = daytables.day_file(folder, DAYS[0])
    frame = _frame()
    _rewrite_in_place(file, frame[frame["as_of_date"] == pd.Timestamp(DAYS[0])].head(10))
    with generations.publish(tmp_path, "tables", carry=True) as out:
        (out / "other.json").write_text("{}")
    again = generations.current(tmp_path, "tables") / "features.parquet"
    assert again != folder
    with pytest.raises(ChangedSincePublished, match=f"{daytables.day_file(again, DAYS[0])}: changed since"):
        daytables.read_days(again)


def test_a_missing_day_file_is_a_data_error_naming_it(tmp_path: Path, hashes: list[int]) -> None:
    missing = _published(tmp_path) / "2030-01-01.parquet"
    with pytest.raises(DataError, match=f"{missing}: file not found"):
        with verified.opened([missing]):
            pass
