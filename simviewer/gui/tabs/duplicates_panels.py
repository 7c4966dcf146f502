"""The parts the Duplicates tab is built from: the search bar, the calibration strip, the group
browser (groups, members, the keeper beside one member) and the clean-up bar.

Each part only lays out its widgets and says what the user asked for; the tab decides.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QAction, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..duplicates_models import PHOTO, GroupsModel, MembersModel
from ..widgets.calibration_plot import CalibrationPlot
from ..widgets.calibration_plot import caption as calibration_caption
from ..widgets.compare_view import ImageLoad, ImagePane, LoadSignals

log = logging.getLogger(__name__)

SLIDER_STEPS = 1000
RULE_NAMES = {  # the rules of core.dedup.rule_key the window offers, as the user reads them
    "resolution": "The most pixels",
    "size": "The largest file",
    "oldest": "The oldest (EXIF date, else file time)",
    "newest": "The newest (EXIF date, else file time)",
    "shortest-path": "The shortest path",
    "raw": "The RAW file of a camera's RAW+JPEG pair",
    "jpeg": "The JPEG of a camera's RAW+JPEG pair",
}
UNRELIABLE_TEXT = ("This model cannot tell duplicates apart reliably on your photos — use the pretrained model "
                   "or fine-tune it")
# The same for a model that is pretrained already: fine-tuning is what is left.
UNRELIABLE_PRETRAINED_TEXT = "This model cannot tell duplicates apart reliably on your photos — fine-tune it on them"
NO_CALIBRATION_TEXT = ("There is no duplicate threshold calibrated on these photos for this model yet (the library "
                       "was indexed with an older simviewer, or its calibration was stopped). Bring the library up "
                       "to date to measure it; the search starts from it.")
WARNING_STYLE = "background: #fdecea; color: #922b21; border: 1px solid #e6b0aa; border-radius: 3px; padding: 4px;"


def _row(*widgets, stretch_after: int | None = None, margins: bool = True) -> QHBoxLayout:
    row = QHBoxLayout()
    if not margins:
        row.setContentsMargins(0, 0, 0, 0)
    for n, w in enumerate(widgets):
        if isinstance(w, tuple):
            row.addWidget(*w)
        else:
            row.addWidget(w)
        if n == stretch_after:
            row.addStretch(1)
    return row


class SearchBar(QWidget):
    """Find, the threshold slider, and what to match and keep; two rows so it fits 1024 px."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.find_button = QPushButton("Find duplicates")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setMinimumWidth(160)
        self.slider.setToolTip("How alike two photos must be to count as duplicates (cosine similarity)")
        self.threshold_label = QLabel("—")
        # Room for the longest value it shows ("100.0000 %"), so the label is never cut.
        self.threshold_label.setMinimumWidth(self.threshold_label.fontMetrics().horizontalAdvance("100.0000 %") + 8)
        self.invariant_box = QCheckBox("Mirrored/rotated")
        self.invariant_box.setToolTip("Also match photos that were mirrored or turned by 90/180/270°. "
                                      "The first search embeds three copies of every photo; they are kept.")
        self.exact_box = QCheckBox("No exact copies")
        self.exact_box.setToolTip("Leave out byte-identical files: show only edited copies (crops, re-saves, resizes)")
        self.keeper_box = QComboBox()
        self.keeper_box.setToolTip("Which photo of each group is kept; ties fall to the next rule, then the path")
        self.rules_button = QPushButton("Order…")
        self.rules_button.setToolTip("Choose the keeper rules and their order")
        self.reference_button = QPushButton("Protected folders")
        self.reference_button.setToolTip("Photos in a protected folder are preferred as keepers and never moved")
        self.reference_menu = QMenu(self.reference_button)
        self.reference_button.setMenu(self.reference_menu)
        top = QVBoxLayout(self)
        top.setContentsMargins(0, 0, 0, 0)
        top.addLayout(_row(self.find_button, QLabel("Similarity ≥"), (self.slider, 1), self.threshold_label,
                           margins=False))
        top.addLayout(_row(self.invariant_box, self.exact_box, QLabel("Keep:"), self.keeper_box, self.rules_button,
                           self.reference_button, stretch_after=1, margins=False))

    def set_threshold(self, threshold: float | None, floor: float) -> None:
        """Put the slider and its label at *threshold* (on a scale from *floor* to 1) without signals."""
        if threshold is None:
            self.threshold_label.setText("—")
            return
        self.slider.blockSignals(True)
        self.slider.setValue(self.position(threshold, floor))
        self.slider.blockSignals(False)
        self.show_value(threshold, floor)

    def show_value(self, threshold: float, floor: float) -> None:
        digits = 2 if floor < 0.9 else 3 if floor < 0.99 else 4
        self.threshold_label.setText(f"{threshold * 100:.{digits}f} %")

    @staticmethod
    def position(threshold: float, floor: float) -> int:
        return round((threshold - floor) / (1.0 - floor) * SLIDER_STEPS)

    @staticmethod
    def threshold_at(value: int, floor: float) -> float:
        return floor + (1.0 - floor) * value / SLIDER_STEPS

    def show_reference(self, folders: list[Path], add, remove) -> None:
        """The protected folders' menu: add one, or stop protecting each of *folders*."""
        menu = self.reference_menu
        menu.clear()
        menu.addAction("Protect a folder…", add)
        if folders:
            menu.addSeparator()
        for folder in folders:
            menu.addAction(f"Stop protecting {folder}", lambda f=folder: remove(f))
        names = ", ".join(p.name for p in folders)
        self.reference_button.setText(f"Protected: {names}" if folders else "Protected folders")
        self.reference_button.setToolTip("\n".join(str(f) for f in folders) or
                                         "Photos in a protected folder are preferred as keepers and never moved")


