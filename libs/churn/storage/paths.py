"""The layout of the data root: one place that knows where every artifact lives.

Why: the reference project scattered path strings over its scripts; jobs, the API and the
cluster manifests now agree on one layout under `paths.root` (a PVC in the cluster).

The derived tables (the user x day grid, the features, the labels, and the update's state and
users snapshot) live in ONE generation area, `<root>/tables` (`churn.storage.derived`), so
one update's outputs switch together. `bound()` resolves it once: a run that reads through a
bound DataPaths stays on one state of all three tables even if an update publishes meanwhile.
A root from before (plain `processed/`, `features/`, `labels/` folders) is read as it is and
migrated by the next publish.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from churn.errors import DataError
from churn.storage import generations
from churn.storage.files import locked_temp


# Areas published as generations (`churn.storage.generations`): `<root>/<area>` is a symlink.
DRIFT_AREA = "monitoring/drift"
TABLES_AREA = "tables"  # grid, features, labels, update state: one update's outputs together


def predictions_area(day: dt.date) -> str:
    """The generation area of one as-of date's outputs: `predictions/<date>`."""
    return f"predictions/{day.isoformat()}"


# The files of the tables area, by name inside a generation (the layout before generations:
# `legacy_tables`).
USER_DAYS, FEATURES, LABELS = "user_days.parquet", "features.parquet", "labels.parquet"
UPDATE_STATE, USERS_SNAPSHOT = "update_state.json", "users.parquet"
# a day file of a day-partitioned table (`churn.storage.daytables`): `<dir>/YYYY-MM-DD.parquet`
DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.parquet$")


@dataclass(frozen=True)
class DataPaths:
    """Directories and well-known files under the data root (nothing is created on init)."""

    root: Path
    # the tables' directory this DataPaths reads and writes: set by `bound()` (the generation
    # current then, None with `tables_bound` = the layout from before generations) or by the
    # publisher (`churn.storage.derived`: its new generation); unbound = the current one now
    tables_at: Path | None = None
    tables_bound: bool = False

    @classmethod
    def from_root(cls, root: str | Path) -> "DataPaths":
        return cls(Path(root))

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    @property
    def drift_reports(self) -> Path:
        """`monitoring/drift/`: one JSON + HTML per recent-window end, published together."""
        return self.root / DRIFT_AREA

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def inbox(self) -> Path:
        """Batches waiting for the daily cycle's `ingest` (one folder per batch)."""
        return self.root / "inbox"

    @property
    def world(self) -> Path:
        """State of the synthetic world that `generate --next-days` continues."""
        return self.root / "world"

    # well-known files (the raw tables' files are churn.raw.store's business: read through it)
    @property
    def validation_report(self) -> Path:
        return self.raw / "validation_report.json"

    @property
    def tables(self) -> Path | None:
        """The directory of the derived tables' generation (bound, or current now); None for a
        root from before generations (`legacy_tables`) or without tables yet."""
        if self.tables_bound:
            return self.tables_at
        return generations.current(self.root, TABLES_AREA)

    def bound(self) -> "DataPaths":
        """This layout with the tables' generation resolved once (a reader's whole run)."""
        if self.tables_bound:
            return self
        return dataclasses.replace(self, tables_at=self.tables, tables_bound=True)

    def writing_tables(self, directory: Path) -> "DataPaths":
        """This layout with the tables in `directory` (a generation being written)."""
        return dataclasses.replace(self, tables_at=Path(directory), tables_bound=True)

    def legacy_tables(self) -> dict[str, Path]:
        """{name in a generation: path} of the tables in the layout from before generations."""
        return {USER_DAYS: self.processed / USER_DAYS, FEATURES: self.features / FEATURES,
                LABELS: self.labels / LABELS, UPDATE_STATE: self.processed / UPDATE_STATE,
                USERS_SNAPSHOT: self.processed / USERS_SNAPSHOT}

    def _table(self, name: str) -> Path:
        at = self.tables
        return self.legacy_tables()[name] if at is None else at / name

    @property
    def user_days(self) -> Path:
        """The grid: a folder of one Parquet file per as-of day (`churn.storage.daytables`)."""
        return self._table(USER_DAYS)

    @property
    def update_state(self) -> Path:
        """What the last update covered (`churn.daily.update`), published with its tables."""
        return self._table(UPDATE_STATE)

    @property
    def users_snapshot(self) -> Path:
        """The cleaned users the grid was built from (new and changed users are found against it)."""
        return self._table(USERS_SNAPSHOT)

    @property
    def prepare_report(self) -> Path:
        return self.processed / "prepare_report.json"

    @property
    def features_file(self) -> Path:
        return self._table(FEATURES)

    @property
    def labels_file(self) -> Path:
        return self._table(LABELS)

    @property
    def training_set(self) -> Path:
        return self.labels / "training_set.parquet"

    def all_dirs(self) -> tuple[Path, ...]:
        return (self.raw, self.processed, self.features, self.labels, self.registry,
                self.predictions, self.monitoring, self.locks)

    def ensure(self) -> "DataPaths":
        """Create every directory (idempotent) and prove the root writable; returns self.

        Why the write check: a volume the app user cannot write (e.g. an NFS export that
        ignores fsGroup) must stop the first step at once, naming the root and the uid.
        """
        try:
            for d in self.all_dirs():
                d.mkdir(parents=True, exist_ok=True)
            probe, fd = locked_temp(self.root, "write-check")  # locked: a concurrent sweep leaves it
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise DataError(f"{self.root}: data root is not writable by uid {os.getuid()} "
                            f"({exc.strerror}: {exc.filename})") from exc
        return self
