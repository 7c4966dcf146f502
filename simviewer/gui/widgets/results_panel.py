"""The look-alikes panel: the query, its matches, and their heat maps.

With heat maps on, the matches on screen are explained first, top first, a few per pass
(``ExplainService.want``); each one says "heat map…" until its map arrives, and scrolling asks for
the newly visible ones instead of what scrolled away. The layer box offers the layers the CLI's
``explain --layer`` takes (the last block by default).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QSlider,
    QSpinBox,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from ..explain import ExplainService
from ..models import FileRow, ResultListModel
from ..thumbnails import ThumbnailService

IDLE_TEXT = "Click a photo to see its look-alikes"
MATCH_SIDE = 120  # matches are drawn this big: more of them fit, the heat maps still read
AHEAD = 2  # matches below the visible ones whose maps are asked for too


class _FixedDecoration(QStyledItemDelegate):
    """Draws every decoration at the view's icon size (a QPixmap is otherwise drawn at its own)."""

    def initStyleOption(self, option, index) -> None:  # noqa: N802 (Qt API)
        super().initStyleOption(option, index)
        option.decorationSize = QSize(MATCH_SIDE, MATCH_SIDE)


class ResultsPanel(QWidget):
    k_changed = Signal(int)
    compare_requested = Signal(int)  # row of the match to open in the compare view

    def __init__(self, thumbnails: ThumbnailService, explain: ExplainService, settings: QSettings,
                 parent=None) -> None:
        super().__init__(parent)
        self.thumbnails, self.explain, self.settings = thumbnails, explain, settings
        self.query_path: str | None = None
        self.rows: list[FileRow] = []
        self.model = ResultListModel(thumbnails, self)
        self.query_label = QLabel(IDLE_TEXT)
        self.query_label.setWordWrap(True)
        self.k_spin = QSpinBox(minimum=1, maximum=200, value=int(settings.value("results/k", 12)))
        self.k_spin.valueChanged.connect(self._k_changed)
        self.view = QListView()
        self.view.setViewMode(QListView.ViewMode.ListMode)
        self.view.setIconSize(QSize(MATCH_SIDE, MATCH_SIDE))
        self.view.setItemDelegate(_FixedDecoration(self.view))
        self.view.setSpacing(2)
        self.view.setModel(self.model)
        self.view.doubleClicked.connect(lambda idx: self.compare_requested.emit(idx.row()))
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.verticalScrollBar().valueChanged.connect(lambda _v: self.request_visible_maps())
        self.heat_box = QCheckBox("Heat maps")
        self.heat_box.setToolTip("Show on each match the regions that make it similar to the query (Grad-CAM)")
        self.heat_box.setChecked(settings.value("results/heat", "false") == "true")
        self.heat_box.toggled.connect(self._heat_toggled)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(10, 90)
        self.opacity.setValue(int(settings.value("results/opacity", 50)))
        self.opacity.setMaximumWidth(120)
        self.opacity.setToolTip("Heat-map opacity")
        self.opacity.valueChanged.connect(self._opacity_changed)
        self.layer_box = QComboBox()
        self.layer_box.setToolTip("The layer the heat maps explain: the last one sees whole objects, earlier "
                                  "ones smaller details (as simviewer explain --layer)")
        self.layer_box.setEnabled(False)
        self.layer_box.activated.connect(lambda _i: self._layer_chosen(self.layer_box.currentText()))
        self.model.show_overlays = self.heat_box.isChecked()
        self.query_thumb = QLabel()
        self.query_thumb.setFixedSize(96, 96)
        self.query_thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.query_thumb.hide()  # shown with a query
        thumbnails.ready.connect(self._query_thumb_ready)
        explain.explained.connect(self._pair_explained)
        explain.failed.connect(lambda _q, m, _why: self._update_computing())
        explain.layers_ready.connect(self._layers_ready)
        self._layout()

    def _layout(self) -> None:
        lay = QVBoxLayout(self)
        head = QHBoxLayout()
        head.addWidget(self.query_thumb)
        head.addWidget(self.query_label, 1)
        head.addWidget(QLabel("k:"))
        head.addWidget(self.k_spin)
        lay.addLayout(head)
        heat_row = QHBoxLayout()
        heat_row.addWidget(self.heat_box)
        heat_row.addWidget(self.layer_box)
        heat_row.addWidget(QLabel("opacity"))
        heat_row.addWidget(self.opacity)
        heat_row.addStretch(1)
        lay.addLayout(heat_row)
        lay.addWidget(self.view)

    # -- query and results ---------------------------------------------------------------------
    def clear(self) -> None:
        self.query_path = None
        self.rows = []
        self.model.overlays.clear()
        self.model.set_computing(set())
        self.model.set_rows([])
        self.query_label.setText(IDLE_TEXT)
        self.query_thumb.clear()
        self.query_thumb.hide()

    def set_query(self, path: str, external: bool) -> None:
        self.query_path = path
        where = " (not in the library)" if external else ""
        self.query_label.setText(f"Look-alikes of <b>{Path(path).name}</b>{where}")
        self.query_thumb.clear()
        self.query_thumb.show()
        pm = self.thumbnails.pixmap(path)
        if pm is not None:
            self._set_query_thumb(pm)

    def _query_thumb_ready(self, path: str, _image) -> None:
        if path == self.query_path:
            self._set_query_thumb(self.thumbnails.get(path))

    def _set_query_thumb(self, pm: QPixmap | None) -> None:
        if pm is not None:
            self.query_thumb.setPixmap(pm.scaled(96, 96, Qt.AspectRatioMode.KeepAspectRatio,
                                                 Qt.TransformationMode.SmoothTransformation))

    def show_results(self, rows: list[FileRow]) -> None:
        """Show a new query's matches from the top (best first)."""
        self.rows = rows
        self.model.overlays.clear()
        self.model.set_computing(set())
        self.model.set_rows(rows)
        self.view.scrollToTop()
        for row in rows:  # maps computed before for this query show at once
            self._apply_overlay(str(row.path))
        self.request_visible_maps()

    def _k_changed(self, k: int) -> None:
        self.settings.setValue("results/k", k)
        self.k_changed.emit(k)

    # -- heat maps -----------------------------------------------------------------------------
    def heat_on(self) -> bool:
        return self.heat_box.isChecked()

    def _heat_toggled(self, on: bool) -> None:
        self.settings.setValue("results/heat", "true" if on else "false")
        self.model.show_overlays = on
        if on:
            self.request_visible_maps()
        else:
            self.explain.want("", [])
            self._update_computing()
        self.model.refresh_decorations()

    def _opacity_changed(self, value: int) -> None:
        self.settings.setValue("results/opacity", value)
        for row in self.rows:
            self._apply_overlay(str(row.path))

    def visible_rows(self) -> list[int]:
        """Rows of the matches on screen (the first few when the list is not laid out yet)."""
        n = self.model.rowCount()
        viewport = self.view.viewport().rect()
        visible = [r for r in range(n) if self.view.visualRect(self.model.index(r)).intersects(viewport)]
        return visible or list(range(min(4, n)))

    def request_visible_maps(self) -> None:
        """Ask for the heat maps of the matches on screen (and a few below), top first."""
        if not self.heat_on() or self.query_path is None:
            return
        visible = self.visible_rows()
        if not visible:
            return
        wanted = range(visible[0], min(visible[-1] + 1 + AHEAD, self.model.rowCount()))
        self.explain.want(self.query_path, [str(self.model.rows[r].path) for r in wanted])
        self._update_computing()

    def _update_computing(self) -> None:
        query = self.query_path
        paths = {str(r.path) for r in self.rows} if query is not None else set()
        self.model.set_computing({p for p in paths if self.explain.computing(query, p)})

    def _apply_overlay(self, match: str) -> None:
        if self.query_path is None:
            return
        pair = self.explain.get(self.query_path, match)
        if pair is not None:
            image = pair.overlay_thumb("b", self.opacity.value() / 100)
            self.model.set_overlay(match, QPixmap.fromImage(image))

    def _pair_explained(self, pair) -> None:
        if pair.query == self.query_path:
            self._apply_overlay(pair.match)
        self._update_computing()

    def _layers_ready(self, layers: list[str]) -> None:
        """The layers of the model (until its network is built: the default one, to read)."""
        self.layer_box.clear()
        self.layer_box.addItems(layers or ([self.explain.layer] if self.explain.layer else []))
        self.layer_box.setCurrentText(self.explain.layer or "")
        self.layer_box.setEnabled(bool(layers))

    def _layer_chosen(self, layer: str) -> None:
        self.explain.set_layer(layer)
        self.model.overlays.clear()
        for row in self.rows:
            self._apply_overlay(str(row.path))
        self.model.refresh_decorations()
        self.request_visible_maps()
