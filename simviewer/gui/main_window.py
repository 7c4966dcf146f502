"""The main window: a library grid, a look-alikes panel, indexing in a worker thread.

No ML code lives here: indexing is ``Library.update`` on a :class:`GeneratorThread`; embedding an
external image is ``Embedder.embed_paths`` on the same kind of thread; a click on an indexed photo
is an Annoy lookup (milliseconds) on the GUI thread.

A library keeps the model it was indexed with: opening it brings it up to date with that model,
whatever the toolbar shows, and only "Use model" switches (and re-indexes). A new library gets
``core.embedder.default_model()``, decided on the indexing thread (it may ask the network whether
the ResNet-50 weights can be downloaded), and the bundled pretrained model stands in without a
question where that download then fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core import embedder as embedding
from ..core.calibration import CalibrationProgress
from ..core.embedder import Embedder, EmbedderError, WeightsUnavailable
from ..core.images import is_image_name
from ..core.index import AnnIndex
from ..core.library import (
    FileSkipped,
    IndexBuilding,
    IndexProgress,
    IndexSummary,
    Library,
    ScanDone,
    default_index_dir,
)
from ..core.paths import find_checkpoints
from ..core.registry import ARCHITECTURES, BUNDLED_ARCH, DEFAULT_ARCH
from .compare import CompareDialog
from .duplicates import DuplicatesTab
from .explain import ExplainService, ModelInfoDialog
from .models import FileRow, LibraryGridModel, PathRole, ResultListModel
from .thumbnails import THUMB_SIZE, ThumbnailService
from .training_tab import TrainingTab
from .workers import GeneratorThread, stop_all

log = logging.getLogger(__name__)

EMPTY_TEXT = "Open a folder or drop photos here"
KEPT_REASON = "the model this library was indexed with (choose another and press “Use model” to switch)"
CHOSEN_REASON = "your choice"


@dataclass(frozen=True)
class ModelInUse:
    """The first event of every indexing run: the model it uses and why."""

    embedder: Embedder
    reason: str
    automatic: bool = False  # chosen for the user: a new library's default
    fallback: bool = False  # the default's ImageNet weights could not be had: the bundled model stands in


def model_for_run(library: Library, chosen: Embedder | None, default: bool) -> Iterator[ModelInUse]:
    """Decide the model of an indexing run (on its thread); yields ModelInUse, returns the embedder.

    *chosen*: the user's explicit choice. Otherwise the library's own model (its index's), or for a
    new library (or with *default*) the default model; where that is ResNet-50 and its weights
    cannot be downloaded, the pretrained model installed with simviewer, without asking: an
    untrained network is only ever the user's choice.
    """
    if chosen is not None:
        yield ModelInUse(chosen, CHOSEN_REASON)
        return chosen
    manifest = None if default else library.manifest()
    if manifest is not None:
        own = Embedder.from_manifest(manifest["model"])
        yield ModelInUse(own, KEPT_REASON)
        return own
    emb, choice = embedding.default_embedder()
    yield ModelInUse(emb, choice.reason, automatic=True, fallback=choice.fallback)
    return emb


class Tabs(QTabWidget):
    """Tabs whose page may be a scroll area around the tab's widget: either can be made current."""

    def setCurrentWidget(self, widget: QWidget) -> None:  # noqa: N802 (Qt API)
        for i in range(self.count()):
            page = self.widget(i)
            if page is widget or (isinstance(page, QScrollArea) and page.widget() is widget):
                self.setCurrentIndex(i)
                return


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, index_root: Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("simviewer")
        self.resize(1280, 800)
        self.setAcceptDrops(True)
        self.settings = settings or QSettings("simviewer", "simviewer")
        self.index_root = index_root  # tests put indexes here; None: the per-user data folder
        self.library: Library | None = None
        self.index: AnnIndex | None = None
        self.embedder: Embedder | None = None
        self.index_worker: GeneratorThread | None = None
        self.query_worker: GeneratorThread | None = None
        self.skipped: list[tuple[str, str]] = []
        self.indexing = False  # True from start_indexing until the worker's last event is handled
        self.loading = False  # True while the index and grid rows load on a worker
        self._closing = False
        self._restart_indexing = False
        self._restart_with: tuple[Embedder | None, bool] = (None, False)
        self.model_reasons: dict[str, str] = {}  # model fingerprint -> why the open library uses it
        self._model_note = ""  # said after each progress message while a model chosen for the user indexes
        self._boxes_show: tuple[object, str] | None = None  # (library, fingerprint) the toolbar's boxes show
        self.searching = False
        self._pending_query: str | None = None
        self._query_embedders: dict[str, Embedder] = {}
        self.last_summary: IndexSummary | None = None
        self.last_results: list[FileRow] = []
        self.last_error: tuple[str, str] | None = None
        self._last_query: tuple[str, str] | None = None  # ("key" | "external", path)
        self._query_path: str | None = None
        self._pasted_files: list[str] = []

        self.thumbnails = ThumbnailService(None, self)
        self.loader, self.cache = self.thumbnails.loader, self.thumbnails.cache
        self.grid_model = LibraryGridModel(self.thumbnails, self)
        self.results_model = ResultListModel(self.thumbnails, self)
        self.explain = ExplainService(self)
        self.explain.explained.connect(self._pair_explained)
        self.explain.failed.connect(lambda q, m, why: self.say(f"No heat map for {Path(m).name}: {why}"))

        self._build_ui()
        self._update_recent_menu()

    # -- layout --------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        tb = self.addToolBar("Main")
        tb.setObjectName("main-toolbar")
        self.open_action = QAction("Open folder…", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.choose_folder)
        tb.addAction(self.open_action)
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &recent")
        paste = QAction("Search with the clipboard image", self, shortcut=QKeySequence.StandardKey.Paste)
        paste.triggered.connect(self.paste_image)
        file_menu.addAction(paste)
        self.addAction(paste)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        model_menu = self.menuBar().addMenu("&Model")
        model_menu.addAction("Layers and receptive fields…", self.show_model_info)
        tb.addSeparator()
        tb.addWidget(QLabel(" Model: "))
        self.arch_box = QComboBox()
        self.arch_box.addItems(list(ARCHITECTURES))
        self.arch_box.setCurrentText(str(self.settings.value("model/arch", DEFAULT_ARCH)))
        tb.addWidget(self.arch_box)
        self.weights_box = QComboBox()
        self.weights_box.setMinimumContentsLength(18)
        self._fill_weights_box(str(self.settings.value("model/weights", "imagenet")))
        self.weights_box.activated.connect(self._weights_chosen)
        tb.addWidget(self.weights_box)
        apply_model = QPushButton("Use model")
        apply_model.setToolTip("Re-index the library with the chosen model (a library otherwise keeps the "
                               "model it was indexed with)")
        apply_model.clicked.connect(self.reindex_with_selected_model)
        tb.addWidget(apply_model)
        self.model_label = QLabel("")
        tb.addWidget(self.model_label)

        # Library grid.
        self.filter_edit = QLineEdit(placeholderText="Filter by name")
        self.filter_edit.textChanged.connect(self.grid_model.set_filter)
        self.sort_box = QComboBox()
        self.sort_box.addItems(list(LibraryGridModel.SORTS))
        self.sort_box.currentTextChanged.connect(lambda name: self.grid_model.sort_by(name))
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
        self.grid.clicked.connect(self._grid_clicked)
        left = QWidget()
        lv = QVBoxLayout(left)
        row = QHBoxLayout()
        row.addWidget(self.filter_edit, 1)
        row.addWidget(QLabel("Sort:"))
        row.addWidget(self.sort_box)
        lv.addLayout(row)
        lv.addWidget(self.grid)

        # Look-alikes panel.
        self.query_label = QLabel("Click a photo to see its look-alikes")
        self.query_label.setWordWrap(True)
        self.k_spin = QSpinBox(minimum=1, maximum=200, value=int(self.settings.value("results/k", 12)))
        self.k_spin.valueChanged.connect(self._k_changed)
        self.results = QListView()
        self.results.setViewMode(QListView.ViewMode.ListMode)
        self.results.setIconSize(QSize(96, 96))
        self.results.setSpacing(2)
        self.results.setModel(self.results_model)
        self.results.doubleClicked.connect(lambda idx: self.open_compare(idx.row()))
        for view in (self.grid, self.results):
            view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            view.customContextMenuRequested.connect(lambda pos, v=view: self._context_menu(v, pos))
        self.heat_box = QCheckBox("Heat maps")
        self.heat_box.setToolTip("Show on each match the regions that make it similar to the query (Grad-CAM)")
        self.heat_box.setChecked(self.settings.value("results/heat", "false") == "true")
        self.heat_box.toggled.connect(self._heat_toggled)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(10, 90)
        self.opacity.setValue(int(self.settings.value("results/opacity", 50)))
        self.opacity.setMaximumWidth(120)
        self.opacity.setToolTip("Heat-map opacity")
        self.opacity.valueChanged.connect(self._opacity_changed)
        self.results_model.show_overlays = self.heat_box.isChecked()
        self.query_thumb = QLabel()
        self.query_thumb.setFixedSize(96, 96)
        self.query_thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.loader.ready.connect(self._query_thumb_ready)
        right = QWidget()
        rv = QVBoxLayout(right)
        head = QHBoxLayout()
        head.addWidget(self.query_thumb)
        head.addWidget(self.query_label, 1)
        head.addWidget(QLabel("k:"))
        head.addWidget(self.k_spin)
        rv.addLayout(head)
        heat_row = QHBoxLayout()
        heat_row.addWidget(self.heat_box)
        heat_row.addWidget(QLabel("opacity"))
        heat_row.addWidget(self.opacity)
        heat_row.addStretch(1)
        rv.addLayout(heat_row)
        rv.addWidget(self.results)
        self.results.verticalScrollBar().valueChanged.connect(lambda _v: self._request_visible_maps())

        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([860, 420])
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("font-size: 20px; color: palette(mid);")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(split)
        self.duplicates = DuplicatesTab(self)
        self.tabs = Tabs()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.stack, "Library")
        self.tabs.addTab(self.duplicates, "Duplicates")
        self.training = TrainingTab(self)
        # Its options are taller than a small screen: they scroll instead of making the window taller.
        training_page = QScrollArea()
        training_page.setWidget(self.training)
        training_page.setWidgetResizable(True)
        training_page.setFrameShape(QFrame.Shape.NoFrame)
        self.tabs.addTab(training_page, "Training")
        self.setCentralWidget(self.tabs)

        # Status bar: progress, ETA, cancel, skipped files.
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.hide()
        self.status = QLabel("")
        # Long messages are cut at the window's edge instead of widening it; the tooltip has them whole.
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status.setMinimumWidth(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_indexing)
        self.cancel_button.hide()
        self.skipped_button = QPushButton("")
        self.skipped_button.clicked.connect(self.show_skipped)
        self.skipped_button.hide()
        sb = self.statusBar()
        sb.addWidget(self.status, 1)
        sb.addPermanentWidget(self.skipped_button)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)

    # -- opening and indexing ------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a photo folder", str(Path.home()))
        if folder:
            self.open_folder(folder)

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = [p for p in (self.settings.value("recent", []) or []) if os.path.isdir(p)]
        for p in recent[:10]:
            self.recent_menu.addAction(p, lambda p=p: self.open_folder(p))
        self.recent_menu.setEnabled(bool(recent))

    def _remember(self, folder: str) -> None:
        recent = [folder] + [p for p in (self.settings.value("recent", []) or []) if p != folder]
        self.settings.setValue("recent", recent[:10])
        self._update_recent_menu()

    def _index_dir_for(self, folder: Path) -> Path | None:
        if self.index_root is None:
            return None
        return self.index_root / default_index_dir(folder).name

    def open_folder(self, folder: str | os.PathLike) -> None:
        try:
            self.library = Library(folder, self._index_dir_for(Path(folder)))
        except Exception as exc:
            self.show_error("Cannot open this folder", f"{exc}\n\nChoose another folder.")
            return
        self.loader.cache_dir = self.library.index_dir / "thumbnails"
        # The previous library's index is dropped, not closed: a search may still be using it.
        self.index = None
        self._last_query = None
        self.grid_model.set_library_rows([])
        self.results_model.set_rows([])
        self.last_results = []
        self.query_label.setText("Click a photo to see its look-alikes")
        self.query_thumb.clear()
        self.skipped_button.hide()
        self._remember(str(self.library.folder))
        self.setWindowTitle(f"simviewer — {self.library.folder}")
        self.stack.setCurrentIndex(1)
        self.duplicates.library_opened()
        self._model_note = ""
        self.model_reasons.clear()
        self._load_existing_index()
        self.start_indexing()  # with the library's own model (a new library: the default one)

    # -- model choice --------------------------------------------------------------------------
    def _fill_weights_box(self, current: str) -> None:
        """ImageNet, untrained, fine-tuned checkpoints found in models/, any file chosen before."""
        box = self.weights_box
        box.clear()
        box.addItem("ImageNet", "imagenet")
        box.addItem("Untrained (random)", "none")
        for ckpt in find_checkpoints():
            box.addItem(f"Fine-tuned: {ckpt.name}", str(ckpt))
        if current not in ("imagenet", "none") and box.findData(current) < 0 and os.path.isfile(current):
            box.addItem(f"File: {Path(current).name}", current)
        box.addItem("Weights file…", "")
        i = box.findData(current)
        box.setCurrentIndex(i if i >= 0 else 0)

    def selected_weights(self) -> str:
        return self.weights_box.currentData() or "imagenet"

    def set_weights_choice(self, weights: str) -> None:
        self._fill_weights_box(weights)

    def _weights_chosen(self, i: int) -> None:
        if self.weights_box.itemData(i) == "":
            path, _ = QFileDialog.getOpenFileName(
                self, "Choose a weights file", str(Path.home()), "PyTorch weights (*.pt *.pth);;All files (*)"
            )
            self.set_weights_choice(path or str(self.settings.value("model/weights", "imagenet")))

    def selected_embedder(self) -> Embedder:
        """The toolbar's model: used when the user asks for it ("Use model"), never on opening."""
        return Embedder(self.arch_box.currentText(), self.selected_weights())

    def _show_model_in_boxes(self, model: dict) -> None:
        """Set the toolbar's boxes to the open library's model (the remembered choice stays in the
        settings: it is what the boxes show before a library is open)."""
        if model.get("arch") in ARCHITECTURES:
            self.arch_box.setCurrentText(model["arch"])
        self._fill_weights_box(str(model.get("weights", "imagenet")))

    def refresh_models(self) -> None:
        """Offer checkpoints that appeared in models/ (a training run just wrote one)."""
        self._fill_weights_box(self.selected_weights())

    def use_model(self, arch: str, weights: str) -> None:
        """Switch the library to *arch* with *weights* and re-index it (a fine-tuned checkpoint)."""
        self.arch_box.setCurrentText(arch)
        self.set_weights_choice(weights)
        self.tabs.setCurrentWidget(self.stack)
        self.reindex_with_selected_model()

    def reindex_with_selected_model(self) -> None:
        """The explicit switch: re-index the open library with the toolbar's model."""
        self.settings.setValue("model/arch", self.arch_box.currentText())
        self.settings.setValue("model/weights", self.selected_weights())
        if self.library is None:
            return
        try:
            chosen = self.selected_embedder()
        except Exception as exc:
            self.show_error("Cannot use this model", str(exc))
            return
        self.start_indexing(chosen)

    def reindex_with_default_model(self) -> None:
        """Re-index the open library with the pretrained default (what a new library gets)."""
        if self.library is not None:
            self.start_indexing(default=True)

    def start_indexing(self, embedder: Embedder | None = None, default: bool = False) -> None:
        """Bring the open library up to date: with *embedder* where the user chose one, else with
        the model its index was built with (a new library, or *default*: the default model)."""
        if self.library is None or self._closing:
            return
        if self.indexing and self.index_worker is not None:
            # One run at a time (a library is locked while it updates): stop the current run
            # without blocking the window; _index_done starts this one when it has ended.
            self._restart_indexing = True
            self._restart_with = (embedder, default)
            self.index_worker.stop()
            self.say("Stopping the current run…")
            return
        library = self.library
        self.skipped = []

        def run(stop):
            use = yield from model_for_run(library, embedder, default)
            # Decoder processes, not threads: a decoder thread at its lower priority can hold the
            # GIL while the network's threads run, and the window waits for it (worst stall 21-31 ms
            # against 8 ms with processes, benchmarks/bench_gui_stall.py); and a decoder crash on a
            # hostile file then costs that file, not the window. Same speed.
            yield from library.update(use, should_stop=stop, decoders="processes")

        worker = GeneratorThread(run, "indexing", self)
        # Events of a worker that is no longer current (its done signal was still queued) are dropped.
        worker.yielded.connect(lambda ev, w=worker: self._index_event(ev) if w is self.index_worker else None)
        worker.failed.connect(lambda exc, w=worker: self._index_failed(exc) if w is self.index_worker else None)
        worker.done.connect(lambda ok, w=worker: self._index_done(ok) if w is self.index_worker else None)
        self.index_worker = worker
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.say("Choosing the model…" if embedder is None and (default or not self._has_index(library))
                 else "Scanning the folder…")
        self.indexing = True
        self.duplicates.indexing_changed()
        worker.start()

    @staticmethod
    def _has_index(library: Library) -> bool:
        try:
            return library.manifest() is not None
        except Exception:  # an unreadable manifest: the run says what is wrong
            return True

    def cancel_indexing(self) -> None:
        if self.index_worker is not None:
            self.index_worker.stop()
            self.say("Stopping after the current batch…")

    def say(self, text: str) -> None:
        """A status-bar message (whole in its tooltip where the window is too narrow for it)."""
        self.status.setText(text)
        self.status.setToolTip(text)

    def _progress_text(self, text: str) -> None:
        self.say(f"{text}  ·  {self._model_note}" if self._model_note else text)

    def _index_event(self, ev) -> None:
        if isinstance(ev, ModelInUse):
            self._model_in_use(ev)
        elif isinstance(ev, ScanDone):
            self.progress.setRange(0, max(ev.to_process, 1))
            self.progress.setValue(0)
            self._progress_text(f"{ev.total} photos; {ev.to_process} to read")
        elif isinstance(ev, IndexProgress):
            self.progress.setValue(ev.done)
            eta = f", about {ev.eta:.0f} s left" if ev.eta is not None else ""
            self._progress_text(f"Indexing {ev.done} of {ev.total}{eta}")
        elif isinstance(ev, FileSkipped):
            self.skipped.append((ev.path, ev.reason))
        elif isinstance(ev, IndexBuilding):
            self.progress.setRange(0, 0)
            self._progress_text(f"Building the search index of {ev.count} photos…")
        elif isinstance(ev, CalibrationProgress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self._progress_text(f"Calibrating the duplicate threshold on your photos… {ev.done}/{ev.total}")
            self.duplicates.calibration_progress(ev)
        elif isinstance(ev, IndexSummary):
            self.last_summary = ev
            self.skipped = ev.skipped
            self._model_note = ""
            stopped = " (stopped: the previous index is still in use)" if ev.cancelled else ""
            calibrated = f"  ·  Duplicates: {ev.calibration.summary()}" if ev.calibration is not None else ""
            self.say(f"{ev.indexed} photos indexed, {ev.embedded} new, {len(ev.skipped)} skipped, "
                     f"{ev.seconds:.1f} s{stopped}{calibrated}")

    def _model_in_use(self, ev: ModelInUse) -> None:
        self.embedder = ev.embedder
        fp = ev.embedder.fingerprint
        if ev.reason != KEPT_REASON or fp not in self.model_reasons:  # why it was chosen says more
            self.model_reasons[fp] = ev.reason
        self._show_model_label()
        if ev.automatic:
            # A model the user did not choose: say which and why, and keep saying it while it indexes.
            self._model_note = f"Model: {ev.embedder.label} — {ev.reason}"
            self.say(self._model_note)
            if ev.fallback:
                log.warning("%s", self._model_note)

    def _index_failed(self, exc: Exception) -> None:
        self._model_note = ""
        if isinstance(exc, WeightsUnavailable):
            # The user's own choice, or the model this library was indexed with: they decide.
            self.offer_offline_choices(exc)
        elif isinstance(exc, EmbedderError):
            self.show_error("Cannot use this model", f"{exc}\n\nThe photos indexed before can still be browsed. "
                            "To index new ones, choose a model in the toolbar and press “Use model”.")
        else:
            self.show_error("Indexing failed", f"{exc}\n\nCheck the folder and try again.")

    def _index_done(self, completed: bool) -> None:
        self.indexing = False
        self.duplicates.indexing_changed()
        if self._restart_indexing:
            self._restart_indexing = False
            embedder, default = self._restart_with
            self._restart_with = (None, False)
            self.start_indexing(embedder, default=default)
            return
        self.progress.hide()
        self.cancel_button.hide()
        if self.skipped:
            self.skipped_button.setText(f"Skipped files: {len(self.skipped)}")
            self.skipped_button.show()
        else:
            self.skipped_button.hide()
        self._load_existing_index()

    def _load_existing_index(self) -> None:
        """Load the index and the grid rows on a worker (100k rows take a while), then show them."""
        if self.library is None or self._closing:
            return
        library = self.library

        def load(stop):
            try:
                index = library.load_index()
            except Exception as exc:  # no index yet, or a damaged one: indexing will make one
                log.info("no usable index yet: %s", exc)
                return
            with library.open_catalog() as cat:
                files = cat.files()
            rows = []
            for key in index.all_keys():
                rec = files.get(key)
                if rec is not None:
                    rows.append(FileRow(library.path_for(key), rec.size, rec.mtime_ns, rec.width, rec.height))
            yield library, index, rows

        worker = GeneratorThread(load, "load-index", self)
        worker.yielded.connect(self._index_loaded)
        # Only the latest load ends "loading": an earlier one finishing must not hide a later one.
        worker.done.connect(lambda _ok, w=worker: setattr(self, "loading", False) if w is self._load_worker else None)
        self.loading = True
        self._load_worker = worker
        worker.start()

    def _index_loaded(self, loaded) -> None:
        library, index, rows = loaded
        if library is not self.library or self._closing:  # another folder was opened meanwhile
            index.close()
            return
        self.index = index  # the old one is released when no search holds it any more
        self.explain.set_model(index.manifest["model"])
        self.grid_model.set_library_rows(rows)
        shown = (library, index.model_fingerprint)
        if self._boxes_show != shown:  # another library or model: the toolbar shows what it uses
            self._boxes_show = shown
            self._show_model_in_boxes(index.manifest["model"])
        self._show_model_label()
        self.duplicates.index_changed()

    def _show_model_label(self) -> None:
        """The model in use, in the toolbar: the index's once there is one, else the running job's."""
        if self.index is not None:
            m = self.index.manifest["model"]
            untrained, label, fp = bool(m.get("untrained")), m.get("label", ""), m.get("fingerprint", "")
            if self.indexing and self.embedder is not None and self.embedder.fingerprint != fp:
                label += f"  → {self.embedder.label}"  # a run is switching the library to another model
        elif self.embedder is not None:
            untrained, label, fp = self.embedder.untrained, self.embedder.label, self.embedder.fingerprint
        else:
            return
        self.results_model.untrained = untrained
        self.model_label.setText(f"  {label}" + ("  ⚠ UNTRAINED" if untrained else ""))
        self.model_label.setStyleSheet("color: #c0392b; font-weight: bold;" if untrained else "")
        reason = self.model_reasons.get(fp, KEPT_REASON)
        self.model_label.setToolTip(f"{label}\n{reason[:1].upper()}{reason[1:]}.")

    # -- queries -------------------------------------------------------------------------------
    def _grid_clicked(self, index) -> None:
        self._query_indexed(index.data(PathRole))

    def _k_changed(self, k: int) -> None:
        self.settings.setValue("results/k", k)
        if self._last_query:
            kind, value = self._last_query
            if kind == "key":
                self._query_indexed(value)
            else:
                self.query_external([value])

    def _query_indexed(self, path: str) -> None:
        if self.index is None or self.library is None or not path:
            return
        key = self.library.key_for(path)
        try:
            results = self.index.query_key(key, self.k_spin.value())
        except KeyError:
            self.query_external([path])
            return
        self._last_query = ("key", path)
        self._set_query(path, external=False)
        self._show_results([(self.library.path_for(k), s) for k, s in results])

    def _set_query(self, path: str, external: bool) -> None:
        self._query_path = path
        where = " (not in the library)" if external else ""
        self.query_label.setText(f"Look-alikes of <b>{Path(path).name}</b>{where}")
        if external:
            self.grid.clearSelection()
        pm = self.cache.get(path)
        self.query_thumb.clear()
        if pm is not None:
            self._query_thumb_ready(path, pm.toImage())
        else:
            self.loader.request(path)

    def _query_thumb_ready(self, path: str, image) -> None:
        if path == self._query_path:
            self.query_thumb.setPixmap(
                QPixmap.fromImage(image).scaled(96, 96, Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.SmoothTransformation)
            )

    def _show_results(self, results: list[tuple[Path, float]]) -> None:
        rows = []
        for p, score in results:
            try:
                st = p.stat()
            except OSError:
                continue
            known = self.grid_model.row_for(p)
            w, h = (known.width, known.height) if known else (None, None)
            rows.append(FileRow(p, st.st_size, st.st_mtime_ns, w, h, score))
        self.last_results = rows
        self.results_model.overlays.clear()
        self.results_model.set_rows(rows)
        for row in rows:  # maps computed before for this query show at once
            self._apply_overlay(row.path)
        self._request_visible_maps()

    def query_external(self, paths: list[str]) -> None:
        """Embed an image that is not in the index (dropped or pasted) and show its look-alikes.

        Searches run one at a time on their own embedder (never the indexing one, so no two
        threads share a network); a request made while one runs replaces any waiting request.
        """
        if self.index is None or self.library is None:
            self.show_error("No library open", "Open a folder first, then drop a photo to search it.")
            return
        if self._closing:
            return
        if self.searching:
            self._pending_query = paths[0]
            return
        path = paths[0]
        m = self.index.manifest["model"]
        index, library, k = self.index, self.library, self.k_spin.value()
        embedders = self._query_embedders

        def run(stop):
            emb = embedders.get(m["fingerprint"])
            if emb is None:
                emb = embedders[m["fingerprint"]] = Embedder.from_manifest(m)
            yield library.query_image(path, k, index, lambda: emb)

        worker = GeneratorThread(run, "query", self)
        worker.yielded.connect(self._show_results)
        worker.failed.connect(lambda exc: self.show_error("Cannot search with this image",
                                                          f"{exc}\n\nTry another image file."))
        worker.done.connect(self._query_done)
        self.query_worker = worker
        self._last_query = ("external", path)
        self._set_query(path, external=True)
        self.searching = True
        worker.start()

    def _query_done(self, _completed: bool) -> None:
        self.searching = False
        if self._pending_query is not None:
            path, self._pending_query = self._pending_query, None
            self.query_external([path])

    # -- compare view and context menu ---------------------------------------------------------
    def open_compare(self, row: int, heat: bool | None = None) -> CompareDialog | None:
        if not self.last_results or not self._last_query:
            return None
        dlg = CompareDialog(Path(self._last_query[1]), self.last_results, row, self,
                            untrained=self.results_model.untrained, explain=self.explain,
                            overlays=self.heat_box.isChecked() if heat is None else heat,
                            opacity=self.opacity.value() / 100)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.compare_dialog = dlg
        return dlg

    def _context_menu(self, view: QListView, pos) -> None:
        idx = view.indexAt(pos)
        if not idx.isValid():
            return
        menu = self.context_menu_for(idx.data(PathRole), view is self.results, idx.row())
        menu.exec(view.viewport().mapToGlobal(pos))

    def context_menu_for(self, path: str, is_result: bool, row: int) -> QMenu:
        menu = QMenu(self)
        menu.addAction("Find look-alikes of this", lambda: self._query_indexed(path))
        if is_result:
            menu.addAction("Compare with the query", lambda: self.open_compare(row))
            menu.addAction("Explain this match (heat maps)", lambda: self.open_compare(row, heat=True))
        menu.addSeparator()
        menu.addAction("Open the file", lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(path)))
        menu.addAction("Show in its folder",
                       lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent))))
        menu.addAction("Copy its path", lambda: QApplication.clipboard().setText(path))
        return menu

    # -- heat maps -----------------------------------------------------------------------------
    def _heat_toggled(self, on: bool) -> None:
        self.settings.setValue("results/heat", "true" if on else "false")
        self.results_model.show_overlays = on
        self._request_visible_maps()
        self.results_model.refresh_decorations()

    def _opacity_changed(self, value: int) -> None:
        self.settings.setValue("results/opacity", value)
        for row in self.last_results:
            self._apply_overlay(row.path)

    def _request_visible_maps(self) -> None:
        """Ask for the heat maps of the matches on screen (and a few below), nearest first."""
        if not self.heat_box.isChecked() or self._query_path is None:
            return
        viewport = self.results.viewport().rect()
        visible = [r for r in range(self.results_model.rowCount())
                   if self.results.visualRect(self.results_model.index(r)).intersects(viewport)]
        if not visible:
            visible = list(range(min(4, self.results_model.rowCount())))
        wanted = list(range(visible[0], min(visible[-1] + 3, self.results_model.rowCount())))
        for r in reversed(wanted):  # the queue is last-in first-out: the top row comes first
            self.explain.request(self._query_path, str(self.results_model.rows[r].path))

    def _apply_overlay(self, match: Path) -> None:
        if self._query_path is None:
            return
        pair = self.explain.get(self._query_path, str(match))
        if pair is not None:
            image = pair.overlay_thumb("b", self.opacity.value() / 100)
            self.results_model.set_overlay(str(match), QPixmap.fromImage(image))

    def _pair_explained(self, pair) -> None:
        if pair.query == self._query_path:
            self._apply_overlay(Path(pair.match))

    def show_model_info(self) -> None:
        if self.index is None:
            self.show_error("No library open", "Open a folder first: the table describes the model it uses.")
            return
        model = self.index.manifest["model"]
        dlg = ModelInfoDialog(model.get("label", model["arch"]), self)
        self.explain.stages_ready.connect(dlg.set_stages)
        self.explain.request_stages()
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.model_dialog = dlg

    # -- drag and drop, paste ------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt API)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        self.handle_dropped(paths)
        event.acceptProposedAction()

    def handle_dropped(self, paths: list[str]) -> None:
        folders = [p for p in paths if os.path.isdir(p)]
        if folders:
            self.open_folder(folders[0])
            return
        images = [p for p in paths if os.path.isfile(p) and is_image_name(p)]
        if not images:
            names = ", ".join(Path(p).name for p in paths) or "nothing usable"
            self.show_error("Not an image", f"{names} is not a photo simviewer can read.\n\n"
                            "Drop JPEG, PNG, WebP, HEIC, TIFF, BMP or GIF files, or a folder to open it.")
            return
        self.query_external(images)

    def paste_image(self) -> None:
        clip = QApplication.clipboard()
        mime = clip.mimeData()
        if mime.hasUrls():
            self.handle_dropped([u.toLocalFile() for u in mime.urls() if u.isLocalFile()])
            return
        image = clip.image()
        if image.isNull():
            self.show_error("Nothing to paste", "The clipboard holds no image. Copy a picture, then press Ctrl+V.")
            return
        fd, tmp = tempfile.mkstemp(prefix="simviewer-paste-", suffix=".png")
        os.close(fd)
        image.save(tmp, "PNG")
        self._pasted_files.append(tmp)  # removed when the window closes
        self.query_external([tmp])

    # -- messages ------------------------------------------------------------------------------
    def exec_dialog(self, box: QMessageBox):
        """Run a modal message box; returns the button clicked. Tests replace this to answer it."""
        box.exec()
        return box.clickedButton()

    def show_error(self, title: str, text: str) -> None:
        self.last_error = (title, text)
        self.say(f"{title}: {text.splitlines()[0]}")
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        self.exec_dialog(box)

    def offer_offline_choices(self, exc: WeightsUnavailable) -> None:
        message = str(exc)
        arch = ARCHITECTURES[exc.arch].label if exc.arch in ARCHITECTURES else "this model"
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("ImageNet weights are not available")
        box.setText(f"The ImageNet weights for {arch} are not on this computer and could not be downloaded.")
        box.setInformativeText(
            "How would you like to go on?\n\n"
            f"• Import a weights file: for example {Path(exc.cache_file).name or 'the .pth file'} "
            "copied from a computer that has it.\n"
            f"• Use the pretrained {ARCHITECTURES[BUNDLED_ARCH].label} installed with simviewer: "
            "no download needed.\n"
            "• Continue untrained: look-alikes are weaker and duplicates may not be told apart. It is "
            "marked \"untrained\" wherever results show.\n"
            "• Or fine-tune a model on your own photos and choose it in the toolbar."
        )
        box.setDetailedText(message)
        file_btn = box.addButton("Import a weights file…", QMessageBox.ButtonRole.AcceptRole)
        bundled_btn = box.addButton(f"Use {ARCHITECTURES[BUNDLED_ARCH].label}", QMessageBox.ButtonRole.AcceptRole)
        untrained_btn = box.addButton("Continue untrained", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        self.last_error = ("offline", message)
        self.say("ImageNet weights are not available: choose how to go on")
        clicked = self.exec_dialog(box)
        if clicked is bundled_btn:
            self.arch_box.setCurrentText(BUNDLED_ARCH)
            self.set_weights_choice("imagenet")
            self.reindex_with_selected_model()
        elif clicked is untrained_btn:
            self.set_weights_choice("none")
            self.reindex_with_selected_model()
        elif clicked is file_btn:
            path, _ = QFileDialog.getOpenFileName(self, "Weights file", str(Path.home()),
                                                  "PyTorch weights (*.pt *.pth)")
            if path:
                self.set_weights_choice(path)
                self.reindex_with_selected_model()

    def show_skipped(self) -> None:
        """A list of every file that is not in the index, with the reason; copyable as text."""
        dlg = QDialog(self)
        dlg.setWindowTitle(f"Skipped files ({len(self.skipped)})")
        lines = [f"{p}: {r}" for p, r in self.skipped]
        listing = QListWidget()
        listing.addItems(lines)
        copy = QPushButton("Copy the list")
        copy.clicked.connect(lambda: QApplication.clipboard().setText("\n".join(lines)))
        close = QPushButton("Close")
        close.clicked.connect(dlg.accept)
        note = QLabel("These files were not indexed. Fix or replace them and open the folder again; "
                      "unchanged files are not retried.")
        note.setWordWrap(True)
        lay = QVBoxLayout(dlg)
        lay.addWidget(note)
        lay.addWidget(listing, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(copy)
        row.addWidget(close)
        lay.addLayout(row)
        dlg.resize(760, 420)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.skipped_dialog = dlg

    # -- closing -------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._closing = True  # events still queued from workers must not start new ones
        stop_all()
        for tmp in self._pasted_files:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        self.loader.shutdown()
        if self.index is not None:
            self.index.close()
            self.index = None
        super().closeEvent(event)


def schedule_open(window: MainWindow, folder: str | None) -> None:
    if folder:
        QTimer.singleShot(0, lambda: window.open_folder(folder))
