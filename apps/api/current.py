"""The one mutable cell of the API: a reference to the model being served.

Why a plain attribute and no lock: assigning a reference is atomic in Python, the object it
points at (`ServingModel`) is immutable, and each request reads `current.model` once. So a
swap never tears a request, and in-flight requests finish on the model they started with.
"""

from __future__ import annotations

from apps.api.serving import ServingModel


class CurrentModel:
    """The current `ServingModel` (None until one is loaded) and why the API is not ready."""

    def __init__(self) -> None:
        self.model: ServingModel | None = None
        self.not_ready_reason: str = "no model loaded yet"

    def swap(self, model: ServingModel) -> None:
        """Serve `model` from the next request on (one reference assignment)."""
        self.model = model
        self.not_ready_reason = ""
