"""The Library tab: the grid of the open library, the look-alikes of a clicked or dropped photo.

A click on an indexed photo is an Annoy lookup (milliseconds) on the GUI thread; a photo that is
not in the index (dropped, pasted) is embedded on a :class:`GeneratorThread` with a network of its
own. During a folder's first indexing the grid fills with the photos embedded so far.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.embedder import Embedder
from ...core.images import is_image_name
from ...core.index import AnnIndex
from ..explain import ExplainService
from ..models import FileRow, LibraryGridModel, PathRole
from ..session import Feedback, LibrarySession
from ..thumbnails import THUMB_SIZE, ThumbnailService
from ..widgets.compare_view import CompareDialog
from ..widgets.results_panel import ResultsPanel
from ..workers import GeneratorThread

EMPTY_TEXT = "Open a folder or drop photos here"
SORT_KEY, DESCENDING_KEY = "library/sort", "library/descending"  # the grid's order, kept between runs


class LibraryTab(QStackedWidget):
    """An invitation to open a folder, then the grid and the look-alikes side by side."""

    message = Signal(str)  # a note for the status bar
    open_requested = Signal(str)  # a folder was dropped: open it

    def __init__(self, session: LibrarySession, thumbnails: ThumbnailService, feedback: Feedback,
                 explain: ExplainService, parent=None) -> None:
        super().__init__(parent)
        self.session, self.thumbnails, self.feedback, self.explain = session, thumbnails, feedback, explain
        self.query_worker: GeneratorThread | None = None
        self.searching = False
        self.compare_dialog: CompareDialog | None = None
        self._pending_query: str | None = None
        self._query_embedders: dict[str, Embedder] = {}
        self._pasted_files: list[str] = []
        self.last_query: tuple[str, str] | None = None  # ("key" | "external", path)
        self.grid_model = LibraryGridModel(thumbnails, self)
        self.panel = ResultsPanel(thumbnails, explain, session.settings, self)
        self.panel.k_changed.connect(lambda _k: self.repeat_query())
        self.panel.compare_requested.connect(self.open_compare)
        self._build()
        session.opened.connect(self._opened)
        session.rows_changed.connect(self.grid_model.set_library_rows)
        session.index_ready.connect(self._index_ready)

    def _build(self) -> None:
        self.filter_edit = QLineEdit(placeholderText="Filter by name")
        self.filter_edit.textChanged.connect(self.grid_model.set_filter)
        self.sort_box = QComboBox()
        self.sort_box.addItems(list(LibraryGridModel.SORTS))
        self.sort_dir = QToolButton()
        self.sort_dir.setCheckable(True)
        self._restore_sort()
        self.sort_box.currentTextChanged.connect(self._sort_changed)
        self.sort_dir.toggled.connect(self._direction_changed)
        self.grid = QListView()
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setUniformItemSizes(True)
        self.grid.setLayoutMode(QListView.LayoutMode.Batched)
        self.grid.setBatchSize(200)
        self.grid.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.grid.setGridSize(QSize(THUMB_SIZE + 24, THUMB_SIZE + 36))
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setModel(self.grid_model)
        self.grid.clicked.connect(lambda idx: self.query_indexed(idx.data(PathRole)))
        for view in (self.grid, self.panel.view):
            view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            view.customContextMenuRequested.connect(lambda pos, v=view: self._context_menu(v, pos))
        left = QWidget()
        lv = QVBoxLayout(left)
        row = QHBoxLayout()
        row.addWidget(self.filter_edit, 1)
        row.addWidget(QLabel("Sort:"))
        row.addWidget(self.sort_box)
        row.addWidget(self.sort_dir)
        lv.addLayout(row)
        lv.addWidget(self.grid)
        self.splitter = QSplitter()
        self.splitter.setObjectName("library-splitter")
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.panel)
        self.splitter.setSizes([860, 420])
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("font-size: 20px; color: palette(mid);")
        self.addWidget(self.empty)
        self.addWidget(self.splitter)

    # -- the grid's order ------------------------------------------------------------------------
    def _restore_sort(self) -> None:
        settings = self.session.settings
        name = str(settings.value(SORT_KEY, "Name"))
        descending = str(settings.value(DESCENDING_KEY, "false")) == "true"
        if name in LibraryGridModel.SORTS:
            self.sort_box.setCurrentText(name)
        self.sort_dir.setChecked(descending)
        self.grid_model.sort_by(self.sort_box.currentText(), descending)
        self._show_direction(descending)

    def _show_direction(self, descending: bool) -> None:
        self.sort_dir.setArrowType(Qt.ArrowType.DownArrow if descending else Qt.ArrowType.UpArrow)
        self.sort_dir.setToolTip("Descending: Z to A, newest, largest first (click for ascending)" if descending
                                 else "Ascending: A to Z, oldest, smallest first (click for descending)")

    def _sort_changed(self, name: str) -> None:
        self.grid_model.sort_by(name)
        self.session.settings.setValue(SORT_KEY, name)

    def _direction_changed(self, descending: bool) -> None:
        self._show_direction(descending)
        self.grid_model.set_descending(descending)
        self.session.settings.setValue(DESCENDING_KEY, "true" if descending else "false")

    # -- the session ---------------------------------------------------------------------------
    def _opened(self, _library) -> None:
        self.last_query = None
        self.panel.clear()
        self.grid_model.set_library_rows([])
        self.setCurrentWidget(self.splitter)

    def _index_ready(self, index: AnnIndex | None) -> None:
        if index is not None:
            self.explain.set_model(index.model)
            self.panel.model.untrained = index.model.untrained

    # -- queries -------------------------------------------------------------------------------
    def repeat_query(self) -> None:
        if self.last_query:
            kind, value = self.last_query
            if kind == "key":
                self.query_indexed(value)
            else:
                self.query_external([value])

    def query_indexed(self, path: str) -> None:
        index, library = self.session.index, self.session.library
        if library is None or not path:
            return
        if index is None:
            self.message.emit("Look-alikes show once the photos are indexed: wait for indexing to finish "
                              "(a stopped first indexing goes on when the folder is opened again)")
            return
        try:
            results = index.query_key(library.key_for(path), self.panel.k_spin.value())
        except KeyError:
            self.query_external([path])
            return
        self.last_query = ("key", path)
        self.panel.set_query(path, external=False)
        self.show_results([(library.path_for(k), s) for k, s in results])

    def show_results(self, results: list[tuple[Path, float]]) -> None:
        rows = []
        for p, score in results:
            try:
                st = p.stat()
            except OSError:
                continue
            known = self.grid_model.row_for(p)
            w, h = (known.width, known.height) if known else (None, None)
            rows.append(FileRow(p, st.st_size, st.st_mtime_ns, w, h, score))
        self.panel.show_results(rows)

    def query_external(self, paths: list[str]) -> None:
        """Embed an image that is not in the index (dropped or pasted) and show its look-alikes.

        Searches run one at a time on their own embedder (never the indexing one, so no two
        threads share a network); a request made while one runs replaces any waiting request.
        """
        index, library = self.session.index, self.session.library
        if index is None or library is None:
            self.feedback.error("No library open", "Open a folder first, then drop a photo to search it.")
            return
        if self.session.closing:
            return
        if self.searching:
            self._pending_query = paths[0]
            return
        path, spec, k = paths[0], index.model, self.panel.k_spin.value()
        embedders = self._query_embedders

        def run(stop):
            emb = embedders.get(spec.fingerprint)
            if emb is None:
                emb = embedders[spec.fingerprint] = Embedder.from_spec(spec)
            yield library.query_image(path, k, index, lambda: emb)

        worker = GeneratorThread(run, "query", self)
        worker.yielded.connect(self.show_results)
        worker.failed.connect(lambda exc: self.feedback.error("Cannot search with this image",
                                                              f"{exc}\n\nTry another image file."))
        worker.done.connect(self._query_done)
        self.query_worker = worker
        self.last_query = ("external", path)
        self.grid.clearSelection()
        self.panel.set_query(path, external=True)
        self.searching = True
        worker.start()

    def _query_done(self, _completed: bool) -> None:
        self.searching = False
        if self._pending_query is not None:
            path, self._pending_query = self._pending_query, None
            self.query_external([path])

    # -- dropped and pasted photos -------------------------------------------------------------
    def handle_dropped(self, paths: list[str]) -> None:
        """A dropped folder is opened; dropped photos are searched (the first one)."""
        folders = [p for p in paths if os.path.isdir(p)]
        if folders:
            self.open_requested.emit(folders[0])
            return
        images = [p for p in paths if os.path.isfile(p) and is_image_name(p)]
        if not images:
            names = ", ".join(Path(p).name for p in paths) or "nothing usable"
            self.feedback.error("Not an image", f"{names} is not a photo simviewer can read.\n\n"
                                "Drop JPEG, PNG, WebP, HEIC, TIFF, BMP or GIF files, or a folder to open it.")
            return
        self.query_external(images)

    def paste(self, clipboard) -> None:
        """Search with the clipboard's image (or the files it names)."""
        if clipboard.mimeData().hasUrls():
            self.handle_dropped([u.toLocalFile() for u in clipboard.mimeData().urls() if u.isLocalFile()])
            return
        image = clipboard.image()
        if image.isNull():
            self.feedback.error("Nothing to paste", "The clipboard holds no image. Copy a picture, then press Ctrl+V.")
            return
        fd, tmp = tempfile.mkstemp(prefix="simviewer-paste-", suffix=".png")
        os.close(fd)
        image.save(tmp, "PNG")
        self._pasted_files.append(tmp)  # removed when the window closes
        self.query_external([tmp])

    def remove_pasted(self) -> None:
        for tmp in self._pasted_files:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        self._pasted_files.clear()

    # -- compare view and context menu ---------------------------------------------------------
    def open_compare(self, row: int, heat: bool | None = None) -> CompareDialog | None:
        if not self.panel.rows or not self.last_query:
            return None
        dlg = CompareDialog(Path(self.last_query[1]), self.panel.rows, row, self,
                            untrained=self.panel.model.untrained, explain=self.explain,
                            overlays=self.panel.heat_on() if heat is None else heat,
                            opacity=self.panel.opacity.value() / 100)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.compare_dialog = dlg
        return dlg

    def _context_menu(self, view: QListView, pos) -> None:
        idx = view.indexAt(pos)
        if idx.isValid():
            menu = self.context_menu_for(idx.data(PathRole), view is self.panel.view, idx.row())
            menu.exec(view.viewport().mapToGlobal(pos))

    def context_menu_for(self, path: str, is_result: bool, row: int) -> QMenu:
        menu = QMenu(self)
        menu.addAction("Find look-alikes of this", lambda: self.query_indexed(path))
        if is_result:
            menu.addAction("Compare with the query", lambda: self.open_compare(row))
            menu.addAction("Explain this match (heat maps)", lambda: self.open_compare(row, heat=True))
        menu.addSeparator()
        menu.addAction("Open the file", lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(path)))
        menu.addAction("Show in its folder",
                       lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent))))
        menu.addAction("Copy its path", lambda: QApplication.clipboard().setText(path))
        return menu

    def show_photo(self, path: str) -> None:
        """Select *path* in the grid, scroll to it and show its look-alikes."""
        self.filter_edit.clear()
        for r in range(self.grid_model.rowCount()):
            idx = self.grid_model.index(r)
            if idx.data(PathRole) == path:
                self.grid.setCurrentIndex(idx)
                self.grid.scrollTo(idx)
                break
        self.query_indexed(path)
