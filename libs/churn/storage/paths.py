"""The layout of the data root: one place that knows where every artifact lives.

Why: the reference project scattered path strings over its scripts; jobs, the API and the
cluster manifests now agree on one layout under `paths.root` (a PVC in the cluster).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from churn.errors import DataError
from churn.storage.files import locked_temp


@dataclass(frozen=True)
class DataPaths:
    """Directories and well-known files under the data root (nothing is created on init).

    `bound` maps an area (a directory a step publishes, e.g. "features" or
    "predictions/2025-04-30") to another directory: a step reads its inputs from the
    generations it resolved once, and writes its outputs into its staging directory, while
    the functions it calls keep using `paths.features_file` etc. (docs/consistency.md).
    """

    root: Path
    bound: tuple[tuple[str, Path], ...] = ()

    @classmethod
    def from_root(cls, root: str | Path) -> "DataPaths":
        return cls(Path(root))

    def area(self, name: str) -> Path:
        """The directory of area `name`: where it is bound, else `<root>/<name>`."""
        for area, directory in self.bound:
            if area == name:
                return directory
        return self.root / name

    def bind(self, areas: Mapping[str, Path]) -> "DataPaths":
        """These paths with `areas` bound to other directories (later bindings win)."""
        kept = tuple((a, d) for a, d in self.bound if a not in areas)
        return replace(self, bound=kept + tuple((a, Path(d)) for a, d in areas.items()))

    def unbound(self) -> "DataPaths":
        return DataPaths(self.root)

    @property
    def raw(self) -> Path:
        return self.area("raw")

    @property
    def validation(self) -> Path:
        return self.area("validation")

    @property
    def ingest(self) -> Path:
        return self.area("ingest")

    @property
    def processed(self) -> Path:
        return self.area("processed")

    @property
    def features(self) -> Path:
        return self.area("features")

    @property
    def labels(self) -> Path:
        return self.area("labels")

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
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def inbox(self) -> Path:
        """Batches waiting for the daily cycle's `ingest` (one folder per batch)."""
        return self.root / "inbox"

    @property
    def world(self) -> Path:
        """State of the synthetic world that `generate --next-days` continues."""
        return self.area("world")

    # well-known files (the raw tables' files are churn.raw.store's business: read through it)
    @property
    def validation_report(self) -> Path:
        return self.validation / "validation_report.json"

    @property
    def ingest_report(self) -> Path:
        """The last ingest's report (its own area: raw/ holds only what a batch publishes)."""
        return self.ingest / "ingest_report.json"

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

    def ensure(self) -> "DataPaths":
        """Create the directories that are not published areas and prove the root writable
        (idempotent); returns self.

        Areas (raw, processed, features, labels, ...) appear when a step publishes them (a
        symlink to their current generation, docs/consistency.md). Why the write check: a
        volume the app user cannot write (e.g. an NFS export that ignores fsGroup) must stop
        the first step at once, naming the root and the uid.
        """
        try:
            for d in (self.root, self.registry, self.predictions, self.monitoring, self.locks):
                d.mkdir(parents=True, exist_ok=True)
            probe, fd = locked_temp(self.root, "write-check")  # locked: a concurrent sweep leaves it
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise DataError(f"{self.root}: data root is not writable by uid {os.getuid()} "
                            f"({exc.strerror}: {exc.filename})") from exc
        return self