class CalibrationStrip(QWidget):
    """The calibration's picture and caption, and what to do where it is missing or weak."""

    pretrained_wanted = Signal()
    finetune_wanted = Signal()
    calibrate_wanted = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
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
        self.pretrained_button.clicked.connect(self.pretrained_wanted)
        self.finetune_button = QPushButton("Fine-tune…")
        self.finetune_button.setToolTip("Train the model on your own photos (Training tab), then use it")
        self.finetune_button.clicked.connect(self.finetune_wanted)
        self.calibrate_button = QPushButton("Calibrate now")
        self.calibrate_button.setToolTip("Bring the library up to date: this measures its duplicate threshold")
        self.calibrate_button.clicked.connect(self.calibrate_wanted)
        for b in (self.pretrained_button, self.finetune_button, self.calibrate_button):
            b.hide()
        side = QVBoxLayout()
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(self.caption)
        side.addWidget(self.warning)
        side.addLayout(_row(self.pretrained_button, self.finetune_button, self.calibrate_button, stretch_after=2,
                            margins=False))
        side.addStretch(1)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.plot, 3)
        row.addLayout(side, 2)

    def show_calibration(self, cal, threshold: float | None, has_index: bool, pretrained: bool,
                         use_rules: bool) -> None:
        """*cal*: the library's calibration for its model (None: not measured); *pretrained*:
        the model is pretrained already, so only fine-tuning is offered."""
        self.plot.set_calibration(cal, threshold)
        if cal is None:
            self.caption.setText("")
            if has_index:
                self.plot.empty_text = "No calibration yet"
                self.warning.setText(NO_CALIBRATION_TEXT)
            self.warning.setVisible(has_index)
            self.calibrate_button.setVisible(has_index)
            self.pretrained_button.hide()
            self.finetune_button.hide()
            return
        self.calibrate_button.hide()
        self.show_threshold(cal, threshold)
        weak = not cal.reliable
        self.show_warning(cal, pretrained, use_rules)
        self.warning.setVisible(weak)
        self.pretrained_button.setVisible(weak and not pretrained)
        self.finetune_button.setVisible(weak)

    def show_threshold(self, cal, threshold: float | None) -> None:
        if threshold is not None:
            self.plot.set_value(threshold)
        if cal is not None:
            self.caption.setText(calibration_caption(cal, threshold, html=True))

    def show_warning(self, cal, pretrained: bool, use_rules: bool) -> None:
        """The text of an unreliable calibration's warning, which says what is selected and why."""
        if cal is None or cal.reliable:
            return
        advice = UNRELIABLE_PRETRAINED_TEXT if pretrained else UNRELIABLE_TEXT
        then = ("Nothing is selected for removal until you move the threshold or tick photos yourself."
                if not use_rules else "Check each group before you clean up.")
        self.warning.setText(f"⚠ {advice}. {then}")

    def waiting(self, text: str) -> None:
        self.plot.empty_text = text
        self.plot.update()


