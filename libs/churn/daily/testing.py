"""Test helpers of the daily cycle: a small data root seeded through the inbox, and the check
that the stored grid, features and labels equal a rebuild from all raw data (the seed's own
functions: prepare, compute_features, build_labels)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from churn.config.settings import Settings
from churn.daily import inbox, world
from churn.data.generate import generate
from churn.data.prepare import prepare_frames
from churn.features.compute import compute_features
from churn.labels.build import build_labels
from churn.raw.store import event_dates, read_events, read_users
from churn.storage.daytables import read_days
from churn.storage.paths import DataPaths
from churn.storage.tables import atomic_write_parquet, read_parquet


def small_settings(root: Path, users: int = 300, days: int = 45) -> Settings:
    s = Settings()
    g = dataclasses.replace(s.generator, n_users=users, days=days, signup_rate=0.01)
    return dataclasses.replace(s, paths=dataclasses.replace(s.paths, root=str(root)), generator=g,
                               churn=dataclasses.replace(s.churn, window_days=7))


def seed_raw(settings: Settings, paths: DataPaths) -> None:
    """The seed world's raw data, ingested through the same path as every later batch."""
    users, events = generate(settings.generator)
    folder = paths.inbox / "0-seed"
    world.publish_batch(folder, world.raw_users(users), events)
    assert [o.ok for o in inbox.ingest_inbox(settings, paths)] == [True]


def rebuild(settings: Settings, paths: DataPaths) -> dict[str, pd.DataFrame]:
    """Grid, features and labels from all raw data at once (the seed's functions)."""
    days = event_dates(paths)
    grid, _ = prepare_frames(read_users(paths), read_events(paths), period=(days[0], days[-1]))
    feats = compute_features(grid, settings.features.windows_days)
    labels = build_labels(grid, settings.churn.window_days)
    return {"grid": grid, "features": feats, "labels": labels}


def by_key(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["user_id", "as_of_date"], kind="stable").reset_index(drop=True)


def as_stored(frame: pd.DataFrame, scratch: Path) -> pd.DataFrame:
    """The frame as a step that wrote it would read it back (Parquet round trip: same dtypes)."""
    return read_parquet(atomic_write_parquet(frame, scratch))


def assert_equal_to_rebuild(settings: Settings, paths: DataPaths) -> None:
    expected = rebuild(settings, paths)
    for name, folder in (("grid", paths.user_days), ("features", paths.features_file), ("labels", paths.labels_file)):
        got = by_key(read_days(folder))
        want = by_key(as_stored(expected[name], paths.root / f"rebuild-{name}.parquet"))
        assert len(got) == len(want), f"{name}: {len(got)} rows, rebuild has {len(want)}"
        pd.testing.assert_frame_equal(got, want[got.columns.tolist()], check_dtype=True, obj=name)
