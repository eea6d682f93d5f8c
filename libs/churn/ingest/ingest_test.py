"""Tests for `ml_jobs ingest`: exports the tests make themselves, in other shapes than ours.

Each export scenario runs ingest -> prepare -> features -> labels -> train -> promote ->
batch-score on a fresh data root. Where the export carries the same data as a generated
reference (only formats, names, zones or ids differ), the scores must be the reference's,
user for user: that is what "the scores belong to the right users" means.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.config.settings import IngestColumns, Settings
from churn.data.generate import generate
from churn.data.validate import Expectations, validate_frames
from churn.ingest.ingest import report_path, run_ingest
from churn.pipeline import steps
from churn.pipeline.testing import tiny_settings
from churn.raw.store import raw_digest, read_events, read_manifest, read_users
from churn.compiled.check_rows import edge_rows, valid_rows
from churn.compiled.scorer import compile_scorer
from churn.scoring.batch import model_scorer, model_specs, score_frame
from churn.storage.files import DataError
from churn.storage.paths import DataPaths
from churn.features.matrix import frame_matrix

USERS, DAYS = 300, 90


def _settings(root: Path, **changes: object) -> Settings:
    s = tiny_settings(root, USERS, DAYS)
    return dataclasses.replace(s, **changes) if changes else s


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(_settings(Path("unused")).generator)


def _pipeline(settings: Settings) -> pd.DataFrame:
    """prepare .. batch-score on ingested raw data; returns the scores (user_id, risk)."""
    for step in (steps.step_prepare, steps.step_features, steps.step_labels, steps.step_train):
        result = step(settings)
        assert result.exit_code == 0, (result.name, result.message)
    assert steps.step_promote(settings, reason="test", force=True).exit_code == 0
    scored = steps.step_batch_score(settings)
    return pd.read_parquet(scored.outputs[0])[["user_id", "risk"]]


@pytest.fixture(scope="module")
def reference_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pd.DataFrame]:
    """The same data brought in by `generate` (the way the seed does it), and its scores."""
    settings = _settings(tmp_path_factory.mktemp("reference"))
    assert steps.step_generate(settings).exit_code == 0
    assert steps.step_validate(settings).exit_code == 0
    return settings, _pipeline(settings)


@pytest.fixture(scope="module")
def reference(reference_root: tuple[Settings, pd.DataFrame]) -> pd.DataFrame:
    return reference_root[1]


def _ingest(settings: Settings, users: Path | None, events: Path | None, fmt: str | None = None):
    result = steps.step_ingest(settings, str(users) if users else None, str(events) if events else None, fmt)
    return result


def _ingest_csv(tmp_path: Path, users: pd.DataFrame, events: pd.DataFrame, settings: Settings | None = None):
    """Write both tables as CSV, ingest them into <tmp>/root; (settings, step result, report dict)."""
    users.to_csv(tmp_path / "users.csv", index=False)
    events.to_csv(tmp_path / "events.csv", index=False)
    settings = settings or _settings(tmp_path / "root")
    result = _ingest(settings, tmp_path / "users.csv", tmp_path / "events.csv")
    assert result.exit_code == 0, result.message
    report = json.loads((Path(settings.paths.root) / "raw" / "ingest_report.json").read_text())["report"]
    return settings, result, report


def _same_scores(got: pd.DataFrame, reference: pd.DataFrame, id_offset: int = 0) -> None:
    ref = reference.assign(user_id=reference["user_id"] + id_offset).sort_values("user_id", ignore_index=True)
    got = got.sort_values("user_id", ignore_index=True)
    assert got["user_id"].tolist() == ref["user_id"].tolist()
    np.testing.assert_allclose(got["risk"].to_numpy(), ref["risk"].to_numpy(), rtol=0, atol=1e-9)


def _plain_users(users: pd.DataFrame) -> pd.DataFrame:
    return users.drop(columns=["engagement_score"]).astype({"plan": str, "country": str, "marketing_source": str})


def _plain_events(events: pd.DataFrame) -> pd.DataFrame:
    return events.astype({"event_type": str}).assign(course_id=events["course_id"].astype(object))


# ------------------------------------------------------------------ export scenarios


def test_csv_with_iso_strings_offsets_and_an_extra_column(tmp_path, frames, reference):
    users, events = _plain_users(frames[0]), _plain_events(frames[1])
    users = users.assign(signup_date=users["signup_date"].dt.strftime("%Y-%m-%d"), email="x@example.org")
    local = events["event_time"] + pd.Timedelta(hours=2)  # the same instants, written in UTC+02:00
    events = events.assign(event_time=local.dt.strftime("%Y-%m-%dT%H:%M:%S+02:00"), session="s1")
    settings, result, report = _ingest_csv(tmp_path, users, events)
    assert report["extra_columns"] == {"users": ["email"], "events": ["session"]}
    assert "extra events columns ignored: ['session']" in result.message
    _same_scores(_pipeline(settings), reference)


def test_gzipped_json_lines(tmp_path, frames, reference):
    users, events = _plain_users(frames[0]), _plain_events(frames[1])
    users = users.assign(signup_date=users["signup_date"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    events = events.assign(event_time=events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    for name, frame in (("users", users), ("events", events)):
        with gzip.open(tmp_path / f"{name}.jsonl.gz", "wt") as fh:
            frame.to_json(fh, orient="records", lines=True)
    settings = _settings(tmp_path / "root")
    result = _ingest(settings, tmp_path / "users.jsonl.gz", tmp_path / "events.jsonl.gz")
    assert result.exit_code == 0, result.message
    _same_scores(_pipeline(settings), reference)


def test_parquet_with_other_dtypes(tmp_path, frames, reference):
    users, events = _plain_users(frames[0]), _plain_events(frames[1])
    users = users.astype({"user_id": np.int32, "is_paid": bool}).assign(
        signup_date=users["signup_date"].dt.strftime("%Y-%m-%d"))
    events = events.astype({"user_id": np.int32, "event_id": np.int32, "watch_minutes": np.float64}).assign(
        event_time=events["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    users.to_parquet(tmp_path / "u.parquet", index=False)
    events.to_parquet(tmp_path / "e.parquet", index=False)
    settings = _settings(tmp_path / "root")
    result = _ingest(settings, tmp_path / "u.parquet", tmp_path / "e.parquet")
    assert result.exit_code == 0, result.message
    assert read_events(DataPaths.from_root(tmp_path / "root"))["user_id"].dtype == np.int64
    _same_scores(_pipeline(settings), reference)


def test_a_column_mapping_from_config(tmp_path, frames, reference):
    users = _plain_users(frames[0]).rename(columns={"user_id": "customer", "signup_date": "created"})
    events = _plain_events(frames[1]).rename(columns={"user_id": "customer", "event_time": "ts", "event_type": "kind"})
    users.to_csv(tmp_path / "users.txt", index=False)  # an extension that needs --format
    events.to_csv(tmp_path / "events.csv.gz", index=False)
    mapping = IngestColumns(users={"user_id": "customer", "signup_date": "created"},
                            events={"user_id": "customer", "event_time": "ts", "event_type": "kind"})
    base = _settings(tmp_path / "root")
    settings = dataclasses.replace(base, ingest=dataclasses.replace(base.ingest, columns=mapping))
    unmapped = _ingest(base, tmp_path / "users.txt", None, "csv")
    assert unmapped.exit_code == 1 and "required column 'user_id' is missing" in unmapped.message
    result = _ingest(settings, tmp_path / "users.txt", tmp_path / "events.csv.gz", "csv")
    assert result.exit_code == 0, result.message
    _same_scores(_pipeline(settings), reference)


def test_ids_above_2_to_the_31_come_out_of_batch_score_unchanged(tmp_path, frames, reference):
    offset = 3_000_000_000
    users, events = _plain_users(frames[0]), _plain_events(frames[1])
    users = users.assign(user_id=users["user_id"] + offset)
    events = events.assign(user_id=events["user_id"] + offset, event_id=events["event_id"] + 5_000_000_000)
    settings, _, _ = _ingest_csv(tmp_path, users, events)
    scores = _pipeline(settings)
    assert scores["user_id"].min() > 2**31 and scores["user_id"].dtype == np.int64
    _same_scores(scores, reference, id_offset=offset)


def test_another_year_a_new_country_a_new_course_and_an_unknown_event_type(tmp_path, frames, reference):
    users, events = _plain_users(frames[0]), _plain_events(frames[1])
    shift = pd.Timedelta(days=-731)  # 2023
    new_country = users["user_id"] % 5 == 0
    users = users.assign(signup_date=users["signup_date"] + shift,
                         country=users["country"].where(~new_country, "DE"))
    events = events.assign(event_time=events["event_time"] + shift,
                           course_id=events["course_id"].replace({"terraform": "rust-101"}))
    extra = events.head(100).assign(event_id=np.arange(10**9, 10**9 + 100), event_type="page_view")
    events = pd.concat([events, extra], ignore_index=True)
    settings, result, report = _ingest_csv(tmp_path, users, events)
    assert report["unknown_event_types"] == {"page_view": 100}
    assert "DE" in report["vocabularies"]["country"] and "rust-101" in report["vocabularies"]["course_id"]
    assert "" not in report["vocabularies"]["course_id"]  # an empty CSV field is missing, not a course
    scores = _pipeline(settings)
    prepared = json.loads((tmp_path / "root" / "processed" / "prepare_report.json").read_text())
    assert prepared["data_start"].startswith("2023-") and prepared["dropped"]["events_unknown_type"] == 100
    assert set(scores["user_id"]) == set(reference["user_id"])  # same activity, same eligible users
    de = set(users.loc[new_country, "user_id"])
    assert de & set(scores["user_id"]) and scores["risk"].between(0, 1).all()
    # The monitoring and retraining steps run unchanged on the ingested data too.
    assert steps.step_score_distribution(settings).exit_code == 0
    drift = steps.step_drift_check(settings)
    assert drift.exit_code == 0 and drift.detail["status"] != "FAIL", drift.message  # one unshifted world
    assert "2023-" in drift.message
    for result in steps.step_retrain(settings):
        assert result.exit_code == 0, (result.name, result.message)
    rejecting = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, root=str(tmp_path / "r2")),
                                    validation=dataclasses.replace(settings.validation, unknown_event_types="reject"))
    rejected = _ingest(rejecting, tmp_path / "users.csv", tmp_path / "events.csv")
    assert rejected.exit_code == 1 and "events.event_type.known" in rejected.message and "page_view" in rejected.message


def test_both_models_score_countries_and_sources_they_never_saw(reference_root):
    """Open vocabularies reach the model: unseen values are its unknown category, on the
    compiled path too (not a fall-back), and equal sklearn's predict_proba."""
    settings, _ = reference_root
    paths = DataPaths.from_root(settings.paths.root)
    features = pd.read_parquet(paths.features_file)
    features = features[features["as_of_date"] == features["as_of_date"].max()].reset_index(drop=True)
    unseen = features.assign(country="DE", marketing_source="tiktok")
    registry = steps.registry_for(paths)
    run = json.loads(steps.training_run_path(paths).read_text())
    kinds = set()
    for version in run["versions"]:
        loaded = registry.load(version)
        specs = model_specs(loaded)
        expected = loaded.model.predict_proba(frame_matrix(unseen, specs))[:, 1]
        compiled = compile_scorer(loaded.model, np.vstack([valid_rows(specs), edge_rows(specs)]))  # the API's
        assert compiled.kind in ("linear", "trees"), compiled.kind
        kinds.add(compiled.kind)
        for scorer in (compiled, model_scorer(loaded)):  # and batch-score's (sklearn for trees)
            risk = score_frame(loaded, unseen, scorer)["risk"].to_numpy()
            assert np.isfinite(risk).all()
            np.testing.assert_allclose(risk, expected, rtol=1e-9, atol=1e-12)
    assert kinds == {"linear", "trees"}


