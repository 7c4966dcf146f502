"""The training plot: the loss of every step, a smoothed loss, and the validation metrics of every
epoch on a second axis (QtCharts)."""

from __future__ import annotations

from PySide6.QtCharts import QChart, QChartView, QLineSeries, QValueAxis
from PySide6.QtCore import QMargins, Qt
from PySide6.QtGui import QColor, QPainter, QPen

SMOOTHING = 0.9  # exponential moving average of the loss for the smoothed line
METRIC_COLOURS = {"recall@1": QColor(39, 174, 96), "recall@5": QColor(142, 68, 173), "mAP": QColor(230, 126, 34)}


class LossChart(QChartView):
    """Per-step loss, its moving average, and per-epoch validation metrics on a right axis."""

    def __init__(self, parent=None) -> None:
        chart = QChart()
        chart.setTitle("Training")
        chart.setMargins(QMargins(4, 4, 4, 4))
        chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
        super().__init__(chart, parent)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(260)
        self.loss = QLineSeries(name="loss")
        self.loss.setPen(QPen(QColor(52, 152, 219, 110), 1))
        self.smooth = QLineSeries(name="smoothed")
        self.smooth.setPen(QPen(QColor(41, 128, 185), 2.5))
        self.metrics: dict[str, QLineSeries] = {}
        self.x_axis = QValueAxis(titleText="step")
        self.x_axis.setLabelFormat("%d")
        self.x_axis.setTickCount(2)  # 0 and 1 until the run says how many steps it has
        self.loss_axis = QValueAxis(titleText="loss")
        self.metric_axis = QValueAxis(titleText="validation")
        self.metric_axis.setRange(0.0, 1.0)
        chart.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(self.loss_axis, Qt.AlignmentFlag.AlignLeft)
        chart.addAxis(self.metric_axis, Qt.AlignmentFlag.AlignRight)
        for s in (self.loss, self.smooth):
            chart.addSeries(s)
            s.attachAxis(self.x_axis)
            s.attachAxis(self.loss_axis)
        self._ema: float | None = None
        self._loss_range = [float("inf"), float("-inf")]
        self._max_x = 1.0

    def clear(self) -> None:
        self.loss.clear()
        self.smooth.clear()
        for s in self.metrics.values():
            s.clear()
        self._ema = None
        self._loss_range = [float("inf"), float("-inf")]
        self._max_x = 1.0

    def set_total_steps(self, total: int) -> None:
        self._max_x = max(float(total), 1.0)
        self.x_axis.setRange(0, self._max_x)
        # Whole steps only: five ticks over a range of 1 would all read "0".
        self.x_axis.setTickCount(max(2, min(5, int(self._max_x) + 1)))

    def add_step(self, x: float, loss: float) -> None:
        self._ema = loss if self._ema is None else SMOOTHING * self._ema + (1 - SMOOTHING) * loss
        self.loss.append(x, loss)
        self.smooth.append(x, self._ema)
        lo, hi = min(self._loss_range[0], loss), max(self._loss_range[1], loss)
        self._loss_range = [lo, hi]
        pad = max((hi - lo) * 0.05, 1e-3)
        self.loss_axis.setRange(max(0.0, lo - pad), hi + pad)
        self.loss_axis.applyNiceNumbers()
        if x > self._max_x:
            self.set_total_steps(int(x))

    def add_metrics(self, x: float, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            series = self.metrics.get(name)
            if series is None:
                series = QLineSeries(name=name)  # on the "validation" axis
                series.setPen(QPen(METRIC_COLOURS.get(name, QColor(127, 140, 141)), 2, Qt.PenStyle.DashLine))
                series.setPointsVisible(True)
                self.chart().addSeries(series)
                series.attachAxis(self.x_axis)
                series.attachAxis(self.metric_axis)
                self.metrics[name] = series
            series.append(x, value)
