"""A tiny, fast configuration for tests and demos (300 users, 90 days, 14-day churn window).

Why 14 days: with the default 30-day window, 90 days leave no room for train dates, a
30-day gap, test dates and the label horizon; the split rules are the same, only smaller.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from churn.config.settings import Settings

TINY_YAML = """\
paths: {{root: {root}}}
generator: {{n_users: {users}, days: {days}}}
churn: {{window_days: 14}}
split: {{gap_days: 14, test_days: 7, min_train_days: 7}}
"""


def tiny_settings(root: str | Path, users: int = 300, days: int = 90) -> Settings:
    """Settings equal to loading TINY_YAML (kept in one place for the CLI and unit tests)."""
    s = Settings()
    return dataclasses.replace(
        s,
        paths=dataclasses.replace(s.paths, root=str(root)),
        generator=dataclasses.replace(s.generator, n_users=users, days=days),
        churn=dataclasses.replace(s.churn, window_days=14),
        split=dataclasses.replace(s.split, gap_days=14, test_days=7, min_train_days=7),
    )
