"""Tests for churn.raw.store: the partitioned layout, appends, replaces, day filters, crashes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.raw.store import (BatchWriter, day_files, distinct_values, event_dates, raw_digest, raw_files, read_events,
                             read_manifest, read_users, require_raw, write_batch)
from churn.storage.files import DataError
from churn.storage.paths import DataPaths


def _events(first_id: int, days: list[str], per_day: int = 3) -> pd.DataFrame:
    n = len(days) * per_day
    times = np.repeat(pd.to_datetime(days).to_numpy(), per_day) + np.tile(np.arange(per_day), len(days)) * np.timedelta64(3600, "s")
    return pd.DataFrame({
        "event_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "user_id": np.full(n, 3_000_000_000, dtype=np.int64),
        "event_time": times.astype("datetime64[us]"),
        "event_type": pd.Categorical(["login", "video_watch", "quiz_attempt"] * (n // 3)),
        "course_id": [None, "k8s", "new-course"] * (n // 3),
        "watch_minutes": np.float32(1.5),
        "quiz_score": np.float32(np.nan),
        "amount": np.float32(np.nan),
    })


USERS = pd.DataFrame({"user_id": np.array([3_000_000_000], dtype=np.int64), "country": ["DE"]})


def test_layout_is_partitioned_by_utc_day_and_listed_in_the_manifest(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    batch = write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01", "2024-03-02"])])
    assert batch.batch == 1 and batch.events_added == 6 and batch.dates == ("2024-03-01", "2024-03-02")
    names = sorted(p.relative_to(paths.raw).as_posix() for p in paths.raw.rglob("*.parquet"))
    assert names == ["events/date=2024-03-01/part-000001-0000.parquet",
                     "events/date=2024-03-02/part-000001-0000.parquet", "users/users-000001.parquet"]
    assert [p.relative_to(paths.raw).as_posix() for p in raw_files(paths)] == names[2:] + names[:2]
    assert json.loads((paths.raw / "manifest.json").read_text())["batch"] == 1
    events = read_events(paths)
    assert events["event_id"].tolist() == list(range(1, 7)) and events["user_id"].dtype == np.int64
    assert set(events["user_id"]) == {3_000_000_000}  # 64-bit ids survive
    assert isinstance(events["course_id"].dtype, pd.CategoricalDtype) and events["course_id"].isna().sum() == 2
    pd.testing.assert_frame_equal(read_users(paths), USERS)


def test_a_new_batch_appends_and_day_filters_open_only_those_days(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01", "2024-03-02"])])
    before = {p: p.stat().st_mtime_ns for p in paths.raw.rglob("part-*.parquet")}
    write_batch(paths, "ingest", None, [_events(100, ["2024-03-02", "2024-03-03"])])
    after = {p: p.stat().st_mtime_ns for p in paths.raw.rglob("part-*.parquet")}
    assert all(after[p] == t for p, t in before.items())  # history is not rewritten
    assert len(after) == 4
    assert event_dates(paths) == [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]
    assert len(read_events(paths)) == 12
    assert read_events(paths, dates=[dt.date(2024, 3, 2)])["event_id"].tolist() == [4, 5, 6, 100, 101, 102]
    assert len(read_events(paths, start=dt.date(2024, 3, 2), end=dt.date(2024, 3, 3))) == 9
    assert read_events(paths, dates=[dt.date(2020, 1, 1)], columns=["event_id"]).columns.tolist() == ["event_id"]
    files = day_files(paths)
    assert [len(files[d]) for d in sorted(files)] == [1, 2, 1] and files[dt.date(2024, 3, 3)][0].is_file()
    m = read_manifest(paths)
    assert m.users == "users/users-000001.parquet" and [b.batch for b in m.batches] == [1, 2]


def test_replace_drops_everything_earlier(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01"])])
    write_batch(paths, "generate", USERS, [_events(50, ["2025-01-01"])], replace=True)
    assert read_events(paths)["event_id"].tolist() == [50, 51, 52]
    # the replaced batch's files stay for a reader that read the previous manifest, until the next commit
    assert sorted(read_manifest(paths).kept) == ["events/date=2024-03-01/part-000001-0000.parquet",
                                                 "users/users-000001.parquet"]
    assert len(list(paths.raw.rglob("*.parquet"))) == 4
    write_batch(paths, "ingest", None, [_events(60, ["2025-01-02"])])
    assert sorted(p.name for p in paths.raw.rglob("*.parquet")) == [
        "part-000002-0000.parquet", "part-000003-0000.parquet", "users-000002.parquet"]


def test_a_failing_batch_changes_nothing(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01"])])
    digest = raw_digest(paths)
    with pytest.raises(RuntimeError, match="disk"):
        with BatchWriter(paths, "ingest") as writer:
            writer.add_events(_events(10, ["2024-03-05"]))
            writer.set_users(USERS)
            raise RuntimeError("disk full")
    assert raw_digest(paths) == digest and len(list(paths.raw.rglob("*.parquet"))) == 2
    # files a killed writer left behind are not read, and the next batch removes them
    stray = paths.raw / "events" / "date=2024-03-09" / "part-000002-0000.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half a file")
    assert len(read_events(paths)) == 3
    write_batch(paths, "ingest", None, [_events(20, ["2024-03-02"])])
    assert not stray.exists() and len(read_events(paths)) == 6


def test_a_part_changed_after_its_commit_is_never_read(tmp_path: Path) -> None:
    """Every reader checks the bytes it reads against the sha256 the batch recorded, so the raw
    digest (from the manifest) names exactly the bytes a reader can get. Broken once (the
    comparison in `verified_bytes` removed): the swapped parts were read, no error."""
    from churn.storage.files import file_digest

    paths = DataPaths.from_root(tmp_path)
    write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01", "2024-03-02"])])
    m = read_manifest(paths)
    assert all(p.sha256 == file_digest(paths.raw / p.path) for p in m.parts)
    assert m.users_sha256 == file_digest(paths.raw / str(m.users))
    digest = raw_digest(paths)
    a, b = sorted(paths.raw.rglob("part-*.parquet"))
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    assert raw_digest(paths) == digest  # what was committed (and validated) is unchanged
    for read in (lambda: read_events(paths), lambda: read_events(paths, columns=["event_id"], dates=[dt.date(2024, 3, 1)])):
        with pytest.raises(DataError, match=r"date=2024-03-01/part-000001-0000.parquet: changed since its raw batch "
                                            r"was committed \(sha256 [0-9a-f]{12}, raw/manifest.json records"):
            read()
    users = paths.raw / str(m.users)
    users.write_bytes(users.read_bytes() + b"x")
    with pytest.raises(DataError, match="users-000001.parquet: changed since"):
        read_users(paths)


def test_a_manifest_from_before_digests_hashes_its_files(tmp_path: Path) -> None:
    """A raw manifest written before the per-file digests: its files are hashed (the digest is
    the same as a recorded one) and a swapped part changes the digest, as before."""
    paths = DataPaths.from_root(tmp_path)
    write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01", "2024-03-02"])])
    digest = raw_digest(paths)
    doc = json.loads((paths.raw / "manifest.json").read_text())
    doc.pop("users_sha256")
    for p in doc["parts"]:
        p.pop("sha256")
    (paths.raw / "manifest.json").write_text(json.dumps(doc))
    assert raw_digest(paths) == digest and len(read_events(paths)) == 6
    a, b = sorted(paths.raw.rglob("part-*.parquet"))
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    assert raw_digest(paths) != digest


def test_missing_raw_data_names_both_ways_in(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    with pytest.raises(DataError, match="no raw users and no raw events.*ml_jobs ingest.*ml_jobs generate"):
        require_raw(paths)
    write_batch(paths, "ingest", USERS, [])
    with pytest.raises(DataError, match="no raw events.*ml_jobs ingest"):
        read_events(paths)
    assert len(read_users(paths)) == 1


def test_distinct_values_of_a_column_over_every_stored_day(tmp_path: Path) -> None:

    paths = DataPaths.from_root(tmp_path)
    write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01", "2024-03-02"])])
    later = _events(100, ["2024-03-02", "2024-03-05"])
    later["course_id"] = [None, "rust-101", "k8s"] * (len(later) // 3)
    write_batch(paths, "ingest", None, [later])
    want = {str(v) for v in read_events(paths, columns=["course_id"])["course_id"].dropna().unique()}
    assert distinct_values(paths, "course_id") == want == {"k8s", "new-course", "rust-101"}
    assert distinct_values(paths, "event_type") == {"login", "video_watch", "quiz_attempt"}


def test_max_value_of_a_column_over_every_stored_day_batch_by_batch(tmp_path: Path) -> None:
    """`generate --next-days` takes the next event id from it; reading the column whole to take
    its maximum held every stored id (1.9 GB at 1,000,000 users)."""
    from churn.raw.store import max_value

    paths = DataPaths.from_root(tmp_path)
    write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01", "2024-03-02"])])
    write_batch(paths, "ingest", None, [_events(500, ["2024-02-27"])])  # the largest ids on the earliest day
    want = int(read_events(paths, columns=["event_id"])["event_id"].max())
    assert max_value(paths, "event_id") == want >= 500
    assert max_value(paths, "user_id") == int(read_events(paths, columns=["user_id"])["user_id"].max())


def test_a_part_in_the_contract_types_is_read_directly_as_the_fragment_reads_it(tmp_path: Path) -> None:
    """`read_event_file` reads a part stored in the contract's types with the Parquet reader
    (`_contract_table`), every other part through the dataset fragment; both give the same
    table (types, values, no writer metadata) for every column selection."""
    import io

    import pyarrow.parquet as pq

    from churn.raw import store

    paths = DataPaths.from_root(tmp_path)
    write_batch(paths, "ingest", USERS, [_events(1, ["2024-03-01"], per_day=6)])
    part = day_files(paths)[dt.date(2024, 3, 1)][0]
    stored = part.read_bytes()
    retyped = io.BytesIO()  # the same rows as pandas writes them: other stored types
    pq.read_table(part).to_pandas().astype({"watch_minutes": "float64"}).to_parquet(retyped, index=False)
    for columns in (list(store.EVENT_COLUMNS), ["event_id"], ["course_id", "event_type", "amount"]):
        want = store._fragment(stored).to_table(schema=store.EVENTS_SCHEMA, columns=columns)
        direct = store._contract_table(stored, columns)
        assert direct is not None and direct.equals(want, check_metadata=True)
        assert direct.schema.equals(want.schema, check_metadata=True)
        table, _ = store.read_event_file(paths, part, columns)
        assert table.equals(want, check_metadata=True)
        assert store._contract_table(retyped.getvalue(), columns) is None or "watch_minutes" not in columns
    assert store._contract_table(stored, ["no_such_column"]) is None
