"""The Pillow line charts: a PNG of the asked size, the same bytes for the same inputs, and the
lines where their data say (the model card's evaluation figure is drawn with them)."""

import io

import numpy as np
from PIL import Image

from churn.plotting.charts import COLORS, MARGINS, Bars, Line, Panel, bars_png, panels_png


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


def _bars(first: float = 0.5) -> bytes:
    return bars_png("drift", ["[0, 1)", "[1, 5)"], [Bars([first, 0.0], "training"), Bars([0.0, 0.25], "recent", "orange")],
                    "share", size=(400, 240))


def _rows_of(image: np.ndarray, color: str, columns: slice) -> np.ndarray:
    """Rows where `color` appears in `columns` (below the legend's band)."""
    hit = np.all(np.abs(image[:, columns] - np.array(COLORS[color])) < 40, axis=2).any(axis=1)
    hit[:MARGINS[1] + 40] = False
    return np.flatnonzero(hit)


def test_bars_stand_in_their_group_at_their_heights():
    png = _bars()
    assert png == _bars() and png != _bars(0.4)
    image = np.asarray(_image(png)).astype(int)
    assert image.shape[:2] == (240, 400)
    middle = (MARGINS[0] + 400 - MARGINS[2]) // 2
    blue_left, orange_left = _rows_of(image, "blue", slice(0, middle)), _rows_of(image, "orange", slice(0, middle))
    blue_right, orange_right = _rows_of(image, "blue", slice(middle, 400)), _rows_of(image, "orange", slice(middle, 400))
    assert blue_left.size and orange_right.size and not orange_left.size and not blue_right.size
    bottom = blue_left.max()
    assert abs(orange_right.max() - bottom) <= 1, "both bars stand on the axis"
    blue_height, orange_height = bottom - blue_left.min(), bottom - orange_right.min()
    assert abs(orange_height / blue_height - 0.5) < 0.05, (blue_height, orange_height)
