"""The layout of the data root: one place that knows where every artifact lives.

Why: the reference project scattered path strings over its scripts; jobs, the API and the
cluster manifests now agree on one layout under `paths.root` (a PVC in the cluster).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from churn.errors import DataError
from churn.storage.files import locked_temp


# Areas published as generations (`churn.storage.generations`): `<root>/<area>` is a symlink.
DRIFT_AREA = "monitoring/drift"


@dataclass(frozen=True)
class DataPaths:
    """Directories and well-known files under the data root (nothing is created on init)."""

    root: Path

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
    def user_days(self) -> Path:
        return self.processed / "user_days.parquet"

    @property
    def prepare_report(self) -> Path:
        return self.processed / "prepare_report.json"

    @property
    def features_file(self) -> Path:
        return self.features / "features.parquet"

    @property
    def labels_file(self) -> Path:
        return self.labels / "labels.parquet"

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
