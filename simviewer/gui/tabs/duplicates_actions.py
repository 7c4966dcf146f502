"""The Duplicates tab's file actions: the clean-up (trash, a folder, hard links), undo, the report.

A clean-up is :func:`core.dedup.execute` on a worker: every change is journalled first, so "Undo
last clean-up" replays the journal backwards. The session's indexing is stopped first (a library
is locked while it updates) and started again afterwards, so the index follows the files.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from ...core import dedup
from ...core.units import human_size
from ..workers import GeneratorThread
from .duplicates_panels import CleanupBar

# (mode of core.dedup.execute, label, verb while it runs, what was done).
MODES = [
    ("trash", "Move to the trash", "Moving", "moved to the trash"),
    ("move", "Move to a folder…", "Moving", "moved to {where}"),
    ("hardlink", "Replace with hard links", "Linking", "replaced by hard links to the photos kept"),
]


class Cleanup(QObject):
    """Confirms, runs and undoes clean-ups of one library; reports on the clean-up bar."""

    busy_changed = Signal(bool)
    finished = Signal()  # files changed: the selection is stale and the library needs indexing

    def __init__(self, session, feedback, bar: CleanupBar, parent: QWidget) -> None:
        super().__init__(parent)
        self.session, self.feedback, self.bar = session, feedback, bar
        self.widget = parent
        self.worker: GeneratorThread | None = None
        self.acting = False
        self.last_result: dedup.ActionResult | None = None
        for data, label, _verb, _past in MODES:
            if data in dedup.ACTION_MODES:
                bar.action_box.addItem(label, data)

    def mode(self) -> str:
        return self.bar.action_box.currentData()

    def run(self, plan: list[dedup.PlannedMove], reference: list[Path], move_to: Path | None = None) -> None:
        """Ask (a folder for "move", then a confirmation), then run the plan on a worker. Hard
        links replace only byte-identical copies: the edited ones in the plan stay."""
        library = self.session.library
        if library is None or self.acting:
            return
        mode = self.mode()
        if mode == "hardlink":
            plan = [p for p in plan if p.item.hash == p.group_keeper.hash]
        if not plan:
            self.bar.status.setText("No exact copy is selected: hard links replace only identical files."
                                    if mode == "hardlink" else "No photo is selected to move.")
            return
        if mode == "move" and move_to is None:
            folder = QFileDialog.getExistingDirectory(self.widget, "Move the duplicates into this folder",
                                                      str(Path.home()))
            if not folder:
                self.bar.status.setText("Nothing was moved: no folder was chosen.")
                return
            move_to = Path(folder)
        if not self._confirm(plan, mode, move_to, bool(reference)):
            self.bar.status.setText("Nothing was moved.")
            return
        _data, _label, verb, past = next(m for m in MODES if m[0] == mode)
        past = past.format(where=move_to)
        protected = tuple(reference)
        self._start(lambda stop: dedup.execute(plan, mode, library.journal_dir, library.folder, move_to,
                                               should_stop=stop, reference=protected), verb, past)

    def _confirm(self, plan: list[dedup.PlannedMove], mode: str, move_to: Path | None, protected: bool) -> bool:
        size = human_size(sum(p.item.size for p in plan))
        groups = len({p.group_keeper.key for p in plan})
        if mode == "hardlink":
            text = f"Replace {len(plan)} photos ({size}) with hard links to the photos kept?"
            yes = f"Link {len(plan)} photos"
            how = ("Each path stays, but becomes a hard link to the photo kept, sharing its bytes on disk; "
                   "its own file goes to the system trash. Only where both are on one file system.\n\n")
        else:
            where = "the system trash" if mode == "trash" else str(move_to)
            text, yes = f"Move {len(plan)} photos ({size}) to {where}?", f"Move {len(plan)} photos"
            how = ("Folders are kept: each photo goes to the same relative path under the destination.\n\n"
                   if mode == "move" else "")
        informative = (
            f"They come from {groups} groups; at least one photo of every group stays where it is"
            + (", and nothing in the protected folders is touched" if protected else "") + ".\n\n" + how
            + "Every change is recorded first, so “Undo last clean-up” puts them all back "
              f"(or: simviewer dedup \"{self.session.library.folder}\" --undo). Files changed since indexing "
              "are left alone.")
        details = "\n".join(str(p.item.path) for p in plan)
        return self.feedback.ask("Clean up duplicates", text, yes, informative=informative, details=details)

    def undo(self) -> None:
        library = self.session.library
        if library is None or self.acting:
            return
        journal = self.undoable_journal()
        if journal is None:
            self.bar.status.setText("There is no clean-up to undo.")
            return
        self._start(lambda stop: dedup.undo(journal, root=library.folder), "Putting back", "put back")

    def undoable_journal(self) -> Path | None:
        library = self.session.library
        if library is None:
            return None
        journal = dedup.latest_journal(library.journal_dir)
        if journal is None:
            return None
        try:
            pending = [e for e in dedup.Journal(journal).entries() if not e["undone"]]
        except (OSError, ValueError):
            return None
        return journal if pending else None

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def _start(self, make, verb: str, past: str) -> None:
        self.session.stop_indexing()  # a library is locked while it updates; indexing follows the moves
        worker = GeneratorThread(make, "dedup-action", self)
        worker.yielded.connect(lambda ev: self._event(ev, verb, past))
        worker.failed.connect(lambda exc: self.feedback.error("The clean-up stopped", f"{exc}\n\n"
                                                              "What was changed is in the undo journal."))
        worker.done.connect(self._done)
        self.worker = worker
        self.acting = True
        self.bar.progress.setRange(0, 0)
        self.bar.progress.show()
        self.busy_changed.emit(True)
        worker.start()

    def _event(self, ev, verb: str, past: str) -> None:
        if isinstance(ev, dedup.ActionProgress):
            self.bar.progress.setRange(0, max(ev.total, 1))
            self.bar.progress.setValue(ev.done)
            self.bar.status.setText(f"{verb} {ev.done} of {ev.total}: {Path(ev.path).name}")
        elif isinstance(ev, dedup.ActionResult):
            self.last_result = ev
            text = f"{len(ev.moved)} photos {past} ({human_size(ev.bytes_moved)})."
            if ev.skipped:
                text += f" {len(ev.skipped)} left alone."
                self.feedback.error(f"{len(ev.skipped)} photos were left alone",
                                    "\n".join(f"{Path(p).name}: {why}" for p, why in ev.skipped[:20]))
            if ev.error:
                self.feedback.error("The clean-up stopped", f"{ev.error}\n\nWhat was done before is in the "
                                    "undo journal.")
            self.bar.status.setText(text)

    def _done(self, _completed: bool) -> None:
        self.acting = False
        self.bar.progress.hide()
        self.busy_changed.emit(False)
        self.finished.emit()
        self.session.start_indexing()  # the index and catalog follow; index_ready regroups

    # -- the report ----------------------------------------------------------------------------
    def export(self, groups: list[dedup.Group], threshold: float, sure_level: float | None) -> None:
        if not groups:
            return
        path, _chosen = QFileDialog.getSaveFileName(self.widget, "Export the duplicate report",
                                                    str(Path.home() / "duplicates.csv"), "CSV (*.csv);;JSON (*.json)")
        if path:
            self.write_report(Path(path), groups, threshold, sure_level)

    def write_report(self, path: Path, groups: list[dedup.Group], threshold: float, sure_level: float | None) -> None:
        if path.suffix.lower() == ".json":
            dedup.write_json(groups, threshold, path, sure_level)
        else:
            dedup.write_csv(groups, path, sure_level)
        self.bar.status.setText(f"Report written to {path}")