# ------------------------------------------------------------------ idempotence, upserts, one table alone


def _january_and_later(tmp_path: Path, frames) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, Settings, DataPaths]:
    """users.csv, jan.csv (January's events) and later.csv (the rest) in tmp_path, and a root."""
    users, events = _plain_users(frames[0]), _plain_events(frames[1])
    first_days = events["event_time"] < pd.Timestamp("2025-02-01")
    users.to_csv(tmp_path / "users.csv", index=False)
    events[first_days].to_csv(tmp_path / "jan.csv", index=False)
    events[~first_days].to_csv(tmp_path / "later.csv", index=False)
    return users, events, first_days, _settings(tmp_path / "root"), DataPaths.from_root(tmp_path / "root")


def test_the_same_files_twice_change_nothing_and_one_table_may_come_alone(tmp_path, frames):
    users, events, first_days, settings, paths = _january_and_later(tmp_path, frames)
    assert _ingest(settings, tmp_path / "users.csv", None).exit_code == 0  # users alone
    assert _ingest(settings, None, tmp_path / "jan.csv").exit_code == 0  # events alone
    digest = raw_digest(paths)
    again = _ingest(settings, tmp_path / "users.csv", tmp_path / "jan.csv")
    assert again.exit_code == 0 and again.detail["batch"] is None and raw_digest(paths) == digest
    assert again.detail["events_already_stored"] == int(first_days.sum())
    later = _ingest(settings, None, tmp_path / "later.csv")
    assert later.exit_code == 0 and later.detail["events_added"] == int((~first_days).sum())
    stored = read_events(paths).sort_values("event_id", ignore_index=True)
    assert stored["event_id"].tolist() == events["event_id"].tolist()
    # upsert: the newest attributes win, other users keep theirs
    changed = users.head(3).assign(plan="paid", is_paid=1, country="BR")
    changed.to_csv(tmp_path / "changed.csv", index=False)
    upsert = _ingest(settings, tmp_path / "changed.csv", None)
    assert upsert.exit_code == 0 and upsert.detail["users_updated"] >= 1 and upsert.detail["users_added"] == 0
    now = read_users(paths).set_index("user_id")
    assert len(now) == USERS and set(now.loc[changed["user_id"], "country"]) == {"BR"}
    assert now.loc[users["user_id"].iloc[5], "country"] == users["country"].iloc[5]
    assert [b.kind for b in read_manifest(paths).batches] == ["ingest"] * 4
    assert steps.step_prepare(settings).exit_code == 0  # still stamped as validated


