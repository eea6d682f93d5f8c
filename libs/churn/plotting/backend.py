"""matplotlib with the headless Agg backend selected, imported once (for `figures`).

Why a module: selecting the backend must happen before `matplotlib.pyplot` is imported, and
importing this module does both, so a background import (`churn.pipeline.prefetch`) leaves
matplotlib exactly as `figures.subplots` would.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

__all__ = ["plt"]
