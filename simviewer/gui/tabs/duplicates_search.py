"""The Duplicates tab's search: :func:`core.dedup.find_duplicates` on a worker, its progress on
the clean-up bar, and one more search when the index changed while it ran."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from ...core import dedup
from ..workers import GeneratorThread
from .duplicates_panels import CleanupBar


class Search(QObject):
    """One search at a time; ``found(result, index, invariant)`` when it has its pairs."""

    found = Signal(object, object, bool)  # DuplicateSearch, the index searched, invariant
    busy_changed = Signal(bool)
    again = Signal()  # the index changed meanwhile: the tab searches the new one

    def __init__(self, feedback, bar: CleanupBar, parent=None) -> None:
        super().__init__(parent)
        self.feedback, self.bar = feedback, bar
        self.worker: GeneratorThread | None = None
        self.finding = False
        self.stale = False  # the result belongs to an index no longer in use: search again
        self.had_result = False

    def start(self, library, index, floor: float, invariant: bool, current_index) -> None:
        """Search *index* of *library* down to *floor*; *current_index()* says which index is in
        use when the result arrives."""
        worker = GeneratorThread(
            lambda stop: dedup.find_duplicates(library, index, floor=floor, invariant=invariant, should_stop=stop),
            "dedup-find", self)
        worker.yielded.connect(lambda ev: self._event(ev, index, invariant, current_index))
        worker.failed.connect(lambda exc: self.feedback.error("Cannot look for duplicates", str(exc)))
        worker.done.connect(self._done)
        self.worker, self.finding, self.stale, self.had_result = worker, True, False, False
        bar = self.bar
        bar.progress.setRange(0, 0)
        bar.progress.show()
        bar.stop_button.show()
        bar.status.setText("Mirrored and rotated copies…" if invariant
                           else "Comparing every photo with its neighbours…")
        self.busy_changed.emit(True)
        worker.start()

    def _event(self, ev, index, invariant: bool, current_index) -> None:
        bar = self.bar
        if isinstance(ev, (dedup.VariantProgress, dedup.NeighbourProgress)):
            bar.progress.setRange(0, max(ev.total, 1))
            bar.progress.setValue(ev.done)
            what = ("Mirrored and rotated copies" if isinstance(ev, dedup.VariantProgress)
                    else "Comparing every photo with its neighbours")
            bar.status.setText(f"{what}: {ev.done:,} of {ev.total:,} photos")
        elif index is not current_index():
            self.stale = True  # a new index arrived meanwhile: look again in it when this ends
        else:
            self.had_result = True
            self.found.emit(ev, index, invariant)

    def _done(self, completed: bool) -> None:
        self.finding = False
        if self.stale:
            self.stale = False
            self.again.emit()
            return
        self.bar.progress.hide()
        self.bar.stop_button.hide()
        if not completed and not self.had_result:
            self.bar.status.setText("Stopped.")
        elif completed:
            self.bar.status.setText("")
        self.busy_changed.emit(False)

    def stop(self) -> None:
        self.stale = False
        if self.worker is not None:
            self.worker.stop()
