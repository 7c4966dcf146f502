"""The status bar's indexing part: what a run is doing, its progress and ETA, Cancel, skipped files."""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QSizePolicy, QStatusBar

from ...core.calibration import CalibrationProgress
from ...core.library import FileSkipped, IndexBuilding, IndexProgress, IndexSummary, ScanDone
from ..dialogs import SkippedFilesDialog
from ..session import LibrarySession, ModelInUse, has_index

log = logging.getLogger(__name__)


class ElidedLabel(QLabel):
    """A one-line label that ends in "…" where it is cut, so a cut message never reads as whole."""

    def shown_text(self) -> str:
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, self.contentsRect().width())

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.drawText(self.contentsRect(), self.alignment() | Qt.AlignmentFlag.AlignVCenter, self.shown_text())


def summary_text(ev: IndexSummary, had_index: bool) -> str:
    """One line on a finished (or stopped) run."""
    stopped = ""
    if ev.cancelled:
        if had_index:
            stopped = " (stopped: the previous index is still in use)"
        elif ev.indexed:
            stopped = f" (stopped: the {ev.indexed} photos indexed so far can be searched; open the folder " \
                      "again to index the rest)"
        else:
            stopped = " (stopped: the photos read so far are shown; open the folder again to index the rest)"
    calibrated = f"  ·  Duplicates: {ev.calibration.summary()}" if ev.calibration is not None else ""
    return (f"{ev.indexed} photos indexed, {ev.embedded} new, {len(ev.skipped)} skipped, "
            f"{ev.seconds:.1f} s{stopped}{calibrated}")


class IndexingStatus:
    """Fills a status bar from the session's indexing events."""

    def __init__(self, session: LibrarySession, bar: QStatusBar) -> None:
        self.session = session
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.hide()
        self.label = ElidedLabel("")
        # Long messages end in "…" at the window's edge instead of widening it; the tooltip has them whole.
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.label.setMinimumWidth(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.skipped_button = QPushButton("")
        self.skipped_button.clicked.connect(self.show_skipped)
        self.skipped_button.hide()
        self.skipped_dialog: SkippedFilesDialog | None = None
        bar.addWidget(self.label, 1)
        bar.addPermanentWidget(self.skipped_button)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        self._model_note = ""  # said after each progress message while a model chosen for the user indexes
        self._had_index = False
        session.opened.connect(lambda _lib: self.skipped_button.hide())
        session.indexing_changed.connect(self._indexing_changed)
        session.event.connect(self._event)

    def say(self, text: str) -> None:
        """A status-bar message (whole in its tooltip where the window is too narrow for it)."""
        self.label.setText(text)
        self.label.setToolTip(text)

    def cancel(self) -> None:
        if self.session.indexing:
            self.session.stop_indexing()
            self.say("Stopping after the current batch…")

    def _indexing_changed(self, on: bool) -> None:
        if on:
            library = self.session.library
            self._had_index = library is not None and has_index(library)
            self.progress.setRange(0, 0)
            self.progress.show()
            self.cancel_button.show()
            self.say("Scanning the folder…" if self._had_index else "Choosing the model…")
            return
        self._model_note = ""
        self.progress.hide()
        self.cancel_button.hide()
        skipped = self.session.skipped
        self.skipped_button.setText(f"Skipped files: {len(skipped)}")
        self.skipped_button.setVisible(bool(skipped))

    def _progress_text(self, text: str) -> None:
        self.say(f"{text}  ·  {self._model_note}" if self._model_note else text)

    def _event(self, ev) -> None:
        if isinstance(ev, ModelInUse):
            if ev.automatic:
                # A model the user did not choose: say which and why, and keep saying it while it indexes.
                self._model_note = f"Model: {ev.embedder.label} — {ev.reason}"
                self.say(self._model_note)
                if ev.fallback:
                    log.warning("%s", self._model_note)
        elif isinstance(ev, ScanDone):
            self.progress.setRange(0, max(ev.to_process, 1))
            self.progress.setValue(0)
            self._progress_text(f"{ev.total} photos; {ev.to_process} to read")
        elif isinstance(ev, IndexProgress):
            self.progress.setValue(ev.done)
            eta = f", about {ev.eta:.0f} s left" if ev.eta is not None else ""
            self._progress_text(f"Indexing {ev.done} of {ev.total}{eta}")
        elif isinstance(ev, IndexBuilding):
            self.progress.setRange(0, 0)
            self._progress_text(f"Building the search index of {ev.count} photos…")
        elif isinstance(ev, CalibrationProgress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self._progress_text(f"Calibrating the duplicate threshold on your photos… {ev.done}/{ev.total}")
        elif isinstance(ev, IndexSummary):
            self._model_note = ""
            self.say(summary_text(ev, self._had_index))
        elif not isinstance(ev, FileSkipped):
            log.debug("indexing event not shown: %r", ev)

    def show_skipped(self) -> None:
        """A list of every file that is not in the index, with the reason; copyable as text."""
        self.skipped_dialog = SkippedFilesDialog(self.session.skipped, self.label.window())
        self.skipped_dialog.show()
