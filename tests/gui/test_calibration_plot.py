"""The calibration picture: both score distributions, the threshold, the slider's own value."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtGui import QColor  # noqa: E402

from simviewer.core.calibration import Calibration  # noqa: E402
from simviewer.gui.widgets.calibration_plot import (  # noqa: E402
    CHOSEN_COLOUR,
    DIFFERENT_COLOUR,
    DUPLICATE_COLOUR,
    CalibrationPlot,
    caption,
    nice_step,
)


def make_calibration(reliable: bool = True) -> Calibration:
    rng = np.random.default_rng(0)
    pos = np.clip(rng.normal(0.92, 0.03, 800), -1, 1)
    neg = np.clip(rng.normal(0.62, 0.06, 200), -1, 1)
    return Calibration(fingerprint="resnet18|untrained:seed0|gem|p2", threshold=0.80, separation=0.99,
                       reliable=reliable, photos=200, library_size=1000, k=10,
                       positives=tuple(float(x) for x in pos), negatives=tuple(float(x) for x in neg),
                       seconds=1.0, created=1.0)


def pixels_of(image, colour: QColor, tolerance: int = 12) -> int:
    """How many pixels of *image* have *colour* (within *tolerance* per channel)."""
    ptr = image.convertToFormat(image.Format.Format_RGB32).constBits()
    arr = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)[:, :image.width()]
    bgr = np.array([colour.blue(), colour.green(), colour.red()])
    return int((np.abs(arr[..., :3].astype(int) - bgr) <= tolerance).all(axis=-1).sum())


def test_the_plot_paints_both_distributions_and_the_threshold(qtbot):
    plot = CalibrationPlot()
    qtbot.addWidget(plot)
    plot.resize(480, 110)
    empty = plot.grab().toImage()
    assert pixels_of(empty, DUPLICATE_COLOUR) == 0 and pixels_of(empty, DIFFERENT_COLOUR) == 0

    cal = make_calibration()
    plot.set_calibration(cal, cal.threshold)
    image = plot.grab().toImage()
    assert pixels_of(image, DUPLICATE_COLOUR) > 100 and pixels_of(image, DIFFERENT_COLOUR) > 100
    assert pixels_of(image, CHOSEN_COLOUR) == 0  # the slider sits on the calibrated threshold
    lo, hi = plot.score_range()
    assert lo < float(np.quantile(cal.negatives, 0.05)) and hi >= max(cal.positives)
    # The duplicates' hump is drawn right of the threshold, the different photos' left of it.
    x_line = round(plot.x_of(cal.threshold))
    x_dup, x_diff = round(plot.x_of(0.92)), round(plot.x_of(0.62))
    crop = lambda x: image.copy(x - 3, 0, 7, image.height())  # noqa: E731
    assert pixels_of(crop(x_dup), DUPLICATE_COLOUR) > 0 and pixels_of(crop(x_dup), DIFFERENT_COLOUR) == 0
    assert pixels_of(crop(x_diff), DIFFERENT_COLOUR) > 0 and pixels_of(crop(x_diff), DUPLICATE_COLOUR) == 0
    text = plot.palette().text().color()
    assert pixels_of(crop(x_line), text, tolerance=40) > plot.plot_rect().height() * 0.8  # the line

    # The slider moved away: a second, dashed marker in its own colour.
    plot.set_value(0.86)
    moved = plot.grab().toImage()
    assert pixels_of(moved.copy(round(plot.x_of(0.86)) - 2, 0, 5, moved.height()), CHOSEN_COLOUR) > 10
    # Far below what the calibration shows: the range widens to keep the marker in view.
    plot.set_value(0.30)
    assert plot.score_range()[0] < 0.30


def test_the_caption_gives_the_rates_at_the_threshold_in_use():
    cal = make_calibration()
    assert caption(cal) == ("Calibrated on 200 of your photos: 100 % of edited copies above, "
                            "0 % of nearest other photos")
    lowered = caption(cal, 0.70)
    above = round(100 * float(np.mean(np.asarray(cal.negatives) >= 0.70)))
    assert f"{above} % of nearest other photos" in lowered and "; at your 70.00 %: " in lowered
    assert DUPLICATE_COLOUR.name() in caption(cal, html=True)


def test_tick_steps_are_round():
    assert nice_step(0.3, 6) == pytest.approx(0.05)
    assert nice_step(0.02, 5) == pytest.approx(0.005)
    assert nice_step(0.0, 5) == 1.0
