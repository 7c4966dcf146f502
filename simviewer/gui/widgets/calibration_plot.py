"""A small picture of a library's duplicate calibration: how edited copies and different photos score.

Two smoothed score distributions from :class:`core.calibration.Calibration` (each photo against
edited copies of itself, and against its k-th nearest other photo), the calibrated threshold as a
solid line and, where the user moved the slider away from it, their threshold as a dashed one.
A user sees at a glance whether the two humps are apart (a threshold between them means something)
or on top of each other (no threshold can sort them, whatever the slider says).
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ...core.calibration import Calibration

DUPLICATE_COLOUR = QColor(230, 126, 34)  # edited copies: duplicates
DIFFERENT_COLOUR = QColor(41, 128, 185)  # nearest other photos: different
CHOSEN_COLOUR = QColor(142, 68, 173)  # the slider, where it is not at the calibrated threshold
PLOT_HEIGHT = 110
_GRID = 200  # density samples across the plot


def rate_above(scores, threshold: float) -> float:
    """The share of *scores* at or above *threshold* (what the duplicate finder would group)."""
    return float(np.mean(np.asarray(scores) >= threshold)) if len(scores) else 0.0


def percent(value: float, digits: int) -> str:
    return f"{value * 100:.{digits}f} %"


def digits_for(lo: float, hi: float) -> int:
    """Decimals of a percentage that tell values in [lo, hi] apart: two, as the slider shows them,
    or more where the range is narrow (an untrained network scores everything above 99 %)."""
    span = max(hi - lo, 1e-6) * 100
    return max(2, min(4, 2 - math.floor(math.log10(span))))


def caption(cal: Calibration, value: float | None = None, html: bool = False) -> str:
    """One line under the plot: what share of each set the threshold in use groups.

    *value* is the slider's threshold (the calibrated one if None); with *html*, coloured squares
    stand in for the plot's legend.
    """
    value = cal.threshold if value is None else value
    dup = rate_above(cal.positives, value) * 100
    diff = rate_above(cal.negatives, value) * 100
    where = ":"
    if abs(value - cal.threshold) > 1e-9:  # the rates are those of the user's threshold
        where = f"; at your {percent(value, digits_for(min(value, cal.threshold), 1.0))}:"
    if html:
        square = "<span style='color:{}'>■</span>&nbsp;"
        return (f"Calibrated on {cal.photos} of your photos{where} <b>{dup:.0f} %</b> of "
                f"{square.format(DUPLICATE_COLOUR.name())}edited copies above, <b>{diff:.0f} %</b> of "
                f"{square.format(DIFFERENT_COLOUR.name())}nearest other photos")
    return (f"Calibrated on {cal.photos} of your photos{where} {dup:.0f} % of edited copies above, "
            f"{diff:.0f} % of nearest other photos")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def density(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A Gaussian kernel density of *scores* on *grid*, scaled to a peak of 1 (Silverman's bandwidth)."""
    if not len(scores):
        return np.zeros_like(grid)
    span = float(grid[-1] - grid[0]) or 1.0
    sd = float(np.std(scores))
    bandwidth = max(1.06 * sd * len(scores) ** -0.2 if sd > 0 else 0.0, span / 120)
    d = np.exp(-0.5 * ((grid[:, None] - scores[None, :]) / bandwidth) ** 2).sum(axis=1)
    peak = float(d.max())
    return d / peak if peak > 0 else d


def nice_step(span: float, most: int) -> float:
    """A tick step of 1, 2 or 5 times a power of ten that gives at most *most* ticks over *span*."""
    if span <= 0 or most < 1:
        return span or 1.0
    raw = span / most
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


