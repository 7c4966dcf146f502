"""Side-by-side compare view: the query and one match, zoom and fit, swap, next/previous."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QKeySequence, QPixmap, QShortcut, QWheelEvent
from PySide6.QtWidgets import (
    QDialog,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.images import ImageError, load_image
from .models import FileRow, human_size
from .thumbnails import pil_to_qimage

PREVIEW_SIDE = 2048  # decoded size for the compare view: sharp on a 4K screen, quick to decode


class _Signals(QObject):
    loaded = Signal(str, QImage, str)  # path, image (null on failure), error


class _Load(QRunnable):
    def __init__(self, path: str, signals: _Signals) -> None:
        super().__init__()
        self.path, self.signals = path, signals

    def run(self) -> None:
        try:
            im = load_image(self.path, min_side=PREVIEW_SIDE).image
            if max(im.size) > PREVIEW_SIDE:
                im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            self.signals.loaded.emit(self.path, pil_to_qimage(im), "")
        except (ImageError, OSError) as exc:
            self.signals.loaded.emit(self.path, QImage(), str(exc))


class ImagePane(QGraphicsView):
    """One zoomable photo. Wheel zooms around the cursor; 'fit' shows it whole."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.item = QGraphicsPixmapItem()
        self.item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self.item)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.fit_mode = True
        self.zoom = 1.0

    def set_image(self, image: QImage) -> None:
        self.item.setPixmap(QPixmap.fromImage(image))
        self.scene().setSceneRect(self.item.boundingRect())
        self.fit()

    def fit(self) -> None:
        self.fit_mode = True
        self.fitInView(self.item, Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom = self.transform().m11()

    def set_zoom(self, factor: float) -> None:
        self.fit_mode = False
        self.zoom = max(0.02, min(factor, 16.0))
        self.resetTransform()
        self.scale(self.zoom, self.zoom)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt API)
        step = 1.25 if event.angleDelta().y() > 0 else 0.8
        self.set_zoom(self.zoom * step)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self.fit_mode:
            self.fit()


class CompareDialog(QDialog):
    """Query on the left, a match on the right; ←/→ step through the matches."""

    def __init__(self, query: Path, matches: list[FileRow], current: int, parent=None, untrained=False) -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare")
        self.resize(1200, 700)
        self.query, self.matches, self.current = query, matches, current
        self.untrained = untrained
        self.swapped = False
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self.signals = _Signals(self)
        self.signals.loaded.connect(self._loaded)
        self.images: dict[str, QImage] = {}

        self.left, self.right = ImagePane(), ImagePane()
        self.left_caption, self.right_caption = QLabel(), QLabel()
        self.score_label = QLabel()
        self.score_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.score_label.setStyleSheet("font-size: 16px; font-weight: bold;")
        panes = QHBoxLayout()
        for pane, caption in ((self.left, self.left_caption), (self.right, self.right_caption)):
            col = QVBoxLayout()
            col.addWidget(pane, 1)
            col.addWidget(caption)
            w = QWidget()
            w.setLayout(col)
            panes.addWidget(w, 1)
        buttons = QHBoxLayout()
        for text, slot, keys in (
            ("◀ Previous", self.previous, [Qt.Key.Key_Left, Qt.Key.Key_PageUp]),
            ("Fit", self.fit, [Qt.Key.Key_F]),
            ("100 %", self.actual_size, [Qt.Key.Key_1]),
            ("Swap", self.swap, [Qt.Key.Key_S]),
            ("Next ▶", self.next, [Qt.Key.Key_Right, Qt.Key.Key_PageDown, Qt.Key.Key_Space]),
        ):
            b = QPushButton(text)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(slot)
            buttons.addWidget(b)
            for key in keys:
                QShortcut(QKeySequence(key), self, slot)
        lay = QVBoxLayout(self)
        lay.addWidget(self.score_label)
        lay.addLayout(panes, 1)
        lay.addLayout(buttons)
        self.show_current()

    # -- navigation ----------------------------------------------------------------------------
    def match(self) -> FileRow:
        return self.matches[self.current]

    def next(self) -> None:
        if self.current + 1 < len(self.matches):
            self.current += 1
            self.show_current()

    def previous(self) -> None:
        if self.current > 0:
            self.current -= 1
            self.show_current()

    def swap(self) -> None:
        self.swapped = not self.swapped
        self.show_current()

    def fit(self) -> None:
        self.left.fit()
        self.right.fit()

    def actual_size(self) -> None:
        self.left.set_zoom(1.0)
        self.right.set_zoom(1.0)

    def sides(self) -> tuple[str, str]:
        pair = (str(self.query), str(self.match().path))
        return (pair[1], pair[0]) if self.swapped else pair

    def show_current(self) -> None:
        m = self.match()
        mark = " (untrained model)" if self.untrained else ""
        self.score_label.setText(
            f"Match {self.current + 1} of {len(self.matches)}: {(m.score or 0) * 100:.1f} % similar{mark}"
        )
        left, right = self.sides()
        # Keep only what the next step can show, so long walks do not pile up decoded photos.
        near = {str(self.query)} | {str(r.path) for r in self.matches[max(0, self.current - 1) : self.current + 2]}
        for stale in [p for p in self.images if p not in near]:
            del self.images[stale]
        for pane, caption, path in ((self.left, self.left_caption, left), (self.right, self.right_caption, right)):
            caption.setText(self._caption(path))
            if path in self.images:
                pane.set_image(self.images[path])
            else:
                pane.item.setPixmap(QPixmap())
                self.pool.start(_Load(path, self.signals))

    def _caption(self, path: str) -> str:
        role = "query" if path == str(self.query) else "match"
        m = self.match()
        detail = ""
        if path == str(m.path):
            res = f"{m.width}×{m.height}, " if m.width else ""
            detail = f" — {res}{human_size(m.size)}"
        return f"{role}: {Path(path).name}{detail}"

    def _loaded(self, path: str, image: QImage, error: str) -> None:
        if image.isNull():
            (self.left_caption if self.sides()[0] == path else self.right_caption).setText(
                f"{Path(path).name}: cannot show it ({error})"
            )
            return
        self.images[path] = image
        left, right = self.sides()
        if path == left:
            self.left.set_image(image)
        if path == right:
            self.right.set_image(image)

    def done(self, result: int) -> None:
        self.pool.clear()
        self.pool.waitForDone(5000)
        super().done(result)