def test_a_batch_commits_with_its_own_report(tmp_path, frames):
    """The batch's report is written before the commit and named (path, sha256) by the
    manifest: a kill before the manifest's switch leaves neither the batch nor its report
    visible (the next batch removes the orphan); `raw/ingest_report.json` is only the last
    attempt's log. Broken once (the report written after the commit, as before): the test
    failed, the committed batch named no report of its own."""
    from churn.raw.store import batch_report
    from churn.storage import faults

    users, events, first_days, settings, paths = _january_and_later(tmp_path, frames)
    first = run_ingest(settings, paths, str(tmp_path / "users.csv"), str(tmp_path / "jan.csv"))
    batch = read_manifest(paths).batches[-1]
    report = batch_report(paths, batch)
    assert first.report_path == str(paths.raw / "reports" / "ingest-000001.json")
    assert report["batch"] == 1 and report["counts"]["events_added"] == int(first_days.sum())
    assert report["dates"] == list(batch.dates) and report["report"]["ok"]

    def crash_at(op_name: str, file_name: str):
        def inject(op: str, path: Path) -> None:
            if op == op_name and path.name == file_name:
                raise faults.SimulatedCrash(f"killed at {op} {path}")
        return faults.injecting(inject)

    with pytest.raises(faults.SimulatedCrash), crash_at("rename", "manifest.json"):  # before the switch
        run_ingest(settings, paths, None, str(tmp_path / "later.csv"))
    assert [b.batch for b in read_manifest(paths).batches] == [1]  # its written report is listed nowhere
    with pytest.raises(faults.SimulatedCrash), crash_at("write", "ingest_report.json"):  # after the switch
        run_ingest(settings, paths, None, str(tmp_path / "later.csv"))
    batch = read_manifest(paths).batches[-1]
    assert batch.batch == 2 and batch_report(paths, batch)["counts"]["events_added"] == int((~first_days).sum())
    assert json.loads(report_path(paths).read_text())["batch"] == 1  # the log: the last attempt that got there
    assert sorted(p.name for p in (paths.raw / "reports").iterdir()) == ["ingest-000001.json", "ingest-000002.json"]
    orphan = paths.raw / "reports" / "ingest-000002.json"
    orphan.write_text(orphan.read_text().replace('"ok": true', '"ok": false', 1))
    with pytest.raises(DataError, match="ingest-000002.json: changed since raw batch 2 committed it"):
        batch_report(paths, read_manifest(paths).batches[-1])


