"""Hot reload: watch the registry's production alias and swap in verified new versions.

Why polling a stat: the alias is one small file replaced by rename on promotion, so its
(inode, mtime, size) changes exactly when production changes; a stat every few seconds costs
nothing and works on any shared volume (inotify does not see changes made by another node
of a network filesystem). A load happens in this background thread; requests keep using
the old model until the new one passed every check in `load_serving_model`. A version that
fails is logged and counted, the old model stays, and it is retried only when the alias
file changes again (no retry storm, one count per bad promotion).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from apps.api.current import CurrentModel
from apps.api.logs import log_event
from apps.api.metrics import ApiMetrics
from apps.api.serving import ModelLoadFailed, ModelRejected, Registry, load_serving_model
from churn.features.schema import FeatureSpec

PRODUCTION = "production"


@dataclass(frozen=True)
class FileStamp:
    """What changes when a file is replaced: inode, modification time, size."""

    inode: int
    mtime_ns: int
    size: int


def directory_stamp(path: Path) -> tuple[tuple[str, FileStamp | None], ...]:
    """The stamps of the files directly in `path` (empty when it does not exist)."""
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return ()
    return tuple((name, file_stamp(path / name)) for name in names)


def file_stamp(path: Path) -> FileStamp | None:
    """The file's stamp, or None when it does not exist (yet)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return FileStamp(st.st_ino, st.st_mtime_ns, st.st_size)


class ModelReloader:
    """Polls `alias_file` every `interval` seconds in a daemon thread; loads on change."""

    def __init__(
        self,
        registry: Registry,
        alias_file: Path,
        specs: tuple[FeatureSpec, ...],
        current: CurrentModel,
        metrics: ApiMetrics,
        interval: float,
    ) -> None:
        self._registry = registry
        self._alias_file = alias_file
        self._specs = specs
        self._current = current
        self._metrics = metrics
        self._interval = interval
        self._seen: FileStamp | None = None
        self._checked = False
        self._named: str | None = None  # the version the alias named at the last read
        self._failed: tuple[str, tuple[tuple[str, FileStamp | None], ...]] | None = None  # version, its files
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Check at once, in the caller's thread, then every `interval` seconds in a thread.

        Why the first check here: at startup (the lifespan, before uvicorn listens) the model
        is then loaded before the first /ready answer, instead of in a thread competing for
        the interpreter lock with uvicorn's startup (about 20 ms of the start). A failure
        is logged and leaves the API not ready, as in the thread.
        """
        self._check_logged()
        self._thread = threading.Thread(target=self._run, name="model-reloader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._check_logged()

    def _check_logged(self) -> None:
        try:
            self.check()
        except Exception as exc:  # the watcher must survive anything and keep polling
            log_event("model_reload_error", logging.ERROR, error=repr(exc))

    def check(self) -> str | None:
        """One poll. Returns the reload result ("loaded"/"rejected"/"failed") or None if idle."""
        stamp = file_stamp(self._alias_file)
        if self._checked and stamp == self._seen:
            return self._retry_if_repaired()
        self._seen, self._checked = stamp, True
        try:
            version = self._registry.get_alias(PRODUCTION)
        except Exception as exc:  # a corrupt alias file: keep serving what we have
            return self._record("failed", None, f"cannot read the production alias: {exc}",
                                "the production alias file is unreadable")
        self._note_alias(version)
        if version is None:
            self._set_reason("the registry has no production model yet")
            return None
        current = self._current.model
        if current is not None and current.version == version:
            return None
        return self.load(version)

    def _note_alias(self, version: str | None) -> None:
        """Log a change of the alias and export which version it names."""
        if version != self._named:
            if version is None:
                log_event("model_alias_missing", logging.WARNING, alias=PRODUCTION, previous=self._named,
                          serving=self._served())
            else:
                log_event("model_alias_changed", alias=PRODUCTION, version=version, previous=self._named,
                          serving=self._served())
        self._named = version
        self._metrics.set_alias(PRODUCTION, version, self._served())

    def _served(self) -> str | None:
        model = self._current.model
        return model.version if model is not None else None

    def _retry_if_repaired(self) -> str | None:
        """Load the failed version again once its files changed (e.g. a corrupt file replaced)."""
        if self._failed is None:
            return None
        version, files = self._failed
        if version != self._named or directory_stamp(self._version_dir(version)) == files:
            return None
        log_event("model_files_changed", version=version)
        return self.load(version)

    def _version_dir(self, version: str) -> Path:
        return Path(self._registry.version_dir(version))

    def load(self, version: str) -> str:
        """Load, verify and swap in `version`; on any failure keep the current model."""
        files = directory_stamp(self._version_dir(version))  # before reading: a change during the load retries
        try:
            model = load_serving_model(self._registry, version, self._specs)
        except ModelRejected as exc:
            self._failed = (version, files)
            return self._record("rejected", version, str(exc), f"production version {version} was rejected: "
                                f"{exc.public}")
        except ModelLoadFailed as exc:
            self._failed = (version, files)
            return self._record("failed", version, str(exc), f"production version {version} failed to load: "
                                f"{exc.public}")
        self._failed = None
        previous = self._current.model
        self._current.swap(model)
        self._metrics.set_model(model.version, previous.version if previous else None)
        self._metrics.set_alias(PRODUCTION, self._named, model.version)
        self._metrics.count_reload("loaded")
        log_event("model_loaded", version=model.version, previous=previous.version if previous else None,
                  predictor=model.predictor.kind, model_kind=model.card.get("model_kind"))
        return "loaded"

    def _record(self, result: str, version: str | None, reason: str, public: str) -> str:
        """Count and log (full `reason`) a failed reload; callers of /ready see only `public`."""
        self._metrics.count_reload(result)
        log_event(f"model_reload_{result}", logging.ERROR, version=version, reason=reason, serving=self._served())
        self._set_reason(public)
        return result

    def _set_reason(self, reason: str) -> None:
        if self._current.model is None:
            self._current.not_ready_reason = reason
