"""The Duplicates tab: groups that follow a threshold slider live, keepers, and undoable clean-ups.

Neighbours come from :func:`core.dedup.find_duplicates` once per index (on a worker, down to a
floor below the threshold), so moving the slider only regroups cached pairs on the GUI thread
(tens of ms at 10k photos). What a clean-up moves is a :class:`core.dedup.selection.Selection`,
shown by the groups and members models (``gui.duplicates_models``); the clean-up itself, undo and
the report are ``duplicates_actions.Cleanup``.

Only sure duplicates (exact copies, and members at or above the calibration's sure level) are
pre-selected; the other members are marked "similar — check" and ticked only by hand or with
Select → Similar ones too. A camera's RAW and the JPEG beside it are one shot: inside a group the
shot is one member (both files), and the list's last entry, "RAW+JPEG pairs", shows every shot's
files side by side, none ticked until Select → Keep the RAW (or the JPEG) of each pair.

The tab is given the session (library, index, indexing), the thumbnail service, the window's
``ask``/``error`` and the explain service; what it wants from the window is a signal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QStackedWidget, QVBoxLayout, QWidget

from ...core import dedup
from ...core.calibration import Calibration, CalibrationProgress
from ...core.dedup.pairs import pairs_group, shot_keys
from ...core.dedup.selection import Selection
from ...core.units import human_size
from ..duplicates_models import (
    CHECK_COLOUR,
    CHECK_TEXT,
    KEEP_COLOUR,
    MOVE_COLOUR,
    GroupsModel,
    MembersModel,
    folder_of,
    photo_date,
    score_text,
)
from ..models import FileRow
from ..widgets.compare_view import CompareDialog
from .duplicates_actions import Cleanup
from .duplicates_keep import KeeperChoice
from .duplicates_panels import CalibrationStrip, CleanupBar, ComparePanes, GroupBrowser, KeepRulesDialog, SearchBar
from .duplicates_search import Search

log = logging.getLogger(__name__)



def _calibration_id(cal: Calibration) -> str:
    """Which measurement a remembered slider position belongs to: a new one resets the slider."""
    return repr(cal.created)


def _identity(cal: Calibration | None) -> tuple[str, float] | None:
    return None if cal is None else (cal.fingerprint, cal.created)


def caption(m: dedup.Member, g: dedup.Group, selection: Selection, root: Path | None, text_colour) -> str:
    """What happens to *m* (moved, kept, stays), its name and folder (two photos of one name are
    told apart), size, date and score, above its picture."""
    it, moving, keeper = m.item, selection.moving(g), None if g.pair else selection.keeper(g)
    fate = "will be moved" if it.key in moving else "★ KEEP" if m is keeper else "stays (not ticked)"
    colour = MOVE_COLOUR if it.key in moving else KEEP_COLOUR if m is keeper else text_colour
    score = " · RAW+JPEG pair" if g.pair else "" if m is g.members[0] else " · " + score_text(m, False)
    if m is not g.members[0] and not selection.sure(g, m) and not g.pair:
        score += f" · <span style='color:{CHECK_COLOUR.name()}'>{CHECK_TEXT}</span>"
    res = f"{it.width}×{it.height}, " if it.width else ""
    return (f"<b style='color:{colour.name()}'>{fate}</b> &nbsp; {it.path.name} "
            f"<span style='color:gray'>in {folder_of(it.path, root)}</span> — "
            f"{res}{human_size(it.size)}, {photo_date(it)}{score}")


def panes_pair(g: dedup.Group, row: int, selection: Selection) -> tuple[dedup.Member, dedup.Member]:
    """The two members the panes show for the chosen *row*: the kept one beside it (beside the
    next one when it is the kept one); in the list of RAW+JPEG pairs, the shot's two files."""
    chosen = g.members[row]
    if g.pair:
        shot = [m for m in g.members if m.item.key in shot_keys(g, chosen.item.key)]
        return shot[0], next((m for m in shot if m is not shot[0]), shot[0])
    keeper = selection.keeper(g)
    return keeper, chosen if chosen is not keeper else next((m for m in g.members if m is not keeper), keeper)


def summary_text(groups: list[dedup.Group], selection: Selection, threshold: float, digits: int,
                 untrained: str) -> str:
    """The line above the groups: how many, what they reclaim, what is selected."""
    files, size = selection.planned()
    sure, similar, ticked = selection.counts()
    return (f"{len(groups)} groups at ≥ {threshold * 100:.{digits}f} % similarity"
            f"{untrained}: {sum(len(g.members) - 1 for g in groups)} duplicates, "
            f"{human_size(sum(g.reclaimable for g in groups))} to reclaim; "
            f"{sure} sure duplicates selected, {similar} similar to check"
            + (f" ({ticked} ticked)" if ticked else "") + f"; {files} selected ({human_size(size)})")


