"""matplotlib with the headless Agg backend selected, imported once (for `figures`).

Why a module: the backend must be selected before `matplotlib.pyplot` is imported; importing
this module does both, in that order, whoever imports matplotlib first.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

__all__ = ["plt"]