class GroupBrowser(QSplitter):
    """The groups on the left; the keeper beside one member, and the group's members, on the right."""

    def __init__(self, groups: GroupsModel, members: MembersModel, panes: QWidget, parent=None) -> None:
        super().__init__(parent)
        self.group_list = QListView()
        self.group_list.setModel(groups)
        self.group_list.setIconSize(QSize(64, 64))
        self.group_list.setUniformItemSizes(True)
        self.group_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        # Room for the keeper's name beside its thumbnail (a camera's IMG_20240101_123456.jpg).
        name_width = self.group_list.fontMetrics().horizontalAdvance("IMG_20240101_123456.jpg · folder")
        self.group_list.setMinimumWidth(name_width + 90)
        self.group_list.setSpacing(1)
        self.table = QTableView()
        self.table.setModel(members)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setIconSize(QSize(48, 48))
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(52)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(PHOTO, QHeaderView.ResizeMode.Stretch)
        self.keep_button = QPushButton("Keep this one instead")
        self.not_dup_button = QPushButton("Not duplicates")
        self.not_dup_button.setToolTip("Remember that this photo and the kept one are different photos; "
                                       "they are never grouped again in this library")
        self.compare_button = QPushButton("Compare with heat maps…")
        members_page = QWidget()
        mv = QVBoxLayout(members_page)
        mv.setContentsMargins(0, 0, 0, 0)
        mv.addWidget(self.table, 1)
        mv.addLayout(_row(self.keep_button, self.not_dup_button, self.compare_button, stretch_after=2,
                          margins=False))
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(panes)
        right.addWidget(members_page)
        right.setSizes([330, 370])
        self.addWidget(self.group_list)
        self.addWidget(right)
        self.setSizes([300, 980])

    def current_row(self) -> int:
        idx = self.group_list.currentIndex()
        return idx.row() if idx.isValid() else -1

    def member_row(self) -> int:
        idx = self.table.currentIndex()
        return idx.row() if idx.isValid() else -1