# ------------------------------------------------------------------ bad input: clear errors, nothing changed


@pytest.fixture()
def stored(tmp_path, frames) -> tuple[Settings, DataPaths, str]:
    """A root holding the first 150 users' data (to check that bad batches change nothing)."""
    users, events = _plain_users(frames[0]), _plain_events(frames[1])
    users[users["user_id"] <= 150].to_csv(tmp_path / "users.csv", index=False)
    events[events["user_id"] <= 150].to_csv(tmp_path / "events.csv", index=False)
    settings = _settings(tmp_path / "root")
    assert _ingest(settings, tmp_path / "users.csv", tmp_path / "events.csv").exit_code == 0
    paths = DataPaths.from_root(tmp_path / "root")
    return settings, paths, raw_digest(paths)


def _bad_events(tmp_path: Path, frames, change) -> Path:
    events = _plain_events(frames[1])
    events = change(events[(events["user_id"] > 150) & (events["user_id"] <= 160)].copy())
    path = tmp_path / "bad.csv"
    events.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("change, rule, example", [
    (lambda e: e.assign(user_id=e["user_id"].astype(object).where(e.index != e.index[3], "abc")),
     "events.user_id.parses_as_integer", "abc"),
    (lambda e: e.assign(event_time=e["event_time"].astype(str).where(e.index != e.index[0], "yesterday")),
     "events.event_time.parses_as_datetime", "yesterday"),
    (lambda e: e.assign(user_id=e["user_id"].where(e.index != e.index[1], 999_999)),
     "events.user_id.known_user", "999999"),
    (lambda e: e.assign(event_time=e["event_time"].where(e.index != e.index[2], pd.Timestamp("2099-01-01"))),
     "events.event_time.not_in_future", "2099-01-01"),
    (lambda e: e.assign(watch_minutes=e["watch_minutes"].where(e.index != e.index[4], np.inf)),
     "events.watch_minutes.finite", "inf"),
    (lambda e: pd.concat([e, e.head(1).assign(watch_minutes=77.0)]),
     "events.event_id.unique", "different contents"),
    (lambda e: e.assign(event_id=e["event_id"].where(e.index != e.index[0], 1)),
     "events.event_id.same_content_as_stored", "already stored"),
    (lambda e: e.head(0), "events.rows.not_empty", "no rows"),
])
def test_bad_events_are_named_and_change_nothing(tmp_path, frames, stored, change, rule, example):
    settings, paths, digest = stored
    path = _bad_events(tmp_path, frames, change)
    result = _ingest(settings, None, path)
    assert result.exit_code == 1, result.message
    assert rule in result.message and example in result.message and str(path) in result.message, result.message
    assert raw_digest(paths) == digest
    saved = json.loads((paths.raw / "ingest_report.json").read_text())
    assert not saved["ok"] and rule in [v["rule"] for v in saved["report"]["violations"]]


