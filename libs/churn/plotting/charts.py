"""Charts drawn with Pillow: line charts on the unit square (the model card's evaluation
figure) and grouped bar charts of shares (the drift report's figure per drifted feature).

Why not matplotlib here: `train` draws one such figure per model, and at 2,000 users
importing matplotlib and laying out and rendering two figures was about 0.9 s of the step's
CPU (README, Benchmarks), more than either fit. A PR curve and a calibration curve need only
axes from 0 to 1, a grid, lines, markers, text and a legend: Pillow (already installed as a
matplotlib dependency, ~0.04 s to import) draws them in a few milliseconds. The same for the
drift report's bars: matplotlib's import was 1.4-1.7 s of drift-check at 100,000 users
(README, "Scale"). The month's timeline keeps matplotlib (`churn.plotting.figures`).

Drawn at SUPERSAMPLE times the size and scaled down by block means (anti-aliased lines and text); the PNG
bytes are a function of the inputs alone (no timestamps), like the rest of a version.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SUPERSAMPLE = 2
TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COLORS = {"blue": (31, 119, 180), "orange": (255, 127, 14), "grey": (128, 128, 128), "text": (0, 0, 0), "grid": (225, 225, 225)}
# margins of a panel's plotting area, in output pixels: left, top, right, bottom
MARGINS = (58, 30, 14, 44)


@dataclass(frozen=True)
class Line:
    """A series on the panel: points (x, y) in panel units, joined by a solid or dashed line;
    `markers` also puts a dot on each point."""

    x: np.ndarray
    y: np.ndarray
    label: str
    color: str = "blue"
    dashed: bool = False
    markers: bool = False


@dataclass(frozen=True)
class Bars:
    """One series of a bar chart: a height per category, drawn side by side with the others."""

    heights: Sequence[float]
    label: str
    color: str = "blue"


@dataclass(frozen=True)
class Panel:
    """One plot: [0, 1] x [0, ymax] with ticks every 0.2 up to 1, its lines and a legend
    (ymax a little above 1 keeps a curve at 1 off the frame)."""

    title: str
    xlabel: str
    ylabel: str
    lines: Sequence[Line] = field(default_factory=tuple)
    ymax: float = 1.0
    legend: str = "lower left"  # or "upper left"


def panels_png(panels: Sequence[Panel], title: str, size: tuple[int, int] = (900, 378)) -> bytes:
    """The panels side by side under `title`, as PNG bytes of `size` pixels."""
    s = SUPERSAMPLE
    width, height = size
    image = Image.new("RGB", (width * s, height * s), "white")
    draw = ImageDraw.Draw(image)
    fonts = {n: ImageFont.load_default(size=px * s) for n, px in (("small", 11), ("text", 12), ("title", 14))}
    top = 26
    _text(draw, (width * s // 2, 6 * s), title, fonts["title"], anchor="ma")
    panel_width = width // len(panels)
    for i, panel in enumerate(panels):
        box = (i * panel_width, top, (i + 1) * panel_width, height)
        _panel(image, draw, panel, tuple(v * s for v in box), fonts)
    out = io.BytesIO()
    # each output pixel the mean of its SUPERSAMPLE x SUPERSAMPLE block (a box filter, the
    # plain anti-aliasing of a supersampled drawing): 1.5 ms against 21 ms for a Lanczos resize
    # of the 1800 x 756 drawing, of which `train` draws two
    image.reduce(s).save(out, format="PNG", optimize=False)
    return out.getvalue()


def _panel(image: Image.Image, draw: ImageDraw.ImageDraw, panel: Panel, box: tuple[int, ...],
           fonts: dict[str, ImageFont.FreeTypeFont]) -> None:
    s = SUPERSAMPLE
    left, top, right, bottom = (box[0] + MARGINS[0] * s, box[1] + MARGINS[1] * s,
                                box[2] - MARGINS[2] * s, box[3] - MARGINS[3] * s)

    def at(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        px = left + np.clip(np.asarray(x, float), 0.0, 1.0) * (right - left)
        py = bottom - np.clip(np.asarray(y, float) / panel.ymax, 0.0, 1.0) * (bottom - top)
        return list(zip(px.tolist(), py.tolist()))

    for tick in TICKS:
        (gx, gy), = at(np.array([tick]), np.array([tick]))
        draw.line([(gx, top), (gx, bottom)], fill=COLORS["grid"], width=s)
        draw.line([(left, gy), (right, gy)], fill=COLORS["grid"], width=s)
        _text(draw, (gx, bottom + 4 * s), f"{tick:.1f}", fonts["small"], anchor="ma")
        _text(draw, (left - 4 * s, gy), f"{tick:.1f}", fonts["small"], anchor="rm")
    for line in panel.lines:
        points = at(line.x, line.y)
        color = COLORS[line.color]
        if line.dashed:
            for a, b in zip(points, points[1:]):
                _dashed(draw, a, b, color, 2 * s)
        elif len(points) > 1:
            draw.line(points, fill=color, width=2 * s, joint="curve")
        if line.markers:
            r = 3 * s
            for x, y in points:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    draw.rectangle((left, top, right, bottom), outline=COLORS["text"], width=s)
    _text(draw, ((left + right) // 2, top - 6 * s), panel.title, fonts["text"], anchor="md")
    _text(draw, ((left + right) // 2, bottom + 20 * s), panel.xlabel, fonts["text"], anchor="ma")
    _vertical_text(image, (box[0] + 6 * s, (top + bottom) // 2), panel.ylabel, fonts["text"])
    _legend(draw, panel, (left, top, right, bottom), fonts["small"])


def _legend(draw: ImageDraw.ImageDraw, panel: Panel, area: tuple[int, int, int, int],
            font: ImageFont.FreeTypeFont) -> None:
    s = SUPERSAMPLE
    rows = [line for line in panel.lines if line.label]
    if not rows:
        return
    row_height, swatch, pad = 16 * s, 22 * s, 6 * s
    text_width = max(draw.textlength(line.label, font=font) for line in rows)
    width, height = swatch + 3 * pad + text_width, len(rows) * row_height + pad
    x0 = area[0] + pad
    y0 = area[3] - pad - height if panel.legend == "lower left" else area[1] + pad
    draw.rectangle((x0, y0, x0 + width, y0 + height), fill="white", outline=COLORS["grid"], width=s)
    for i, line in enumerate(rows):
        y = y0 + pad // 2 + i * row_height + row_height // 2
        a, b = (x0 + pad, y), (x0 + pad + swatch, y)
        color = COLORS[line.color]
        if line.dashed:
            _dashed(draw, a, b, color, 2 * s)
        else:
            draw.line([a, b], fill=color, width=2 * s)
        if line.markers:
            r, mid = 3 * s, (a[0] + b[0]) / 2
            draw.ellipse((mid - r, y - r, mid + r, y + r), fill=color)
        _text(draw, (b[0] + pad, y), line.label, font, anchor="lm")


def _dashed(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float],
            color: tuple[int, int, int], width: int) -> None:
    length = float(np.hypot(b[0] - a[0], b[1] - a[1]))
    dash = 6 * SUPERSAMPLE
    for start in np.arange(0.0, length, 2 * dash):
        t0, t1 = start / length, min(start + dash, length) / length
        draw.line([(a[0] + t0 * (b[0] - a[0]), a[1] + t0 * (b[1] - a[1])),
                   (a[0] + t1 * (b[0] - a[0]), a[1] + t1 * (b[1] - a[1]))], fill=color, width=width)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: ImageFont.FreeTypeFont,
          anchor: str) -> None:
    draw.text(xy, text, fill=COLORS["text"], font=font, anchor=anchor)


def _quarter_turn(text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    """`text` on white, rotated a quarter turn (reading upwards)."""
    left, top, right, bottom = font.getbbox(text)
    label = Image.new("RGB", (right - left + 2, bottom - top + 2), "white")
    ImageDraw.Draw(label).text((-left + 1, -top + 1), text, fill=COLORS["text"], font=font)
    return label.rotate(90, expand=True)


def _vertical_text(image: Image.Image, xy: tuple[int, int], text: str, font: ImageFont.FreeTypeFont) -> None:
    """`text` reading upwards, its left edge at x, centred on y (an axis title)."""
    label = _quarter_turn(text, font)
    image.paste(label, (xy[0], xy[1] - label.height // 2))


def bars_png(title: str, categories: Sequence[str], series: Sequence[Bars], ylabel: str,
             size: tuple[int, int] = (640, 288)) -> bytes:
    """Grouped bars (one group per category, one bar per series) on a y axis from 0 to a
    little above the highest bar, the category names upright under their group, as PNG bytes."""
    s = SUPERSAMPLE
    width, height = size
    image = Image.new("RGB", (width * s, height * s), "white")
    draw = ImageDraw.Draw(image)
    small, text = (ImageFont.load_default(size=px * s) for px in (10, 12))
    names_height = max((small.getbbox(c)[2] - small.getbbox(c)[0] for c in categories), default=0) + 8 * s
    left, top, right = MARGINS[0] * s, MARGINS[1] * s, width * s - MARGINS[2] * s
    bottom = height * s - names_height - 4 * s
    highest = max((float(h) for bars in series for h in bars.heights), default=0.0)
    step = _tick_step(highest)
    ymax = step * (int(highest / step) + 1)
    for i in range(int(round(ymax / step)) + 1):
        y = bottom - i * step / ymax * (bottom - top)
        draw.line([(left, y), (right, y)], fill=COLORS["grid"], width=s)
        _text(draw, (left - 4 * s, y), f"{i * step:.{_decimals(step)}f}", small, anchor="rm")
    group = (right - left) / max(len(categories), 1)
    bar = 0.8 * group / max(len(series), 1)
    for k, bars in enumerate(series):
        for j, h in enumerate(bars.heights):
            x0 = left + j * group + 0.1 * group + k * bar
            draw.rectangle((x0, bottom - float(h) / ymax * (bottom - top), x0 + bar, bottom), fill=COLORS[bars.color])
    for j, name in enumerate(categories):
        _upright_text(image, (int(left + (j + 0.5) * group), bottom + 4 * s), name, small)
    draw.rectangle((left, top, right, bottom), outline=COLORS["text"], width=s)
    _text(draw, ((left + right) // 2, top - 8 * s), title, text, anchor="md")
    _vertical_text(image, (6 * s, (top + bottom) // 2), ylabel, text)
    for k, bars in enumerate(series):  # the legend, top right
        y = top + 6 * s + k * 16 * s
        label_width = draw.textlength(bars.label, font=small)
        draw.rectangle((right - label_width - 30 * s, y, right - label_width - 18 * s, y + 10 * s), fill=COLORS[bars.color])
        _text(draw, (right - 8 * s, y + 5 * s), bars.label, small, anchor="rm")
    out = io.BytesIO()
    image.reduce(s).save(out, format="PNG", optimize=False)
    return out.getvalue()


def _tick_step(highest: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about five ticks up to `highest`."""
    if highest <= 0:
        return 0.2
    raw = highest / 5
    power = 10.0 ** np.floor(np.log10(raw))
    return float(min((m * power for m in (1, 2, 5, 10) if m * power >= raw)))


def _decimals(step: float) -> int:
    return max(0, int(-np.floor(np.log10(step))))


def _upright_text(image: Image.Image, xy: tuple[int, int], text: str, font: ImageFont.FreeTypeFont) -> None:
    """`text` reading upwards, its end at y, centred on x (a category under its bars)."""
    label = _quarter_turn(text, font)
    image.paste(label, (xy[0] - label.width // 2, xy[1]))
