"""The Duplicates tab: groups that follow a threshold slider live, keepers, and undoable clean-ups.

Neighbours come from the library's Annoy index once (on a worker, down to a floor below the
threshold), so moving the slider only regroups cached pairs on the GUI thread (tens of ms at 10k
photos). Clean-ups run :func:`core.dedup.execute` on a worker: every move is journalled first, the
Undo button replays the journal backwards, and the library is re-indexed afterwards.

Only sure duplicates (exact copies, and members at or above the calibration's sure level) are
pre-selected; the other members are marked "similar — check" and ticked only by hand or with
"Select similar too".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QThreadPool, QTimer
from PySide6.QtGui import QBrush, QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import dedup
from ..core.calibration import Calibration, CalibrationProgress
from ..core.embedder import Embedder
from ..core.library import VariantProgress, VariantVectors
from ..core.units import human_size
from .widgets.calibration_plot import CalibrationPlot
from .widgets.calibration_plot import caption as calibration_caption
from .compare import CompareDialog, ImagePane, _Load, _Signals
from .models import FileRow
from .workers import GeneratorThread

log = logging.getLogger(__name__)

SLIDER_STEPS = 1000
KEEPER_PRESETS = {
    "Highest resolution, then largest file": ("resolution", "size", "oldest", "shortest-path"),
    "Oldest photo (EXIF date, else file time)": ("oldest", "resolution", "size", "shortest-path"),
    "Newest photo (EXIF date, else file time)": ("newest", "resolution", "size", "shortest-path"),
    "Largest file": ("size", "resolution", "oldest", "shortest-path"),
    "Shortest path": ("shortest-path", "resolution", "size", "oldest"),
}
KEEP_COLOUR = QColor(39, 174, 96)
MOVE_COLOUR = QColor(192, 57, 43)
CHECK_COLOUR = QColor(202, 111, 30)  # amber: similar, but maybe another photo of the same subject
CHECK_TEXT = "similar — check"
COLUMNS = ("Move", "Photo", "Similarity", "Resolution", "Size", "Date", "Folder")
UNRELIABLE_TEXT = ("This model cannot tell duplicates apart reliably on your photos — use the pretrained model "
                   "or fine-tune it")
# The same for a model that is pretrained already: fine-tuning is what is left.
UNRELIABLE_PRETRAINED_TEXT = "This model cannot tell duplicates apart reliably on your photos — fine-tune it on them"
NO_CALIBRATION_TEXT = ("There is no duplicate threshold calibrated on these photos for this model yet (the library "
                       "was indexed with an older simviewer, or its calibration was stopped). Bring the library up "
                       "to date to measure it; the search starts from it.")
WARNING_STYLE = "background: #fdecea; color: #922b21; border: 1px solid #e6b0aa; border-radius: 3px; padding: 4px;"


def _calibration_id(cal: Calibration) -> str:
    """Which measurement a remembered slider position belongs to: a new one resets the slider."""
    return repr(cal.created)


def _identity(cal: Calibration | None) -> tuple[str, float] | None:
    return None if cal is None else (cal.fingerprint, cal.created)


def _date(item: dedup.Item) -> str:
    ts = item.taken_at if item.taken_at is not None else item.mtime_ns / 1e9
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


class DuplicatesTab(QWidget):
    """Works on the window's open library and index; the window tells it when they change."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.main = window  # the MainWindow (QWidget.window() is a different thing)
        self.nb: dedup.Neighbours | None = None
        self._nb_for: tuple[object, bool] | None = None  # (the index, invariant) nb was made from
        self.groups: list[dedup.Group] = []
        self.overrides: dict[str, bool] = {}  # member key -> True: move it, False: keep it
        self.ignored: frozenset[tuple[str, str]] = frozenset()
        self.reference: list[Path] = []
        # The library's calibration for its index's model (core.calibration): the threshold starts
        # there, and without one there is no threshold at all (nothing to search with).
        self.calibration: Calibration | None = None
        self.threshold: float | None = None
        self.floor = 0.0  # the slider's lowest value: neighbours are cached down to it
        # False while the calibration is unreliable and the user has neither moved the threshold
        # nor asked for the rules' choice: then nothing is pre-selected for removal.
        self.use_rules = True
        self.finding = False
        self._refind = False
        self.acting = False
        self.last_result: dedup.ActionResult | None = None
        self.find_worker: GeneratorThread | None = None
        self.action_worker: GeneratorThread | None = None
        self._member_row: dict[str, int] = {}
        self._keeper_rows: dict[str, list[int]] = {}
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self.signals = _Signals(self)
        self.signals.loaded.connect(self._preview_loaded)
        self.previews: dict[str, QImage] = {}
        self._regroup_timer = QTimer(self, singleShot=True, interval=30)
        self._regroup_timer.timeout.connect(self.regroup)
        self._build_ui()
        window.loader.ready.connect(self._thumbnail_ready)

    # -- layout --------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.find_button = QPushButton("Find duplicates")
        self.find_button.clicked.connect(self.find)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setMinimumWidth(160)
        self.slider.setToolTip("How alike two photos must be to count as duplicates (cosine similarity)")
        self.slider.valueChanged.connect(self._slider_moved)
        self.threshold_label = QLabel()
        self.threshold_label.setMinimumWidth(70)
        self.invariant_box = QCheckBox("Mirrored and rotated copies")
        self.invariant_box.setToolTip("Also match photos that were flipped or turned by 90/180/270°. "
                                      "The first search embeds three copies of every photo; they are kept.")
        self.invariant_box.setChecked(self.main.settings.value("dedup/invariant", "true") == "true")
        self.invariant_box.toggled.connect(self._invariant_toggled)
        self.exact_box = QCheckBox("Leave out exact copies")
        self.exact_box.setToolTip("Show only edited copies (crops, re-saves, resizes), not byte-identical files")
        self.exact_box.toggled.connect(lambda _on: self.regroup())
        self.keeper_box = QComboBox()
        self.keeper_box.addItems(list(KEEPER_PRESETS))
        self.keeper_box.setToolTip("Which photo of each group is kept; ties fall to the next rule, then the path")
        self.keeper_box.currentIndexChanged.connect(lambda _i: self._rules_changed())
        self.reference_button = QPushButton("Protected folders…")
        self.reference_button.setToolTip("Photos in a protected folder are preferred as keepers and never moved")
        self.reference_button.clicked.connect(self.choose_reference)
        # Two rows, so that the tab fits a window 1024 pixels wide.
        top = QVBoxLayout()
        search_row, options_row = QHBoxLayout(), QHBoxLayout()
        search_row.addWidget(self.find_button)
        search_row.addWidget(QLabel("Similarity ≥"))
        search_row.addWidget(self.slider, 1)
        search_row.addWidget(self.threshold_label)
        options_row.addWidget(self.invariant_box)
        options_row.addWidget(self.exact_box)
        options_row.addStretch(1)
        options_row.addWidget(QLabel("Keep:"))
        options_row.addWidget(self.keeper_box)
        options_row.addWidget(self.reference_button)
        top.addLayout(search_row)
        top.addLayout(options_row)

        self.summary = QLabel("Press “Find duplicates” to look for them in this library.")
        self.summary.setStyleSheet("font-weight: bold;")
        self.summary.setWordWrap(True)
        calibration = self._build_calibration()

        self.group_list = QListWidget()
        self.group_list.setIconSize(QSize(64, 64))
        # Room for the keeper's name beside its thumbnail (a camera's IMG_20240101_123456.jpg).
        name_width = self.group_list.fontMetrics().horizontalAdvance("IMG_20240101_123456.jpg")
        self.group_list.setMinimumWidth(name_width + 110)
        self.group_list.setSpacing(1)
        self.group_list.currentRowChanged.connect(self._group_chosen)
        self.group_list.verticalScrollBar().valueChanged.connect(lambda _v: self._request_visible_icons())

        self.keeper_pane, self.member_pane = ImagePane(), ImagePane()
        self.keeper_caption, self.member_caption = QLabel(), QLabel()
        for caption in (self.keeper_caption, self.member_caption):
            caption.setWordWrap(True)
        panes = QHBoxLayout()
        for pane, caption in ((self.keeper_pane, self.keeper_caption), (self.member_pane, self.member_caption)):
            col = QVBoxLayout()
            col.addWidget(caption)
            col.addWidget(pane, 1)
            panes.addLayout(col, 1)
        compare = QWidget()
        compare.setLayout(panes)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setIconSize(QSize(48, 48))
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(52)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.currentCellChanged.connect(lambda row, *_: self._member_chosen(row))
        self.table.itemChanged.connect(self._check_changed)
        self.table.doubleClicked.connect(lambda idx: self.open_compare(idx.row()))
        self.keep_button = QPushButton("Keep this one instead")
        self.keep_button.clicked.connect(self.keep_current)
        self.not_dup_button = QPushButton("Not duplicates")
        self.not_dup_button.setToolTip("Remember that this photo and the kept one are different photos; "
                                       "they are never grouped again in this library")
        self.not_dup_button.clicked.connect(self.mark_not_duplicates)
        self.compare_button = QPushButton("Compare with heat maps…")
        self.compare_button.clicked.connect(lambda: self.open_compare(self.table.currentRow()))
        member_buttons = QHBoxLayout()
        member_buttons.addWidget(self.keep_button)
        member_buttons.addWidget(self.not_dup_button)
        member_buttons.addWidget(self.compare_button)
        member_buttons.addStretch(1)
        members = QWidget()
        mv = QVBoxLayout(members)
        mv.setContentsMargins(0, 0, 0, 0)
        mv.addWidget(self.table, 1)
        mv.addLayout(member_buttons)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(compare)
        right.addWidget(members)
        right.setSizes([380, 320])
        split = QSplitter()
        split.addWidget(self.group_list)
        split.addWidget(right)
        split.setSizes([300, 980])

        self.rules_button = QPushButton("Select by the rules")
        self.rules_button.setToolTip("Forget manual choices: move the sure duplicates of each group's keeper "
                                     "(exact copies, and photos as alike as a typical edited copy)")
        self.rules_button.clicked.connect(self.select_by_rules)
        self.similar_button = QPushButton("Select similar too")
        self.similar_button.setToolTip("Also tick the photos marked “similar — check”: they may be other shots "
                                       "of the same subject rather than copies, so look at them first")
        self.similar_button.clicked.connect(self.select_similar)
        self.none_button = QPushButton("Select none")
        self.none_button.clicked.connect(self.select_none)
        self.action_box = QComboBox()
        self.action_box.addItem("Move to the trash", "trash")
        self.action_box.addItem("Move to a folder…", "move")
        self.export_button = QPushButton("Export report…")
        self.export_button.clicked.connect(self.export_report)
        self.act_button = QPushButton("Clean up")
        self.act_button.setStyleSheet("font-weight: bold;")
        self.act_button.clicked.connect(self.clean_up)
        self.undo_button = QPushButton("Undo last clean-up")
        self.undo_button.clicked.connect(self.undo_last)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.hide()
        self.status = QLabel("")
        # Progress messages are cut at the window's edge rather than widen the window.
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bottom = QHBoxLayout()
        bottom.addWidget(self.rules_button)
        bottom.addWidget(self.similar_button)
        bottom.addWidget(self.none_button)
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.progress)
        bottom.addWidget(self.stop_button)
        bottom.addWidget(self.export_button)
        bottom.addWidget(self.action_box)
        bottom.addWidget(self.act_button)
        bottom.addWidget(self.undo_button)

        page = QWidget()
        lay = QVBoxLayout(page)
        lay.addLayout(top)
        lay.addWidget(calibration)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        lay.addLayout(bottom)
        self.no_library = QLabel("Open a folder first: duplicates are found in the open library.")
        self.no_library.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_library.setStyleSheet("font-size: 18px; color: palette(mid);")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.no_library)
        self.stack.addWidget(page)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.stack)
        self._show_threshold()
        self._update_buttons()

    def _build_calibration(self) -> QWidget:
        """The calibration strip: its picture, a caption, and what to do where it is missing or weak."""
        self.plot = CalibrationPlot()
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(WARNING_STYLE)
        self.warning.hide()
        self.pretrained_button = QPushButton("Use the pretrained model")
        self.pretrained_button.setToolTip("Re-index this library with the pretrained model (ResNet-50 ImageNet, "
                                          "or the EfficientNet-Lite0 installed with simviewer where that cannot "
                                          "be downloaded)")
        self.pretrained_button.clicked.connect(lambda: self.main.reindex_with_default_model())
        self.finetune_button = QPushButton("Fine-tune…")
        self.finetune_button.setToolTip("Train the model on your own photos (Training tab), then use it")
        self.finetune_button.clicked.connect(lambda: self.main.tabs.setCurrentWidget(self.main.training))
        self.calibrate_button = QPushButton("Calibrate now")
        self.calibrate_button.setToolTip("Bring the library up to date: this measures its duplicate threshold")
        self.calibrate_button.clicked.connect(lambda: self.main.start_indexing())
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        for b in (self.pretrained_button, self.finetune_button, self.calibrate_button):
            b.hide()
            buttons.addWidget(b)
        buttons.addStretch(1)
        side = QVBoxLayout()
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(self.caption)
        side.addWidget(self.warning)
        side.addLayout(buttons)
        side.addStretch(1)
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.plot, 3)
        row.addLayout(side, 2)
        return box

    # -- library and index changes -------------------------------------------------------------
    def library_opened(self) -> None:
        """Another folder: forget everything about the previous one."""
        self.stop()
        self.nb, self._nb_for, self.groups = None, None, []
        self.overrides.clear()
        self.previews.clear()
        self.reference = []
        self.last_result = None
        self.calibration, self.threshold, self.use_rules = None, None, True
        self.plot.empty_text = "Waiting for the library's index…"
        self._show_calibration()
        self._show_threshold()
        self._show_groups()
        self.summary.setText("Press “Find duplicates” to look for them in this library.")
        self.stack.setCurrentIndex(1)
        self._update_buttons()

    def index_changed(self) -> None:
        """A new index was loaded (after indexing or a clean-up): its items, its model or the
        library's calibration may have changed."""
        index, library = self.main.index, self.main.library
        if index is None or library is None:
            return
        fp = index.model_fingerprint
        cal = library.calibration(fp)
        new = _identity(cal) != _identity(self.calibration)
        self.calibration = cal
        if cal is None:  # no threshold to search with: nothing is invented
            self._refind = False
            if self.find_worker is not None:
                self.find_worker.stop()
            self.nb, self._nb_for, self.groups, self.threshold = None, None, [], None
            self._show_groups()
            self.summary.setText("Duplicates are searched from a threshold calibrated on this library.")
        elif new or self.threshold is None:
            t, self.use_rules = self._starting_threshold(fp, cal)
            self._set_threshold(t, min(dedup.threshold_floor(cal.threshold), t))
        self._show_calibration()
        if cal is not None and self._nb_for is not None and self._nb_for[0] is not index and self.isVisible():
            self.find()
        self._update_buttons()

    def _starting_threshold(self, fp: str, cal: Calibration) -> tuple[float, bool]:
        """(threshold, the user's): where the user left the slider for this calibration, else the
        calibrated threshold. A new calibration (measured again) starts from its own value."""
        s = self.main.settings
        saved, saved_for = s.value(f"dedup/threshold/{fp}"), s.value(f"dedup/calibration/{fp}")
        if saved is not None and saved_for == _calibration_id(cal):
            with contextlib.suppress(TypeError, ValueError):  # a damaged setting: the calibrated value
                return float(saved), True
        return cal.threshold, cal.reliable

    def indexing_changed(self) -> None:
        """The window started or ended an indexing run (which may calibrate the library)."""
        self._update_buttons()

    def calibration_progress(self, ev: CalibrationProgress) -> None:
        """The window's indexing run is measuring the threshold: say so where it is missing."""
        if self.calibration is None:
            self.plot.empty_text = f"Calibrating the duplicate threshold on your photos… {ev.done}/{ev.total}"
            self.plot.update()

    def _show_calibration(self) -> None:
        cal = self.calibration
        self.plot.set_calibration(cal, self.threshold)
        model = self.main.index.manifest["model"] if self.main.index is not None else {}
        if cal is None:
            self.caption.setText("")
            if self.main.index is not None:
                self.plot.empty_text = "No calibration yet"
                self.warning.setText(NO_CALIBRATION_TEXT)
            self.warning.setVisible(self.main.index is not None)
            self.calibrate_button.setVisible(self.main.index is not None)
            self.pretrained_button.hide()
            self.finetune_button.hide()
            return
        self.calibrate_button.hide()
        self._show_caption()
        weak = not cal.reliable
        # The pretrained model is offered where the library does not use one already.
        pretrained = model.get("weights") == "imagenet"
        self._show_warning()
        self.warning.setVisible(weak)
        self.pretrained_button.setVisible(weak and not pretrained)
        self.finetune_button.setVisible(weak)

    def _show_warning(self) -> None:
        """The text of an unreliable calibration's warning, which says what is selected and why."""
        if self.calibration is None or self.calibration.reliable:
            return
        model = self.main.index.manifest["model"] if self.main.index is not None else {}
        advice = UNRELIABLE_PRETRAINED_TEXT if model.get("weights") == "imagenet" else UNRELIABLE_TEXT
        then = ("Nothing is selected for removal until you move the threshold or tick photos yourself."
                if not self.use_rules else "Check each group before you clean up.")
        self.warning.setText(f"⚠ {advice}. {then}")

    def _show_caption(self) -> None:
        if self.calibration is not None:
            self.caption.setText(calibration_caption(self.calibration, self.threshold, html=True))

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if self._nb_for is not None and self._nb_for[0] is not self.main.index and not self.finding:
            self.find()  # the library changed while another tab was showing

    # -- finding -------------------------------------------------------------------------------
    def find(self) -> None:
        w = self.main
        if w.index is None or w.library is None or self.calibration is None or self.finding or self.acting:
            return
        if w.indexing:
            self.status.setText("Wait for indexing to finish: the groups would miss the newest photos.")
            return
        index, library = w.index, w.library
        invariant = self.invariant_box.isChecked()
        floor = self.floor
        with library.open_catalog() as cat:
            items = dedup.load_items(cat, index, library.folder)
            self.ignored = frozenset(cat.ignored_pairs())
        model = index.manifest["model"]

        def run(stop):
            variants = None
            if invariant:
                embedder = Embedder.from_manifest(model)
                if embedder.fingerprint != index.model_fingerprint:
                    raise RuntimeError("the index's model cannot be rebuilt here; re-index the folder first")
                for ev in library.variant_vectors(embedder, [(it.hash, it.path) for it in items], should_stop=stop):
                    if isinstance(ev, VariantVectors):
                        variants = ev.vectors
                    else:
                        yield ev
                if stop():
                    return
            yield from dedup.Neighbours.search(index, items, floor=floor, should_stop=stop, variants=variants)

        worker = GeneratorThread(run, "dedup-find", self)
        worker.yielded.connect(lambda ev, i=index, inv=invariant: self._found(ev, i, inv))
        worker.failed.connect(lambda exc: self.main.show_error("Cannot look for duplicates", str(exc)))
        worker.done.connect(self._find_done)
        self.find_worker = worker
        self.finding = True
        self.progress.setRange(0, 0)
        self.progress.show()
        self.stop_button.show()
        self.status.setText("Mirrored and rotated copies…" if invariant
                            else "Comparing every photo with its neighbours…")
        self._update_buttons()
        worker.start()

    def _found(self, ev, index, invariant: bool) -> None:
        if isinstance(ev, VariantProgress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.status.setText(f"Mirrored and rotated copies: {ev.done:,} of {ev.total:,} photos")
            return
        if isinstance(ev, dedup.NeighbourProgress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.status.setText(f"Comparing every photo with its neighbours: {ev.done:,} of {ev.total:,}")
            return
        if index is not self.main.index:
            self._refind = True  # a new index arrived meanwhile: look again in it when this ends
            return
        self.nb = ev
        self._nb_for = (index, invariant)
        self.regroup()

    def _find_done(self, completed: bool) -> None:
        self.finding = False
        if self._refind:
            self._refind = False
            self.find()
            return
        self.progress.hide()
        self.stop_button.hide()
        if not completed and self.nb is None:
            self.status.setText("Stopped.")
        elif completed:
            self.status.setText("")
        self._update_buttons()

    def stop(self) -> None:
        self._refind = False
        for worker in (self.find_worker, self.action_worker):
            if worker is not None:
                worker.stop()

    # -- threshold and options -----------------------------------------------------------------
    def _set_threshold(self, threshold: float, floor: float) -> None:
        self.floor = floor
        self.threshold = threshold
        self.slider.blockSignals(True)
        self.slider.setValue(round((threshold - floor) / (1.0 - floor) * SLIDER_STEPS))
        self.slider.blockSignals(False)
        self._show_threshold()

    def _show_threshold(self) -> None:
        if self.threshold is None:
            self.threshold_label.setText("—")
            return
        digits = 2 if self.floor < 0.9 else 3 if self.floor < 0.99 else 4
        self.threshold_label.setText(f"{self.threshold * 100:.{digits}f} %")
        self.plot.set_value(self.threshold)
        self._show_caption()

    def _slider_moved(self, value: int) -> None:
        if self.calibration is None:
            return
        self.threshold = self.floor + (1.0 - self.floor) * value / SLIDER_STEPS
        self.use_rules = True  # the user decides now: the rules' choice is shown as for a reliable one
        self._show_threshold()
        self._show_warning()
        if self.main.index is not None:
            fp = self.main.index.model_fingerprint
            self.main.settings.setValue(f"dedup/threshold/{fp}", self.threshold)
            self.main.settings.setValue(f"dedup/calibration/{fp}", _calibration_id(self.calibration))
        self._regroup_timer.start()

    def set_threshold(self, threshold: float) -> None:
        """Move the slider to *threshold* (within its range) and regroup at once."""
        self.slider.setValue(round((threshold - self.floor) / (1.0 - self.floor) * SLIDER_STEPS))
        self._regroup_timer.stop()
        self.regroup()

    def _invariant_toggled(self, on: bool) -> None:
        self.main.settings.setValue("dedup/invariant", "true" if on else "false")
        if self.nb is not None:
            self.find()

    def _rules_changed(self) -> None:
        self.overrides.clear()
        self.regroup()

    def rules(self) -> tuple[str, ...]:
        return KEEPER_PRESETS[self.keeper_box.currentText()]

    def choose_reference(self) -> None:
        start = str(self.main.library.folder) if self.main.library else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Protect a folder: its photos are never moved", start)
        if folder:
            self.add_reference(Path(folder))

    def add_reference(self, folder: Path) -> None:
        self.reference.append(folder.resolve())
        names = ", ".join(p.name for p in self.reference)
        self.reference_button.setText(f"Protected: {names}")
        self.regroup()

    def options(self) -> dedup.GroupingOptions:
        return dedup.GroupingOptions(
            threshold=max(self.threshold, self.nb.floor if self.nb is not None else 0.0),
            max_score=0.999999 if self.exact_box.isChecked() else None,
            rules=self.rules(), reference=tuple(self.reference), ignored=self.ignored,
        )

    def regroup(self) -> None:
        if self.nb is None:
            return
        current = self.current_group()
        self.groups = dedup.group(self.nb, self.options())
        self._show_groups(keep=current.keeper.key if current else None)

    # -- selection -----------------------------------------------------------------------------
    def sure_level(self) -> float | None:
        """The calibration's sure level (``Calibration.sure_level``): members below it are only
        similar, to be checked, and never pre-selected."""
        return self.calibration.sure_level if self.calibration is not None else None

    def _chosen(self, g: dedup.Group) -> tuple[set[str], set[str]]:
        """(what is ticked, what the rules pre-select): the sure duplicates outside protected folders."""
        level = self.sure_level()
        default = {m.item.key for m in g.members[1:] if not dedup.in_folders(m.item.path, self.reference)
                   and dedup.is_sure(m, level)} if self.use_rules else set()
        chosen = {m.item.key for m in g.members
                  if self.overrides.get(m.item.key, m.item.key in default)
                  and not dedup.in_folders(m.item.path, self.reference)}
        return chosen, default

    def selection(self, g: dedup.Group) -> set[str]:
        """Keys of the members of *g* that the clean-up would move: the rules' choice with the
        user's ticks on top, never the whole group (then the rules' choice stands)."""
        chosen, default = self._chosen(g)
        return chosen if len(chosen) < len(g.members) else default

    def selected(self) -> dict[str, set[str]]:
        return {g.keeper.key: self.selection(g) for g in self.groups}

    def planned(self) -> tuple[int, int]:
        """(photos, bytes) the clean-up would move."""
        files = size = 0
        for g in self.groups:
            chosen = self.selection(g)
            files += len(chosen)
            size += sum(m.item.size for m in g.members if m.item.key in chosen)
        return files, size

    def select_by_rules(self) -> None:
        self.use_rules = True
        self._show_warning()
        self.overrides.clear()
        self._show_groups(keep=self.current_group().keeper.key if self.current_group() else None)

    def select_similar(self) -> None:
        """Tick the members marked "similar — check" as well (the sure ones keep their ticks)."""
        level = self.sure_level()
        for g in self.groups:
            for m in g.to_check(level):
                if dedup.in_folders(m.item.path, self.reference):
                    continue
                self.overrides[m.item.key] = True
                if len(self._chosen(g)[0]) >= len(g.members):  # never the whole group
                    self.overrides[m.item.key] = False
        self._show_groups(keep=self.current_group().keeper.key if self.current_group() else None)

    def select_none(self) -> None:
        for g in self.groups:
            for m in g.members:
                self.overrides[m.item.key] = False
        self._show_groups(keep=self.current_group().keeper.key if self.current_group() else None)

    def keep_current(self) -> None:
        """Manual override: keep the chosen member of this group and move the others."""
        g, m = self.current_group(), self.current_member()
        if g is None or m is None:
            return
        for other in g.members:
            self.overrides[other.item.key] = other.item.key != m.item.key
        self._fill_members(g, select=m.item.key)
        self._refresh_summary()

    def mark_not_duplicates(self) -> None:
        """Remember the chosen member and its keeper as different photos, then regroup."""
        g, m = self.current_group(), self.current_member()
        if g is None or m is None or m.item.key == g.keeper.key or self.main.library is None:
            return
        with self.main.library.open_catalog() as cat:
            cat.ignore_pair(g.keeper.hash, m.item.hash)
            self.ignored = frozenset(cat.ignored_pairs())
        self.status.setText(f"{m.item.path.name} and {g.keeper.path.name} will not be grouped again.")
        self.regroup()

    # -- display -------------------------------------------------------------------------------
    def current_group(self) -> dedup.Group | None:
        row = self.group_list.currentRow()
        return self.groups[row] if 0 <= row < len(self.groups) else None

    def current_member(self) -> dedup.Member | None:
        g = self.current_group()
        row = self.table.currentRow()
        return g.members[row] if g is not None and 0 <= row < len(g.members) else None

    def _group_text(self, g: dedup.Group) -> str:
        kind = "exact copies" if g.exact else f"≥ {min(m.score for m in g.members) * 100:.2f} %"
        chosen = self.selection(g)
        size = sum(m.item.size for m in g.members if m.item.key in chosen)
        check = len(g.to_check(self.sure_level()))
        return (f"{len(g.members)} photos · {kind}\n{g.keeper.path.name}\n{len(chosen)} to move · {human_size(size)}"
                + (f" · {check} check" if check else ""))

    def _show_groups(self, keep: str | None = None) -> None:
        self.group_list.blockSignals(True)
        self.group_list.clear()
        self._keeper_rows: dict[str, list[int]] = {}
        for n, g in enumerate(self.groups):
            self._keeper_rows.setdefault(str(g.keeper.path), []).append(n)
        row = 0
        for n, g in enumerate(self.groups):
            item = QListWidgetItem(self._group_text(g))
            pm = self.main.cache.get(str(g.keeper.path))
            if pm is not None:
                item.setIcon(QIcon(pm))
            elif n < 100:  # the rest are asked for as they scroll into view
                self.main.loader.request(str(g.keeper.path))
            self.group_list.addItem(item)
            if g.keeper.key == keep:
                row = n
        self.group_list.blockSignals(False)
        if self.groups:
            self.group_list.setCurrentRow(row)
            self._group_chosen(row)
        else:
            self.table.setRowCount(0)
            self.keeper_pane.item.setPixmap(QPixmap())
            self.member_pane.item.setPixmap(QPixmap())
            self.keeper_caption.setText("")
            self.member_caption.setText("")
        self._refresh_summary()

    def _refresh_summary(self) -> None:
        if self.nb is None:
            return
        files, size = self.planned()
        untrained = " (untrained model)" if self.main.index and \
            self.main.index.manifest["model"].get("untrained") else ""
        level = self.sure_level()
        sure = similar = ticked = 0
        for g in self.groups:
            chosen = self.selection(g)
            for m in g.members[1:]:
                if dedup.is_sure(m, level):
                    sure += m.item.key in chosen
                else:
                    similar += 1
                    ticked += m.item.key in chosen
        self.summary.setText(
            f"{len(self.groups)} groups at ≥ {self.threshold * 100:.{2 if self.floor < 0.9 else 4}f} % similarity"
            f"{untrained}: {sum(len(g.members) - 1 for g in self.groups)} duplicates, "
            f"{human_size(sum(g.reclaimable for g in self.groups))} to reclaim; "
            f"{sure} sure duplicates selected, {similar} similar to check"
            + (f" ({ticked} ticked)" if ticked else "") + f"; {files} selected ({human_size(size)})"
        )
        for n, g in enumerate(self.groups):
            item = self.group_list.item(n)
            if item is not None:
                item.setText(self._group_text(g))
        self._update_buttons()

    def _group_chosen(self, row: int) -> None:
        g = self.current_group()
        if g is None:
            return
        self._fill_members(g, select=g.members[1].item.key if len(g.members) > 1 else None)

    def _fill_members(self, g: dedup.Group, select: str | None) -> None:
        moving = self.selection(g)
        level = self.sure_level()
        self.table.blockSignals(True)
        self.table.setRowCount(len(g.members))
        self._member_row = {}
        select_row = 0
        for r, m in enumerate(g.members):
            it = m.item
            self._member_row[str(it.path)] = r
            protected = dedup.in_folders(it.path, self.reference)
            check = QTableWidgetItem("protected" if protected else "")
            if protected:
                check.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            else:
                check.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                               | Qt.ItemFlag.ItemIsUserCheckable)
                check.setCheckState(Qt.CheckState.Checked if it.key in moving else Qt.CheckState.Unchecked)
            # One keeper per group; the other photos that stay are just not moved (no second star).
            kept_by_rule = it.key not in moving and m is next(x for x in g.members if x.item.key not in moving)
            name = QTableWidgetItem(("★ keep  " if kept_by_rule else "") + it.path.name)
            if it.key in moving or kept_by_rule:
                name.setForeground(QBrush(MOVE_COLOUR if it.key in moving else KEEP_COLOUR))
            pm = self.main.cache.get(str(it.path))
            if pm is not None:
                name.setIcon(QIcon(pm))
            else:
                self.main.loader.request(str(it.path))
            similar = r > 0 and not dedup.is_sure(m, level)
            if r == 0:
                score = "keeper"
            else:
                score = "exact copy" if m.exact else f"{m.score * 100:.2f} %"
                if m.via:
                    score += f" ({m.via})"
                if similar:
                    score += " · check"  # short: the column must leave the name room at 1024 px
            similarity = QTableWidgetItem(score)
            if similar:
                similarity.setForeground(QBrush(CHECK_COLOUR))
                similarity.setToolTip("Above the threshold, but less alike than a typical edited copy of your "
                                      "photos: it may be another shot of the same subject. Not selected "
                                      "unless you tick it.")
            cells = [check, name, similarity,
                     QTableWidgetItem(f"{it.width}×{it.height}" if it.width else "?"),
                     QTableWidgetItem(human_size(it.size)), QTableWidgetItem(_date(it)),
                     QTableWidgetItem(self._folder_of(it.path))]
            for c, cell in enumerate(cells):
                if c > 0:
                    cell.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                self.table.setItem(r, c, cell)
            if it.key == select:
                select_row = r
        self.table.blockSignals(False)
        self.table.setCurrentCell(select_row, 1)
        self._member_chosen(select_row)

    def _folder_of(self, path: Path) -> str:
        root = self.main.library.folder if self.main.library else None
        if root is not None and path.is_relative_to(root):
            rel = path.parent.relative_to(root).as_posix()
            return "(top folder)" if rel == "." else rel
        return str(path.parent)

    def _check_changed(self, cell: QTableWidgetItem) -> None:
        if cell.column() != 0:
            return
        g = self.current_group()
        if g is None or not 0 <= cell.row() < len(g.members):
            return
        key = g.members[cell.row()].item.key
        want = cell.checkState() == Qt.CheckState.Checked
        self.overrides[key] = want
        if want and len(self._chosen(g)[0]) >= len(g.members):
            self.overrides[key] = False
            self.status.setText("At least one photo of each group is kept.")
        self._fill_members(g, select=key)
        self._refresh_summary()

    def _member_chosen(self, row: int) -> None:
        g = self.current_group()
        if g is None or not 0 <= row < len(g.members):
            return
        moving = self.selection(g)
        keeper = next((m for m in g.members if m.item.key not in moving), g.members[0])
        other = g.members[row] if g.members[row] is not keeper else next(
            (m for m in g.members if m is not keeper), keeper)
        self._caption(self.keeper_caption, keeper, moving, g, keeper)
        self._caption(self.member_caption, other, moving, g, keeper)
        self._preview(self.keeper_pane, str(keeper.item.path))
        self._preview(self.member_pane, str(other.item.path))

    def _caption(self, label: QLabel, m: dedup.Member, moving: set[str], g: dedup.Group,
                 keeper: dedup.Member) -> None:
        it = m.item
        fate = "will be moved" if it.key in moving else "★ KEEP" if m is keeper else "stays (not ticked)"
        colour = MOVE_COLOUR if it.key in moving else KEEP_COLOUR if m is keeper else self.palette().text().color()
        score = "" if m is g.members[0] else (" · exact copy" if m.exact else f" · {m.score * 100:.2f} %"
                                              + (f" ({m.via})" if m.via else ""))
        if m is not g.members[0] and not dedup.is_sure(m, self.sure_level()):
            score += f" · <span style='color:{CHECK_COLOUR.name()}'>{CHECK_TEXT}</span>"
        res = f"{it.width}×{it.height}, " if it.width else ""
        label.setText(f"<b style='color:{colour.name()}'>{fate}</b> &nbsp; {it.path.name} — "
                      f"{res}{human_size(it.size)}, {_date(it)}{score}")

    def _preview(self, pane: ImagePane, path: str) -> None:
        pane.setProperty("path", path)
        if path in self.previews:
            pane.set_image(self.previews[path])
        else:
            pane.item.setPixmap(QPixmap())
            self.pool.start(_Load(path, self.signals))

    def _preview_loaded(self, path: str, image: QImage, _photo, error: str) -> None:
        if image.isNull():
            log.info("no preview of %s: %s", path, error)
            return
        if len(self.previews) > 16:
            self.previews.pop(next(iter(self.previews)))
        self.previews[path] = image
        for pane in (self.keeper_pane, self.member_pane):
            if pane.property("path") == path:
                pane.set_image(image)

    def _request_visible_icons(self) -> None:
        view = self.group_list
        top = view.indexAt(view.viewport().rect().topLeft()).row()
        bottom = view.indexAt(view.viewport().rect().bottomLeft()).row()
        if top < 0:
            return
        bottom = len(self.groups) - 1 if bottom < 0 else bottom
        for n in range(top, min(bottom + 10, len(self.groups))):
            if self.main.cache.get(str(self.groups[n].keeper.path)) is None:
                self.main.loader.request(str(self.groups[n].keeper.path))

    def _thumbnail_ready(self, path: str, _image) -> None:
        pm = self.main.cache.get(path)
        if pm is None:
            return
        row = self._member_row.get(path)
        if row is not None and self.table.item(row, 1) is not None:
            self.table.item(row, 1).setIcon(QIcon(pm))
        for n in self._keeper_rows.get(path, ()):
            if self.group_list.item(n) is not None:
                self.group_list.item(n).setIcon(QIcon(pm))

    def open_compare(self, row: int) -> CompareDialog | None:
        """The keeper and every other member, in the compare view with heat maps."""
        g = self.current_group()
        if g is None or len(g.members) < 2:
            return None
        rows = [FileRow(m.item.path, m.item.size, m.item.mtime_ns, m.item.width, m.item.height, m.score)
                for m in g.members[1:]]
        dlg = CompareDialog(g.keeper.path, rows, max(0, row - 1), self.main,
                            untrained=bool(self.main.index and self.main.index.manifest["model"].get("untrained")),
                            explain=self.main.explain, overlays=True, query_role="keeper", match_role="duplicate")
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.compare_dialog = dlg
        return dlg

    # -- actions -------------------------------------------------------------------------------
    def export_report(self) -> None:
        if not self.groups:
            return
        path, _chosen = QFileDialog.getSaveFileName(self, "Export the duplicate report",
                                                    str(Path.home() / "duplicates.csv"), "CSV (*.csv);;JSON (*.json)")
        if path:
            self.write_report(Path(path))

    def write_report(self, path: Path) -> None:
        if path.suffix.lower() == ".json":
            dedup.write_json(self.groups, self.threshold, path, self.sure_level())
        else:
            dedup.write_csv(self.groups, path, self.sure_level())
        self.status.setText(f"Report written to {path}")

    def clean_up(self, move_to: Path | None = None) -> None:
        w = self.main
        if w.library is None or not self.groups or self.acting:
            return
        mode = self.action_box.currentData()
        try:
            plan = dedup.plan_removals(self.groups, selected=self.selected(), reference=self.reference)
        except dedup.DedupError as exc:
            w.show_error("Nothing was moved", str(exc))
            return
        if not plan:
            self.status.setText("No photo is selected to move.")
            return
        if mode == "move" and move_to is None:
            folder = QFileDialog.getExistingDirectory(self, "Move the duplicates into this folder", str(Path.home()))
            if not folder:
                return
            move_to = Path(folder)
        size = sum(p.item.size for p in plan)
        groups = len({p.group_keeper.key for p in plan})
        where = "the system trash" if mode == "trash" else str(move_to)
        box = QMessageBox(QMessageBox.Icon.Question, "Clean up duplicates",
                          f"Move {len(plan)} photos ({human_size(size)}) to {where}?", parent=self)
        box.setInformativeText(
            f"They come from {groups} groups; at least one photo of every group stays where it is"
            + (", and nothing in the protected folders is touched" if self.reference else "") + ".\n\n"
            + ("Folders are kept: each photo goes to the same relative path under the destination.\n\n"
               if mode == "move" else "")
            + "Every move is recorded first, so “Undo last clean-up” puts them all back "
              f"(or: simviewer dedup \"{w.library.folder}\" --undo). Files changed since indexing are left alone.")
        box.setDetailedText("\n".join(str(p.item.path) for p in plan))
        go = box.addButton(f"Move {len(plan)} photos", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        self.confirm_box = box
        if w.exec_dialog(box) is not go:
            self.status.setText("Nothing was moved.")
            return
        library = w.library
        self._run_action(lambda stop: dedup.execute(plan, mode, library.journal_dir, library.folder, move_to,
                                                    should_stop=stop), "Moving", f"moved to {where}")

    def undo_last(self) -> None:
        w = self.main
        if w.library is None or self.acting:
            return
        journal = self.undoable_journal()
        if journal is None:
            self.status.setText("There is no clean-up to undo.")
            return
        self._run_action(lambda stop: dedup.undo(journal), "Putting back", "put back")

    def undoable_journal(self) -> Path | None:
        w = self.main
        if w.library is None:
            return None
        journal = dedup.latest_journal(w.library.journal_dir)
        if journal is None:
            return None
        try:
            pending = [e for e in dedup.Journal(journal).entries() if e["done"] and not e.get("undone")]
        except (OSError, ValueError):
            return None
        return journal if pending else None

    def _run_action(self, make, verb: str, past: str) -> None:
        if self.main.indexing and self.main.index_worker is not None:
            self.main.index_worker.stop()
        worker = GeneratorThread(make, "dedup-action", self)
        worker.yielded.connect(lambda ev: self._action_event(ev, verb, past))
        worker.failed.connect(lambda exc: self.main.show_error("The clean-up stopped", f"{exc}\n\n"
                                                                 "What was moved is in the undo journal."))
        worker.done.connect(self._action_done)
        self.action_worker = worker
        self.acting = True
        self.progress.setRange(0, 0)
        self.progress.show()
        self._update_buttons()
        worker.start()

    def _action_event(self, ev, verb: str, past: str) -> None:
        if isinstance(ev, dedup.ActionProgress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.status.setText(f"{verb} {ev.done} of {ev.total}: {Path(ev.path).name}")
        elif isinstance(ev, dedup.ActionResult):
            self.last_result = ev
            text = f"{len(ev.moved)} photos {past} ({human_size(ev.bytes_moved)})."
            if ev.skipped:
                text += f" {len(ev.skipped)} left alone."
                self.main.show_error(f"{len(ev.skipped)} photos were left alone",
                                       "\n".join(f"{Path(p).name}: {why}" for p, why in ev.skipped[:20]))
            self.status.setText(text)

    def _action_done(self, _completed: bool) -> None:
        self.acting = False
        self.progress.hide()
        self.overrides.clear()
        self._update_buttons()
        self.main.start_indexing()  # the index and catalog follow the moves; index_changed regroups

    def _update_buttons(self) -> None:
        busy = self.finding or self.acting
        has_library = self.main.library is not None
        calibrated = self.calibration is not None
        self.find_button.setEnabled(has_library and self.main.index is not None and calibrated and not busy)
        self.find_button.setToolTip("" if calibrated or self.main.index is None else
                                    "There is no calibrated threshold for this library's model yet")
        self.slider.setEnabled(calibrated)
        self.calibrate_button.setEnabled(not self.main.indexing)
        have = bool(self.groups) and not busy
        files, size = self.planned() if self.groups else (0, 0)
        self.act_button.setText(f"Clean up {files} photos ({human_size(size)})…" if files else "Clean up")
        for b in (self.act_button, self.rules_button, self.none_button, self.export_button, self.keep_button,
                  self.not_dup_button, self.compare_button):
            b.setEnabled(have)
        level = self.sure_level() if self.groups else None
        self.similar_button.setEnabled(have and any(g.to_check(level) for g in self.groups))
        self.act_button.setEnabled(have and files > 0)
        self.undo_button.setEnabled(has_library and not busy and self.undoable_journal() is not None)
