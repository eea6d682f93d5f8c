"""Honest time split: train as-of dates, an unused gap >= the churn window, then test dates.

Why a gap: the label at as-of t looks at activity in (t, t + W]. If the last training dates
were closer than W days to the first test date, training labels would be computed from the
test period (a leak of the reference project, which split rows at random).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from churn.errors import DataError

FORBIDDEN_COLUMNS = ("engagement_score",)


class SplitError(DataError):
    """The data cannot be split honestly with the configured knobs (message names them)."""


@dataclass(frozen=True)
class TimeSplit:
    """The chosen as-of dates; `gap_days` = first test date - last train date."""

    train_dates: tuple[dt.date, ...]
    test_dates: tuple[dt.date, ...]
    gap_days: int

    def describe(self) -> dict[str, Any]:
        return {
            "train_as_of": [self.train_dates[0].isoformat(), self.train_dates[-1].isoformat()],
            "test_as_of": [self.test_dates[0].isoformat(), self.test_dates[-1].isoformat()],
            "train_days": len(self.train_dates),
            "test_days": len(self.test_dates),
            "gap_days": self.gap_days,
        }


def _as_dates(values: Sequence[Any]) -> list[dt.date]:
    unique = np.unique(np.asarray(values).astype("datetime64[D]"))
    return [d.astype(object) for d in unique]


def time_split(as_of_dates: Sequence[Any], *, test_days: int, gap_days: int,
               min_train_days: int, window_days: int) -> TimeSplit:
    """Last `test_days` dates are the test set; train dates end >= `gap_days` before them."""
    if gap_days < window_days:
        raise SplitError(f"split.gap_days ({gap_days}) must be >= churn.window_days ({window_days})")
    dates = _as_dates(as_of_dates)
    if len(dates) < test_days:
        raise SplitError(f"only {len(dates)} labelled as-of dates, split.test_days needs {test_days}")
    test = dates[-test_days:]
    last_train = test[0] - dt.timedelta(days=gap_days)
    train = [d for d in dates if d <= last_train]
    if len(train) < min_train_days:
        span = f"{dates[0]}..{dates[-1]}" if dates else "none"
        raise SplitError(
            f"only {len(train)} training as-of dates (labelled dates {span}; test_days={test_days}, "
            f"gap_days={gap_days}); split.min_train_days needs {min_train_days}: generate more days")
    split = TimeSplit(tuple(train), tuple(test), (test[0] - train[-1]).days)
    assert_split_is_honest(split, window_days)
    return split


def assert_split_is_honest(split: TimeSplit, window_days: int) -> None:
    """Leakage guard: train labels (t, t+W] must end before the first test as-of date."""
    if not split.train_dates or not split.test_dates:
        raise SplitError("empty train or test dates")
    if max(split.train_dates) + dt.timedelta(days=window_days) > min(split.test_dates):
        raise SplitError(f"train label horizon overlaps the test period (gap {split.gap_days} days "
                         f"< churn window {window_days} days)")


def assert_no_forbidden_columns(columns: Sequence[str]) -> None:
    """Leakage guard: the hidden generator variable must never reach a model."""
    bad = [c for c in columns if c in FORBIDDEN_COLUMNS]
    if bad:
        raise SplitError(f"forbidden column(s) in the training data: {bad} (hidden generator state)")


def date_mask(as_of: Any, dates: Sequence[dt.date]) -> np.ndarray:
    """Bool mask of rows whose as-of date (array-like of dates/datetimes) is in `dates`."""
    values = np.asarray(as_of).astype("datetime64[D]")
    return np.isin(values, np.asarray(dates, dtype="datetime64[D]"))