def test_repeated_identical_rows_are_dropped_not_errors(tmp_path, frames, stored):
    settings, paths, _ = stored
    path = _bad_events(tmp_path, frames, lambda e: pd.concat([e, e.head(5)]))
    result = _ingest(settings, tmp_path / "users.csv", path)
    assert result.exit_code == 1 and "events.user_id.known_user" in result.message  # users 151.. unknown
    users = _plain_users(frames[0])
    users[users["user_id"] <= 160].to_csv(tmp_path / "more_users.csv", index=False)
    result = _ingest(settings, tmp_path / "more_users.csv", path)
    assert result.exit_code == 0, result.message
    assert result.detail["events_repeated"] == 5


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"event_id;user_id;event_time;event_type\n1;1;2025-01-01;login\n", "';'-delimited"),
    (b"event_id,user_id\n1,2,3\n", "cannot read as csv"),
    (b"\x1f\x8b\x08garbage", "cannot read as csv"),
])
def test_unreadable_files_are_errors_naming_the_file(tmp_path, stored, content, message):
    settings, paths, digest = stored
    path = tmp_path / ("x.csv.gz" if content.startswith(b"\x1f\x8b") else "x.csv")
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        _ingest(settings, None, path)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="file not found"):
        _ingest(settings, None, tmp_path / "nothere.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="bad.parquet: cannot read as parquet"):
        _ingest(settings, None, tmp_path / "bad.parquet")
    (tmp_path / "events.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="--format"):
        _ingest(settings, None, tmp_path / "events.xlsx")
    assert raw_digest(paths) == digest


def test_zero_users_and_zone_aware_times_are_named_rules(frames):
    users, events = frames
    exp = Expectations(now=dt.datetime(2026, 1, 1))
    report = validate_frames(users.head(0), events.head(0), exp)
    rules = {v.rule for v in report.violations}
    assert {"users.rows.not_empty", "events.rows.not_empty"} <= rules
    aware = events.assign(event_time=events["event_time"].dt.tz_localize("UTC"))
    report = validate_frames(users, aware, exp)
    [v] = report.violations
    assert v.rule == "events.event_time.present_and_datetime" and "zone-aware" in v.message


def test_missing_raw_data_names_both_ways_in(tmp_path):
    settings = _settings(tmp_path / "root")
    with pytest.raises(DataError, match="ml_jobs ingest.*ml_jobs generate"):
        steps.step_validate(settings)


def test_calendar_warnings_name_the_missing_days_and_the_days_older_than_the_retention() -> None:
    from churn.ingest.ingest import calendar_warnings

    day = dt.date(2025, 3, 1)
    stored = [day + dt.timedelta(days=i) for i in range(10)]  # 03-01 .. 03-10
    assert calendar_warnings(stored, [dt.date(2025, 3, 11)], 180) == []     # the next day
    assert calendar_warnings(stored, [dt.date(2025, 3, 5)], 180) == []      # a late event, inside
    assert calendar_warnings([], [day], 180) == []                          # the first batch
    [gap] = calendar_warnings(stored, [dt.date(2025, 3, 14)], 180)
    assert "3 day(s)" in gap and "2025-03-11, 2025-03-12, 2025-03-13" in gap
    [before] = calendar_warnings(stored, [dt.date(2025, 2, 26)], 180)       # a batch before the data
    assert "2025-02-27, 2025-02-28" in before
    [old] = calendar_warnings(stored, [dt.date(2025, 3, 2), dt.date(2025, 3, 9)], 3)  # before 03-07
    assert "older than the retention" in old and old.endswith(": 2025-03-02"), old
    assert len(calendar_warnings(stored, [dt.date(2024, 9, 1)], 180)) == 2   # old AND far before: both named