class CalibrationPlot(QWidget):
    """The two score distributions of a calibration, its threshold and the slider's value."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.calibration: Calibration | None = None
        self.value: float | None = None  # the slider's threshold
        self.empty_text = "No calibration yet"
        self._range: tuple[float, float] = (0.0, 1.0)
        self._curves: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.setMinimumSize(240, PLOT_HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(520, PLOT_HEIGHT)

    # -- data ----------------------------------------------------------------------------------
    def set_calibration(self, cal: Calibration | None, value: float | None = None) -> None:
        self.calibration = cal
        self.value = value
        self._recompute()
        self.setToolTip("" if cal is None else
                        f"Orange: how alike edited copies (crops, re-saves, resizes, colour changes…) of {cal.photos} "
                        f"of your photos score against their originals: duplicates.\nBlue: how alike each of those "
                        f"photos and its {ordinal(cal.k)} nearest other photo score: different photos.\nThe solid "
                        "line is the threshold calibrated between them; a dashed one is yours, where you moved "
                        "the slider.")
        self.update()

    def set_value(self, value: float | None) -> None:
        self.value = value
        lo, hi = self._range
        if value is not None and self.calibration is not None and not lo <= value <= hi:
            self._recompute()  # the range widens to show where the slider went
        self.update()

    def score_range(self) -> tuple[float, float]:
        """The scores shown: both distributions (their lowest 1 % left out), the threshold, the slider."""
        return self._range

    def _recompute(self) -> None:
        cal = self.calibration
        if cal is None or not (cal.positives or cal.negatives):
            self._curves = None
            return
        pos = np.asarray(cal.positives, np.float64)
        neg = np.asarray(cal.negatives, np.float64)
        both = np.concatenate([pos, neg])
        lows = [float(np.quantile(a, 0.01)) for a in (pos, neg) if len(a)]
        marks = [cal.threshold] + ([self.value] if self.value is not None else [])
        lo = min(lows + marks)
        hi = max([float(both.max())] + marks)
        pad = max((hi - lo) * 0.06, 5e-4)
        lo, hi = max(-1.0, lo - pad), min(1.0, hi + pad)
        if hi - lo < 1e-3:
            lo = max(-1.0, hi - 1e-3)
        self._range = (lo, hi)
        grid = np.linspace(lo, hi, _GRID)
        self._curves = (grid, density(pos, grid), density(neg, grid))

    # -- painting ------------------------------------------------------------------------------
    def plot_rect(self) -> QRectF:
        """Where the distributions are drawn (the rest holds the axis and the line labels)."""
        fm = self.fontMetrics()
        return QRectF(8, fm.height() + 6, max(1, self.width() - 16), max(1, self.height() - 2 * fm.height() - 12))

    def x_of(self, score: float) -> float:
        r = self.plot_rect()
        lo, hi = self._range
        return r.left() + (score - lo) / (hi - lo) * r.width()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        p.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
        p.drawRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5))
        cal = self.calibration
        if cal is None or self._curves is None:
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.empty_text)
            p.end()
            return
        r = self.plot_rect()
        grid, pos, neg = self._curves
        # The different photos first, the duplicates over them: both stay visible where they overlap.
        for curve, colour in ((neg, DIFFERENT_COLOUR), (pos, DUPLICATE_COLOUR)):
            self._draw_density(p, r, grid, curve, colour)
        text = pal.color(QPalette.ColorRole.Text)
        p.setPen(QPen(text, 1))
        p.drawLine(QPointF(r.left(), r.bottom()), QPointF(r.right(), r.bottom()))
        self._draw_ticks(p, r, text)
        lo, hi = self._range
        d = digits_for(lo, hi)
        chosen = self.value is not None and abs(self.value - cal.threshold) > 1e-9
        # Labels go on opposite sides of the two lines, so they do not overlap when the lines are close.
        chosen_right = chosen and self.value > cal.threshold
        self._draw_line(p, r, cal.threshold, QPen(text, 2), f"calibrated {percent(cal.threshold, d)}",
                        right=not chosen_right if chosen else None, colour=text)
        if chosen:
            pen = QPen(CHOSEN_COLOUR, 2, Qt.PenStyle.DashLine)
            self._draw_line(p, r, self.value, pen, f"yours {percent(self.value, d)}", right=chosen_right,
                            colour=CHOSEN_COLOUR)
        p.end()

    def _draw_density(self, p: QPainter, r: QRectF, grid, curve, colour: QColor) -> None:
        xs = [self.x_of(float(g)) for g in grid]
        ys = [r.bottom() - float(v) * r.height() * 0.95 for v in curve]
        outline = QPainterPath(QPointF(xs[0], ys[0]))
        for x, y in zip(xs[1:], ys[1:]):
            outline.lineTo(x, y)
        area = QPainterPath(outline)
        area.lineTo(xs[-1], r.bottom())
        area.lineTo(xs[0], r.bottom())
        area.closeSubpath()
        fill = QColor(colour)
        fill.setAlpha(80)
        p.fillPath(area, fill)
        p.setPen(QPen(colour, 2))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(outline)

    def _draw_ticks(self, p: QPainter, r: QRectF, colour: QColor) -> None:
        lo, hi = self._range
        fm = self.fontMetrics()
        widest = fm.horizontalAdvance("99.99 %") + 16
        step = nice_step(hi - lo, max(1, int(r.width() // widest)))
        digits = max(0, min(4, -math.floor(math.log10(step * 100) + 1e-9)))
        p.setPen(colour)
        first = math.ceil(lo / step - 1e-9)
        for n in range(first, math.floor(hi / step + 1e-9) + 1):
            t = n * step
            x = self.x_of(t)
            p.drawLine(QPointF(x, r.bottom()), QPointF(x, r.bottom() + 3))
            label = percent(t, digits)
            w = fm.horizontalAdvance(label)
            left = min(max(x - w / 2, 2), self.width() - w - 2)
            p.drawText(QPointF(left, r.bottom() + 4 + fm.ascent()), label)

    def _draw_line(self, p: QPainter, r: QRectF, score: float, pen: QPen, label: str, right: bool | None,
                   colour: QColor) -> None:
        x = self.x_of(score)
        p.setPen(pen)
        p.drawLine(QPointF(x, r.top() - 2), QPointF(x, r.bottom()))
        fm = self.fontMetrics()
        w = fm.horizontalAdvance(label)
        if right is None:  # alone: beside the line, on the side with room
            right = x + 4 + w <= self.width() - 4
        left = x + 4 if right else x - 4 - w
        left = min(max(left, 4), self.width() - w - 4)
        p.setPen(colour)
        p.drawText(QPointF(left, r.top() - 4), label)