class CleanupBar(QWidget):
    """What to select, progress, and the clean-up itself."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.select_button = QPushButton("Select")
        menu = QMenu(self.select_button)
        self.rules_action = QAction("By the rules (sure duplicates)", self)
        self.rules_action.setToolTip("Forget manual choices: move the sure duplicates of each group's keeper "
                                     "(exact copies, and photos as alike as a typical edited copy)")
        self.similar_action = QAction("Similar ones too", self)
        self.similar_action.setToolTip("Also tick the photos marked “similar — check”: they may be other shots "
                                       "of the same subject rather than copies, so look at them first")
        self.invert_action = QAction("Invert", self)
        self.none_action = QAction("None", self)
        for action in (self.rules_action, self.similar_action, self.invert_action, self.none_action):
            menu.addAction(action)
        menu.addSeparator()
        # A camera's RAW and JPEG of one shot are never ticked against each other; these keep one kind.
        self.keep_raw_action = QAction("Keep the RAW of each pair", self)
        self.keep_jpeg_action = QAction("Keep the JPEG of each pair", self)
        for action, kind, other in ((self.keep_raw_action, "RAW", "JPEG"), (self.keep_jpeg_action, "JPEG", "RAW")):
            action.setToolTip(f"In the RAW+JPEG pairs, tick the {other} of every shot so that only its {kind} stays")
            menu.addAction(action)
        self.select_button.setMenu(menu)
        self.action_box = QComboBox()  # the clean-up's modes (duplicates_actions.MODES)
        self.export_button = QPushButton("Export report…")
        self.act_button = QPushButton("Clean up")
        self.act_button.setStyleSheet("font-weight: bold;")
        self.undo_button = QPushButton("Undo last clean-up")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        self.stop_button = QPushButton("Stop")
        self.stop_button.hide()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # Progress messages wrap or are cut at the window's edge rather than widen the window.
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bottom = QHBoxLayout(self)
        bottom.setContentsMargins(0, 0, 0, 0)
        for w in (self.select_button, self.status, self.progress, self.stop_button, self.export_button,
                  self.action_box, self.act_button, self.undo_button):
            bottom.addWidget(w, 1 if w is self.status else 0)


class ComparePanes(QWidget):
    """The kept photo beside one other member, each under its caption; previews load on a pool."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.keeper_pane, self.member_pane = ImagePane(), ImagePane()
        self.keeper_caption, self.member_caption = QLabel(), QLabel()
        panes = QHBoxLayout(self)
        for pane, caption in ((self.keeper_pane, self.keeper_caption), (self.member_pane, self.member_caption)):
            caption.setWordWrap(True)
            caption.setTextFormat(Qt.TextFormat.RichText)
            col = QVBoxLayout()
            col.addWidget(caption)
            col.addWidget(pane, 1)
            panes.addLayout(col, 1)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self.signals = LoadSignals(self)
        self.signals.loaded.connect(self._loaded)
        self.previews: dict[str, QImage] = {}

    def show_pair(self, keeper_text: str, keeper_path: Path, member_text: str, member_path: Path) -> None:
        self.keeper_caption.setText(keeper_text)
        self.member_caption.setText(member_text)
        self._preview(self.keeper_pane, str(keeper_path))
        self._preview(self.member_pane, str(member_path))

    def clear(self) -> None:
        for pane, caption in ((self.keeper_pane, self.keeper_caption), (self.member_pane, self.member_caption)):
            pane.setProperty("path", None)
            pane.item.setPixmap(QPixmap())
            caption.setText("")

    def forget(self) -> None:
        self.previews.clear()
        self.clear()

    def _preview(self, pane: ImagePane, path: str) -> None:
        pane.setProperty("path", path)
        if path in self.previews:
            pane.set_image(self.previews[path])
        else:
            pane.item.setPixmap(QPixmap())
            self.pool.start(ImageLoad(path, self.signals))

    def _loaded(self, path: str, image: QImage, _photo, error: str) -> None:
        if image.isNull():
            log.info("no preview of %s: %s", path, error)
            return
        if len(self.previews) > 16:
            self.previews.pop(next(iter(self.previews)))
        self.previews[path] = image
        for pane in (self.keeper_pane, self.member_pane):
            if pane.property("path") == path:
                pane.set_image(image)


class KeepRulesDialog(QDialog):
    """The keeper rules in their order: drag a rule (or use the arrows) to change it, untick to drop it."""

    def __init__(self, rules: tuple[str, ...], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Which photo of a group is kept")
        self.list = QListWidget()
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        for rule in list(rules) + [r for r in RULE_NAMES if r not in rules]:
            item = QListWidgetItem(f"{RULE_NAMES[rule]}")
            item.setData(Qt.ItemDataRole.UserRole, rule)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if rule in rules else Qt.CheckState.Unchecked)
            self.list.addItem(item)
        self.list.setCurrentRow(0)
        self.up_button, self.down_button = QPushButton("Up"), QPushButton("Down")
        self.up_button.clicked.connect(lambda: self.move(-1))
        self.down_button.clicked.connect(lambda: self.move(1))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("The first rule decides; a tie goes to the next one, then to the path.\n"
                             "Photos in a protected folder always win."))
        side = QVBoxLayout()
        side.addWidget(self.up_button)
        side.addWidget(self.down_button)
        side.addStretch(1)
        body = QHBoxLayout()
        body.addWidget(self.list, 1)
        body.addLayout(side)
        lay.addLayout(body)
        lay.addWidget(buttons)

    def move(self, step: int) -> None:
        row = self.list.currentRow()
        to = row + step
        if row < 0 or not 0 <= to < self.list.count():
            return
        item = self.list.takeItem(row)
        self.list.insertItem(to, item)
        self.list.setCurrentRow(to)

    def rules(self) -> tuple[str, ...]:
        items = (self.list.item(n) for n in range(self.list.count()))
        return tuple(i.data(Qt.ItemDataRole.UserRole) for i in items if i.checkState() == Qt.CheckState.Checked)
