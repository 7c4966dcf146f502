"""The window's dialogs: its questions and errors (the tabs' ``Feedback``), how to go on without
ImageNet weights, and the list of skipped files."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.embedder import WeightsUnavailable
from ..core.registry import ARCHITECTURES, BUNDLED_ARCH


class MessageBoxFeedback:
    """``Feedback`` through modal message boxes, for a window that has ``say(text)``. The box last
    asked is kept in ``asked`` and the last error in ``last_error``; tests answer a box by replacing
    ``exec_dialog``."""

    last_error: tuple[str, str] | None = None
    asked: QMessageBox | None = None

    def exec_dialog(self, box: QMessageBox):
        """Run a modal message box; returns the button clicked."""
        box.exec()
        return box.clickedButton()

    def ask(self, title: str, text: str, yes: str, no: str = "Cancel", *, informative: str = "",
            details: str = "") -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        box.setInformativeText(informative)
        if details:
            box.setDetailedText(details)
        go = box.addButton(yes, QMessageBox.ButtonRole.AcceptRole)
        box.addButton(no, QMessageBox.ButtonRole.RejectRole)
        self.asked = box
        return self.exec_dialog(box) is go

    def error(self, title: str, text: str) -> None:
        self.last_error = (title, text)
        self.say(f"{title}: {text.splitlines()[0]}")
        self.exec_dialog(QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self))


# What the offline dialog's buttons answer.
IMPORT_FILE, USE_BUNDLED, UNTRAINED = "file", "bundled", "untrained"


def offline_box(exc: WeightsUnavailable, parent: QWidget | None = None) -> tuple[QMessageBox, dict]:
    """The choices when ImageNet weights cannot be had; returns the box and {button: choice}."""
    arch = ARCHITECTURES[exc.arch].label if exc.arch in ARCHITECTURES else "this model"
    bundled = ARCHITECTURES[BUNDLED_ARCH].label
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("ImageNet weights are not available")
    box.setText(f"The ImageNet weights for {arch} are not on this computer and could not be downloaded.")
    box.setInformativeText(
        "How would you like to go on?\n\n"
        f"• Import a weights file: for example {Path(exc.cache_file).name or 'the .pth file'} "
        "copied from a computer that has it.\n"
        f"• Use the pretrained {bundled} installed with simviewer: no download needed.\n"
        "• Continue untrained: look-alikes are weaker and duplicates may not be told apart. It is "
        "marked \"untrained\" wherever results show.\n"
        "• Or fine-tune a model on your own photos and choose it in the toolbar."
    )
    box.setDetailedText(str(exc))
    answers = {
        box.addButton("Import a weights file…", QMessageBox.ButtonRole.AcceptRole): IMPORT_FILE,
        box.addButton(f"Use {bundled}", QMessageBox.ButtonRole.AcceptRole): USE_BUNDLED,
        box.addButton("Continue untrained", QMessageBox.ButtonRole.AcceptRole): UNTRAINED,
    }
    box.addButton(QMessageBox.StandardButton.Cancel)
    return box, answers


class SkippedFilesDialog(QDialog):
    """Every file that is not in the index, with the reason; copyable as text."""

    def __init__(self, skipped: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Skipped files ({len(skipped)})")
        self.lines = [f"{p}: {r}" for p, r in skipped]
        self.listing = QListWidget()
        self.listing.addItems(self.lines)
        copy = QPushButton("Copy the list")
        copy.clicked.connect(lambda: QApplication.clipboard().setText("\n".join(self.lines)))
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        note = QLabel("These files were not indexed. Fix or replace them and open the folder again; "
                      "unchanged files are not retried.")
        note.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(note)
        lay.addWidget(self.listing, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(copy)
        row.addWidget(close)
        lay.addLayout(row)
        self.resize(760, 420)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
