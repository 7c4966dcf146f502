"""Side-by-side compare view: the query and one match, zoom and fit, swap, next/previous."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QRectF, QRunnable, Qt, Signal
from PySide6.QtGui import QColor, QImage, QKeySequence, QPen, QPixmap, QShortcut, QWheelEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ...core import gradcam
from ...core.images import ImageError, load_image
from ...core.units import human_size
from ..models import FileRow
from ..thumbnails import pil_to_qimage
from ..workers import make_pool

PREVIEW_SIDE = 2048  # decoded size for the compare view: sharp on a 4K screen, quick to decode


class LoadSignals(QObject):
    loaded = Signal(str, QImage, object, str)  # path, image (null on failure), PIL copy, error
    overlaid = Signal(str, str, QImage, float)  # path, pair's match, photo with heat map, opacity


class ImageLoad(QRunnable):
    """Decode one photo at preview size off the GUI thread; ``signals.loaded`` brings it back."""

    def __init__(self, path: str, signals: LoadSignals) -> None:
        super().__init__()
        self.path, self.signals = path, signals

    def run(self) -> None:
        try:
            im = load_image(self.path, min_side=PREVIEW_SIDE).image
            if max(im.size) > PREVIEW_SIDE:
                im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            self.signals.loaded.emit(self.path, pil_to_qimage(im), im, "")
        except (ImageError, OSError) as exc:
            self.signals.loaded.emit(self.path, QImage(), None, str(exc))


class _Overlay(QRunnable):
    """Blend a heat map onto a preview-size photo off the GUI thread (tens of ms at 2048 px)."""

    def __init__(self, path, match, photo, cam, geometry, opacity, signals) -> None:
        super().__init__()
        self.args = (path, match, photo, cam, geometry, opacity)
        self.signals = signals

    def run(self) -> None:
        path, match, photo, cam, geometry, opacity = self.args
        image = pil_to_qimage(gradcam.overlay(photo, cam, geometry, opacity))
        self.signals.overlaid.emit(path, match, image, opacity)


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
        # Hovering a heat-map cell: the cell itself (solid) and what it sees (dashed, clipped to
        # the photo: the last block of a ResNet sees more than the whole input).
        self.cell = self.scene().addRect(QRectF(), QPen(QColor(255, 214, 0), 0))
        self.field = self.scene().addRect(QRectF(), QPen(QColor(255, 255, 255), 0, Qt.PenStyle.DashLine))
        for item in (self.cell, self.field):
            item.setZValue(1)
            item.hide()
        # photo px -> (cell box, field box) or None
        self.hover: Callable[[float, float], tuple[QRectF, QRectF] | None] | None = None
        self.setMouseTracking(True)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().mouseMoveEvent(event)
        boxes = None
        if self.hover is not None:
            p = self.mapToScene(event.position().toPoint())
            boxes = self.hover(p.x(), p.y())
        self.show_boxes(boxes)

    def show_boxes(self, boxes: tuple[QRectF, QRectF] | None) -> None:
        if boxes is None:
            self.cell.hide()
            self.field.hide()
            return
        width = 2 / max(self.transform().m11(), 1e-3)  # two screen pixels at any zoom
        for item, box, style in ((self.cell, boxes[0], Qt.PenStyle.SolidLine),
                                 (self.field, boxes[1], Qt.PenStyle.DashLine)):
            item.setPen(QPen(item.pen().color(), width, style))
            item.setRect(box.intersected(self.scene().sceneRect()))
            item.show()

    def leaveEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.show_boxes(None)
        super().leaveEvent(event)

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
    """Query on the left, a match on the right; ←/→ step through the matches.

    With heat maps on, both photos carry their Grad-CAM map for this pair, and hovering a cell of
    the map outlines the part of the photo that cell of the network sees.
    """

    def __init__(self, query: Path, matches: list[FileRow], current: int, parent=None, untrained=False,
                 explain=None, overlays: bool = False, opacity: float = 0.5, query_role: str = "query",
                 match_role: str = "match") -> None:
        super().__init__(parent)
        self.roles = (query_role, match_role)
        self.setWindowTitle("Compare")
        self.resize(1200, 720)
        self.query, self.matches, self.current = query, matches, current
        self.untrained = untrained
        self.explain = explain  # ExplainService or None
        self.swapped = False
        self.pool = make_pool(self, 2)
        self.signals = LoadSignals(self)
        self.signals.loaded.connect(self._loaded)
        self.signals.overlaid.connect(self._overlaid)
        self.images: dict[str, QImage] = {}
        self.photos: dict[str, object] = {}  # PIL copies, for overlays
        self.overlays: dict[tuple[str, str, float], QImage] = {}
        self._overlay_jobs: set[tuple[str, str, float]] = set()

        self.left, self.right = ImagePane(), ImagePane()
        self.left_caption, self.right_caption = QLabel(), QLabel()
        self.score_label = QLabel()
        self.score_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.score_label.setStyleSheet("font-size: 16px; font-weight: bold;")
        self.heat_box = QCheckBox("Heat maps: why they match")
        self.heat_box.setChecked(overlays)
        self.heat_box.setEnabled(explain is not None)
        self.heat_box.toggled.connect(lambda _on: self.show_current())
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(10, 90)
        self.opacity.setValue(int(opacity * 100))
        self.opacity.setMaximumWidth(160)
        self.opacity.setToolTip("Heat-map opacity")
        self.opacity.valueChanged.connect(lambda _v: self.show_current())
        self.field_label = QLabel("")
        head = QHBoxLayout()
        head.addWidget(self.heat_box)
        head.addWidget(QLabel("opacity"))
        head.addWidget(self.opacity)
        head.addStretch(1)
        head.addWidget(self.field_label)
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
        QShortcut(QKeySequence(Qt.Key.Key_H), self, self.heat_box.toggle)
        lay = QVBoxLayout(self)
        lay.addWidget(self.score_label)
        lay.addLayout(head)
        lay.addLayout(panes, 1)
        lay.addLayout(buttons)
        if explain is not None:
            explain.explained.connect(self._explained)
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

    def pair(self):
        """The explanation of (query, current match), if it has been computed."""
        if self.explain is None:
            return None
        return self.explain.get(str(self.query), str(self.match().path))

    def heat_on(self) -> bool:
        return self.heat_box.isChecked() and self.explain is not None

    # -- display -------------------------------------------------------------------------------
    def show_current(self) -> None:
        m = self.match()
        mark = " (untrained model)" if self.untrained else ""
        self.score_label.setText(
            f"Match {self.current + 1} of {len(self.matches)}: {(m.score or 0) * 100:.1f} % similar{mark}"
        )
        query, match = str(self.query), str(m.path)
        if self.heat_on() and self.pair() is None:
            self.explain.request(query, match)
        # Keep only what the next step can show, so long walks do not pile up decoded photos.
        near = {query} | {str(r.path) for r in self.matches[max(0, self.current - 1) : self.current + 2]}
        for stale in [p for p in self.images if p not in near]:
            self.images.pop(stale, None)
            self.photos.pop(stale, None)
        self.overlays = {k: v for k, v in self.overlays.items() if k[1] == match}
        for pane, caption, path in zip((self.left, self.right), (self.left_caption, self.right_caption),
                                       self.sides()):
            caption.setText(self._caption(path))
            self._show_in(pane, path)

    def _show_in(self, pane: ImagePane, path: str) -> None:
        pane.hover = None
        if path not in self.images:
            pane.item.setPixmap(QPixmap())
            self.pool.start(ImageLoad(path, self.signals))
            return
        pair = self.pair() if self.heat_on() else None
        if pair is None:
            pane.set_image(self.images[path])
            return
        side = "a" if path == str(self.query) else "b"
        opacity = self.opacity.value() / 100
        key = (path, pair.match, opacity)
        if key in self.overlays:
            pane.set_image(self.overlays[key])
            pane.hover = self._field_finder(pair, side, self.images[path].width())
        else:
            pane.set_image(self.images[path])
            if key not in self._overlay_jobs:
                self._overlay_jobs.add(key)
                photo = self.photos[path]
                self.pool.start(_Overlay(path, pair.match, photo, pair.cam(side),
                                         pair.geometry(side, photo.width), opacity, self.signals))

    def _field_finder(self, pair, side: str, width: int):
        geom = pair.geometry(side, width)
        cam = pair.cam(side)
        rows, cols = cam.shape
        boxes = gradcam.layer_cell_boxes(pair.stage, geom, pair.crop)

        def find(x: float, y: float) -> tuple[QRectF, QRectF] | None:
            u, v = (x - geom.left) / geom.size, (y - geom.top) / geom.size
            if not (0 <= u < 1 and 0 <= v < 1):
                self.field_label.setText("")
                return None
            row, col = int(v * rows), int(u * cols)
            cw, ch = geom.size / cols, geom.size / rows
            cell = QRectF(geom.left + col * cw, geom.top + row * ch, cw, ch)
            left, top, right, bottom = boxes(row, col)
            rf = pair.stage.receptive_field
            self.field_label.setText(
                f"cell ({row}, {col}) of {pair.stage.name}: heat {cam[row, col]:.2f}; "
                f"it sees {rf} × {rf} px of the {pair.crop} px input (dashed)"
            )
            return cell, QRectF(left, top, right - left, bottom - top)

        return find

    def _caption(self, path: str) -> str:
        role = self.roles[0] if path == str(self.query) else self.roles[1]
        m = self.match()
        detail = ""
        if path == str(m.path):
            res = f"{m.width}×{m.height}, " if m.width else ""
            detail = f" — {res}{human_size(m.size)}"
        return f"{role}: {Path(path).name}{detail}"

    def _loaded(self, path: str, image: QImage, photo, error: str) -> None:
        if image.isNull():
            for side, caption in zip(self.sides(), (self.left_caption, self.right_caption)):
                if side == path:
                    caption.setText(f"{Path(path).name}: cannot show it ({error})")
            return
        self.images[path] = image
        self.photos[path] = photo
        self.show_current()

    def _explained(self, pair) -> None:
        if pair.query == str(self.query) and pair.match == str(self.match().path):
            self.show_current()

    def _overlaid(self, path: str, match: str, image: QImage, opacity: float) -> None:
        key = (path, match, opacity)
        self._overlay_jobs.discard(key)
        if match == str(self.match().path):
            self.overlays[key] = image
            self.show_current()

    def done(self, result: int) -> None:
        if self.explain is not None:
            self.explain.explained.disconnect(self._explained)
        self.pool.clear()
        self.pool.waitForDone(5000)
        super().done(result)
