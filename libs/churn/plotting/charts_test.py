"""The Pillow line charts: a PNG of the asked size, the same bytes for the same inputs, and the
lines where their data say (the model card's evaluation figure is drawn with them)."""

import io

import numpy as np
from PIL import Image

from churn.plotting.charts import COLORS, MARGINS, Line, Panel, panels_png


def _image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def _chart(y: float) -> bytes:
    line = Line(np.array([0.0, 1.0]), np.array([y, y]), f"level {y}")
    return panels_png([Panel("a", "x", "y", [line]), Panel("b", "x", "y", [])], "title", size=(600, 300))


def test_png_of_the_asked_size_and_deterministic():
    png = _chart(0.5)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert _image(png).size == (600, 300)
    assert png == _chart(0.5)
    assert png != _chart(0.25)


def test_a_level_line_is_drawn_at_its_height_in_its_panel_only():
    image = np.asarray(_image(_chart(0.5))).astype(int)
    top, bottom = 26 + MARGINS[1], 300 - MARGINS[3]
    left, right = MARGINS[0], 300 - MARGINS[2]
    blue = np.all(np.abs(image - np.array(COLORS["blue"])) < 40, axis=2)
    middle = round((top + bottom) / 2)
    x = (left + right) // 2 + 40  # right of the legend's swatch
    assert blue[middle - 1:middle + 2, x].any(), "the line at y=0.5 is not at mid-height"
    assert not blue[top + 5:middle - 5, x].any() and not blue[middle + 5:bottom - 5, x].any()
    assert not blue[:, 300 + MARGINS[0] + 5:600 - MARGINS[2] - 5].any(), "the second panel has no line"
