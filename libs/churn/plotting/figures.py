"""Headless (Agg) figures rendered to PNG bytes, never to files.

Why bytes: the evaluation figure is stored in a registry version through the same atomic
write as the model, and drift plots are embedded in a self-contained HTML report. Why one
helper: every figure must use the Agg backend (no display in a Job) and be closed even when
plotting fails, or a long-running process leaks figures.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@contextlib.contextmanager
def subplots(*args: Any, **kwargs: Any) -> Iterator[tuple[Figure, Any]]:
    """`plt.subplots(*args, **kwargs)` on the Agg backend; the figure is closed on exit."""
    from churn.plotting.backend import plt

    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
    finally:
        plt.close(fig)


def figure_png(fig: Figure, dpi: int) -> bytes:
    """A laid-out figure as PNG bytes, for atomic writes and HTML embedding."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
