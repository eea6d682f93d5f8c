"""Import the libraries of a command's later steps in a background thread.

Why: `bootstrap` runs every step in one process, and `train` begins by importing
scikit-learn (which imports scipy.stats) and matplotlib: at 2,000 users about a third of the
step, and of the whole seed's CPU (README, Benchmarks). The steps before it (validate,
update) spend most of their time in Parquet writes and fsync with the interpreter lock
released, so the imports run there on the second core almost for free.

Why it cannot deadlock: it starts after `generate`, when numpy, pandas and pyarrow are
loaded; what the thread imports from then on (scikit-learn, scipy, joblib, matplotlib and
the churn modules of training, monitoring and plotting) is never imported by the steps that
run meanwhile, so no two import locks are ever taken in opposite orders. A module the steps
share (e.g. `churn.features.schema`) is at worst waited for. A failure is logged and
ignored: the step that needs the module imports it itself, and raises there.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Sequence

log = logging.getLogger(__name__)

# What `train`, `promote`, `batch-score` and `drift-check` import (steps.py imports them lazily).
LATER_STEP_MODULES = (
    "churn.training.train",
    "churn.plotting.backend",
    "churn.monitoring.report",
)


def prefetch_imports(modules: Sequence[str] = LATER_STEP_MODULES) -> threading.Thread:
    """Start importing `modules` in a daemon thread; returns it (tests join it)."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # the step that needs it will import it and report
                log.debug("prefetch of %s failed: %r", name, exc)

    thread = threading.Thread(target=run, name="prefetch-imports", daemon=True)
    thread.start()
    return thread