class DuplicatesTab(QWidget):
    """Works on the session's open library and index, and follows their changes."""

    finetune_requested = Signal()  # the user wants to fine-tune the model (the Training tab)
    show_in_library = Signal(str)  # a photo to show in the Library tab

    def __init__(self, session, thumbnails, feedback, explain=None, parent=None) -> None:
        super().__init__(parent)
        self.session, self.thumbnails, self.feedback, self.explain = session, thumbnails, feedback, explain
        self.search: dedup.DuplicateSearch | None = None
        self._search_for: tuple[object, bool] | None = None  # (the index, invariant) search was made from
        self.groups: list[dedup.Group] = []
        self.shown: list[dedup.Group] = []  # the groups, then the list of RAW+JPEG pairs if any
        self.selection = Selection()
        # The library's calibration for its index's model (core.calibration): the threshold starts
        # there, and without one there is no threshold at all (nothing to search with).
        self.calibration: Calibration | None = None
        self.threshold: float | None = None
        self.floor = 0.0  # the slider's lowest value: neighbours are cached down to it
        self.compare_dialog: CompareDialog | None = None
        self.groups_model = GroupsModel(thumbnails, self)
        self.members_model = MembersModel(thumbnails, self)
        self._regroup_timer = QTimer(self, singleShot=True, interval=30)
        self._regroup_timer.timeout.connect(self.regroup)
        self._build_ui()
        self._connect()
        session.opened.connect(lambda _library: self.library_opened())
        session.index_ready.connect(lambda _index: self.index_changed())
        session.indexing_changed.connect(lambda _on: self._update_buttons())
        session.event.connect(self._session_event)

    # -- layout --------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.bar = SearchBar()
        self.bar.invariant_box.setChecked(self.session.settings.value("dedup/invariant", "true") == "true")
        self.keep = KeeperChoice(self.session, self.bar, self)
        self.strip = CalibrationStrip()
        self.summary = QLabel("Press “Find duplicates” to look for them in this library.")
        self.summary.setStyleSheet("font-weight: bold;")
        self.summary.setWordWrap(True)
        self.panes = ComparePanes()
        self.browser = GroupBrowser(self.groups_model, self.members_model, self.panes)
        self.actions_bar = CleanupBar()
        self.cleanup = Cleanup(self.session, self.feedback, self.actions_bar, self)
        self.searcher = Search(self.feedback, self.actions_bar, self)
        page = QWidget()
        lay = QVBoxLayout(page)
        for part, stretch in ((self.bar, 0), (self.strip, 0), (self.summary, 0), (self.browser, 1),
                              (self.actions_bar, 0)):
            lay.addWidget(part, stretch)
        self.no_library = QLabel("Open a folder first: duplicates are found in the open library.")
        self.no_library.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_library.setStyleSheet("font-size: 18px; color: palette(mid);")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.no_library)
        self.stack.addWidget(page)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.stack)
        self._update_buttons()

    def _connect(self) -> None:
        bar, strip, browser, act = self.bar, self.strip, self.browser, self.actions_bar
        bar.find_button.clicked.connect(lambda: self.find())
        bar.slider.valueChanged.connect(self._slider_moved)
        bar.invariant_box.toggled.connect(self._invariant_toggled)
        bar.exact_box.toggled.connect(lambda _on: self.regroup())
        self.keep.rules_changed.connect(self._rules_changed)
        self.keep.reference_changed.connect(self.regroup)
        strip.pretrained_wanted.connect(self.session.reindex_with_default_model)
        strip.finetune_wanted.connect(self.finetune_requested)
        strip.calibrate_wanted.connect(lambda: self.session.start_indexing())
        browser.group_list.selectionModel().currentRowChanged.connect(lambda cur, _prev: self._group_chosen())
        browser.table.selectionModel().currentRowChanged.connect(lambda cur, _prev: self._member_chosen(cur.row()))
        browser.table.doubleClicked.connect(lambda idx: self.open_compare(idx.row()))
        browser.keep_button.clicked.connect(lambda: self.keep_current())
        browser.not_dup_button.clicked.connect(lambda: self.mark_not_duplicates())
        browser.compare_button.clicked.connect(lambda: self.open_compare(browser.member_row()))
        self.members_model.refused.connect(self.actions_bar.status.setText)
        self.members_model.selection_changed.connect(self._selection_changed)
        act.rules_action.triggered.connect(lambda: self.select_by_rules())
        act.similar_action.triggered.connect(lambda: self._select(self.selection.select_similar))
        act.invert_action.triggered.connect(lambda: self._select(self.selection.invert))
        act.none_action.triggered.connect(lambda: self._select(self.selection.select_none))
        act.keep_raw_action.triggered.connect(lambda: self._select(lambda: self.selection.keep_kind("raw")))
        act.keep_jpeg_action.triggered.connect(lambda: self._select(lambda: self.selection.keep_kind("jpeg")))
        # clicked(bool) must not reach clean_up's move_to: the lambda drops it.
        act.act_button.clicked.connect(lambda: self.clean_up())
        act.undo_button.clicked.connect(lambda: self.cleanup.undo())
        act.export_button.clicked.connect(
            lambda: self.cleanup.export(self.groups, self.threshold, self.sure_level()))
        act.stop_button.clicked.connect(self.stop)
        self.cleanup.busy_changed.connect(lambda _busy: self._update_buttons())
        self.searcher.busy_changed.connect(lambda _busy: self._update_buttons())
        self.searcher.found.connect(self._found)
        self.searcher.again.connect(self.find)
        self.cleanup.finished.connect(lambda: self.selection.clear())

    # -- library and index changes -------------------------------------------------------------
    def library_opened(self) -> None:
        """Another folder: forget everything about the previous one."""
        self.stop()
        self.search, self._search_for, self.groups = None, None, []
        self.selection = Selection()
        self.panes.forget()
        self.keep.set_reference([])
        self.cleanup.last_result = None
        self.calibration, self.threshold = None, None
        self.strip.plot.empty_text = "Waiting for the library's index…"
        self._show_calibration()
        self.bar.set_threshold(None, self.floor)
        self._show_groups()
        self.summary.setText("Press “Find duplicates” to look for them in this library.")
        self.stack.setCurrentIndex(1)
        self._update_buttons()

    def index_changed(self) -> None:
        """A new index is in use (after indexing or a clean-up): its items, its model or the
        library's calibration may have changed."""
        index, library = self.session.index, self.session.library
        if index is None or library is None:
            return
        fp = index.model_fingerprint
        cal = library.calibration(fp)
        new = _identity(cal) != _identity(self.calibration)
        self.calibration = cal
        if cal is None:  # no threshold to search with: nothing is invented
            self.searcher.stop()
            self.search, self._search_for, self.groups, self.threshold = None, None, [], None
            self._show_groups()
            self.summary.setText("Duplicates are searched from a threshold calibrated on this library.")
        elif new or self.threshold is None:
            t, self.selection.use_rules = self._starting_threshold(fp, cal)
            self.floor, self.threshold = min(dedup.threshold_floor(cal.threshold), t), t
            self.bar.set_threshold(t, self.floor)
        self._show_calibration()
        if cal is not None and self._search_for is not None and self._search_for[0] is not index \
                and self.isVisible():
            self.find()
        self._update_buttons()

    def _starting_threshold(self, fp: str, cal: Calibration) -> tuple[float, bool]:
        """(threshold, the user's): where the user left the slider for this calibration, else the
        calibrated threshold. A new calibration (measured again) starts from its own value."""
        s = self.session.settings
        saved, saved_for = s.value(f"dedup/threshold/{fp}"), s.value(f"dedup/calibration/{fp}")
        if saved is not None and saved_for == _calibration_id(cal):
            with contextlib.suppress(TypeError, ValueError):  # a damaged setting: the calibrated value
                return float(saved), True
        return cal.threshold, cal.reliable

    def _session_event(self, ev) -> None:
        """The session's indexing run is measuring the threshold: say so where it is missing."""
        if isinstance(ev, CalibrationProgress) and self.calibration is None:
            self.strip.waiting(f"Calibrating the duplicate threshold on your photos… {ev.done}/{ev.total}")

    def _pretrained(self) -> bool:
        index = self.session.index
        return index is not None and index.model.weights == "imagenet"

    def _show_calibration(self) -> None:
        self.strip.show_calibration(self.calibration, self.threshold, self.session.index is not None,
                                    self._pretrained(), self.selection.use_rules)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if self._search_for is not None and self._search_for[0] is not self.session.index and not self.finding:
            self.find()  # the library changed while another tab was showing

    # -- finding -------------------------------------------------------------------------------
    @property
    def finding(self) -> bool:
        return self.searcher.finding

    def find(self) -> None:
        s = self.session
        if s.index is None or s.library is None or self.calibration is None or self.finding or self.cleanup.acting:
            return
        if s.indexing:
            self.actions_bar.status.setText("Wait for indexing to finish: the groups would miss the newest photos.")
            return
        self.searcher.start(s.library, s.index, self.floor, self.bar.invariant_box.isChecked(),
                            lambda: self.session.index)

    def _found(self, result, index, invariant: bool) -> None:
        self.search = result
        self._search_for = (index, invariant)
        self.regroup()

    def stop(self) -> None:
        self.searcher.stop()
        self.cleanup.stop()

    # -- threshold and options -----------------------------------------------------------------
    def _slider_moved(self, value: int) -> None:
        if self.calibration is None:
            return
        self.threshold = self.bar.threshold_at(value, self.floor)
        self.selection.use_rules = True  # the user decides now: the rules' choice is shown as for a reliable one
        self.bar.show_value(self.threshold, self.floor)
        self.strip.show_threshold(self.calibration, self.threshold)
        self.strip.show_warning(self.calibration, self._pretrained(), True)
        if self.session.index is not None:
            fp = self.session.index.model_fingerprint
            self.session.settings.setValue(f"dedup/threshold/{fp}", self.threshold)
            self.session.settings.setValue(f"dedup/calibration/{fp}", _calibration_id(self.calibration))
        self._regroup_timer.start()

    def set_threshold(self, threshold: float) -> None:
        """Move the slider to *threshold* (within its range) and regroup at once."""
        self.bar.slider.setValue(self.bar.position(threshold, self.floor))
        self._regroup_timer.stop()
        self.regroup()

    def _invariant_toggled(self, on: bool) -> None:
        self.session.settings.setValue("dedup/invariant", "true" if on else "false")
        if self.search is not None:
            self.find()

    @property
    def reference(self) -> list[Path]:
        """The protected folders: their photos are preferred as keepers and never moved."""
        return self.keep.reference

    def add_reference(self, folder: Path) -> None:
        self.keep.add_reference(folder)

    def rules(self) -> tuple[str, ...]:
        return self.keep.rules()

    def edit_rules(self) -> KeepRulesDialog:
        return self.keep.edit(self)

    def _rules_changed(self) -> None:
        self.selection.clear()
        self.regroup()

    def regroup(self) -> None:
        if self.search is None:
            return
        current = self.current_group()
        self.groups = self.search.groups(
            max(self.threshold, self.search.neighbours.floor),
            max_score=0.999999 if self.bar.exact_box.isChecked() else None,
            rules=self.rules(), reference=tuple(self.reference))
        self._show_groups(keep=current.keeper.key if current else None)

    # -- selection -----------------------------------------------------------------------------
    def sure_level(self) -> float | None:
        """The calibration's sure level (``Calibration.sure_level``): members below it are only
        similar, to be checked, and never pre-selected."""
        return self.calibration.sure_level if self.calibration is not None else None

    def planned(self) -> tuple[int, int]:
        """(photos, bytes) the clean-up would move."""
        return self.selection.planned()

    def select_by_rules(self) -> None:
        self.selection.by_rules()
        self.strip.show_warning(self.calibration, self._pretrained(), True)
        self._selection_changed()

    def _select(self, change) -> None:
        change()
        self._selection_changed()

    def _selection_changed(self) -> None:
        self.groups_model.refresh()
        self.members_model.refresh()
        self._member_chosen(self.browser.member_row())
        self._refresh_summary()

    def keep_current(self) -> None:
        """Manual override: keep the chosen member of this group and move the others."""
        g, m = self.current_group(), self.current_member()
        if g is not None and m is not None:
            self._select(lambda: self.selection.keep_only(g, m.item.key))

    def mark_not_duplicates(self) -> None:
        """Remember the chosen member and its keeper as different photos, then regroup."""
        g, m, library = self.current_group(), self.current_member(), self.session.library
        if g is None or m is None or m.item.key == g.keeper.key or library is None or self.search is None or g.pair:
            return
        with library.open_catalog() as cat:
            cat.ignore_pair(g.keeper.hash, m.item.hash)
            self.search = dataclasses.replace(self.search, ignored=frozenset(cat.ignored_pairs()))
        self.actions_bar.status.setText(f"{m.item.path.name} and {g.keeper.path.name} will not be grouped again.")
        self.regroup()

    def clean_up(self, move_to: Path | None = None) -> None:
        """Move what is selected (asks for a folder where the mode needs one, then to confirm)."""
        if self.session.library is None or not self.shown or self.cleanup.acting:
            return
        try:
            plan = self.selection.plan()
        except dedup.DedupError as exc:
            self.feedback.error("Nothing was moved", str(exc))
            return
        self.cleanup.run(plan, self.reference, move_to)

    # -- display -------------------------------------------------------------------------------
    def current_group(self) -> dedup.Group | None:
        row = self.browser.current_row()
        return self.shown[row] if 0 <= row < len(self.shown) else None

    def current_member(self) -> dedup.Member | None:
        return self.members_model.member(self.browser.member_row()) if self.current_group() else None

    def choose_group(self, row: int) -> None:
        self.browser.group_list.setCurrentIndex(self.groups_model.index(row))

    def choose_member(self, row: int) -> None:
        self.browser.table.setCurrentIndex(self.members_model.index(row, 1))

    def _show_groups(self, keep: str | None = None) -> None:
        pairs = pairs_group(self.search.items) if self.search is not None else None
        self.shown = self.groups + ([pairs] if pairs is not None else [])
        self.selection.set_groups(self.shown)
        self.selection.sure_level, self.selection.reference = self.sure_level(), list(self.reference)
        root = self.session.library.folder if self.session.library else None
        self.groups_model.set_groups(self.shown, self.selection, root)
        if self.shown:
            row = next((n for n, g in enumerate(self.shown) if g.keeper.key == keep), 0)
            self.choose_group(row)
            self._group_chosen()
        else:
            self.members_model.set_group(None, self.selection, root)
            self.panes.clear()
        self._refresh_summary()

    def _refresh_summary(self) -> None:
        if self.search is None:
            self._update_buttons()
            return
        index = self.session.index
        untrained = " (untrained model)" if index and index.model.untrained else ""
        self.summary.setText(summary_text(self.groups, self.selection, self.threshold,
                                          2 if self.floor < 0.9 else 4, untrained))
        self._update_buttons()

    def _group_chosen(self) -> None:
        g = self.current_group()
        if g is None:
            return
        root = self.session.library.folder if self.session.library else None
        self.members_model.set_group(g, self.selection, root)
        self.choose_member(1 if len(g.members) > 1 else 0)

    def _member_chosen(self, row: int) -> None:
        g = self.current_group()
        if g is None or not 0 <= row < len(g.members):
            return
        keeper, other = panes_pair(g, row, self.selection)
        root = self.session.library.folder if self.session.library else None
        colour = self.palette().text().color()
        self.panes.show_pair(caption(keeper, g, self.selection, root, colour), keeper.item.path,
                             caption(other, g, self.selection, root, colour), other.item.path)

    def open_compare(self, row: int) -> CompareDialog | None:
        """The keeper and every other member, in the compare view with heat maps."""
        g = self.current_group()
        if g is None or len(g.members) < 2:
            return None
        rows = [FileRow(m.item.path, m.item.size, m.item.mtime_ns, m.item.width, m.item.height, m.score)
                for m in g.members[1:]]
        index = self.session.index
        dlg = CompareDialog(g.keeper.path, rows, max(0, row - 1), self.window(),
                            untrained=bool(index and index.model.untrained),
                            explain=self.explain, overlays=True, query_role="keeper", match_role="duplicate")
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.compare_dialog = dlg
        return dlg

    def _update_buttons(self) -> None:
        s, bar, act = self.session, self.bar, self.actions_bar
        busy = self.finding or self.cleanup.acting
        calibrated = self.calibration is not None
        bar.find_button.setEnabled(s.library is not None and s.index is not None and calibrated and not busy)
        bar.find_button.setToolTip("" if calibrated or s.index is None else
                                   "There is no calibrated threshold for this library's model yet")
        bar.slider.setEnabled(calibrated)
        self.strip.calibrate_button.setEnabled(not s.indexing)
        have = bool(self.shown) and not busy
        files, size = self.planned() if self.shown else (0, 0)
        act.act_button.setText(f"Clean up {files} photos ({human_size(size)})…" if files else "Clean up")
        for w in (act.select_button, act.rules_action, act.none_action, act.invert_action, act.export_button,
                  self.browser.keep_button, self.browser.not_dup_button, self.browser.compare_button):
            w.setEnabled(have)
        level = self.sure_level() if self.groups else None
        act.similar_action.setEnabled(have and any(g.to_check(level) for g in self.groups))
        for w in (act.keep_raw_action, act.keep_jpeg_action):
            w.setEnabled(have and self.shown[-1].pair)
        act.act_button.setEnabled(have and files > 0)
        act.undo_button.setEnabled(s.library is not None and not busy and self.cleanup.undoable_journal() is not None)
