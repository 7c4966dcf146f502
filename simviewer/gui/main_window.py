"""The main window: composes the tabs around one :class:`LibrarySession` and wires them.

No ML code and no tab logic lives here: the session opens and indexes libraries, each tab is given
the session and the services it needs (thumbnails, heat maps, this window as its ``Feedback``),
and what a tab needs from the window arrives as a signal.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication, QFileDialog, QFrame, QMainWindow, QScrollArea, QTabWidget

from .dialogs import MessageBoxFeedback
from .explain import ExplainService, ModelInfoDialog
from .model_switch import ModelSwitch
from .session import LibrarySession
from .tabs.duplicates_tab import DuplicatesTab
from .tabs.library_tab import EMPTY_TEXT, LibraryTab
from .tabs.training_tab import TrainingTab
from .thumbnails import ThumbnailService
from .widgets.indexing_status import IndexingStatus
from .widgets.model_picker import ModelPicker

__all__ = ["EMPTY_TEXT", "MainWindow"]


class Tabs(QTabWidget):
    """Tabs whose page may be a scroll area around the tab's widget: either can be made current."""

    def setCurrentWidget(self, widget) -> None:  # noqa: N802 (Qt API)
        for i in range(self.count()):
            page = self.widget(i)
            if page is widget or (isinstance(page, QScrollArea) and page.widget() is widget):
                self.setCurrentIndex(i)
                return


class MainWindow(MessageBoxFeedback, QMainWindow):
    def __init__(self, settings: QSettings | None = None, index_root: Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("simviewer")
        self.resize(1280, 800)
        self.setAcceptDrops(True)
        self.session = LibrarySession(settings, index_root, self)
        self.settings = self.session.settings
        self.thumbnails = ThumbnailService(None, self)
        self.explain = ExplainService(self)
        self.picker = ModelPicker(self.session)
        self.models = ModelSwitch(self.session, self.picker, self, lambda: self.tabs.setCurrentWidget(self.library_tab))
        self.library_tab = LibraryTab(self.session, self.thumbnails, self, self.explain)
        self.duplicates = DuplicatesTab(self.session, self.thumbnails, self, self.explain)
        self.training = TrainingTab(self.session, self)
        self._build_ui()
        self._wire()
        self._restore_layout()

    def _build_ui(self) -> None:
        tb = self.addToolBar("Main")
        tb.setObjectName("main-toolbar")
        self.open_action = QAction("Open folder…", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.choose_folder)
        tb.addAction(self.open_action)
        tb.addSeparator()
        tb.addWidget(self.picker)
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &recent")
        paste = QAction("Search with the clipboard image", self, shortcut=QKeySequence.StandardKey.Paste)
        paste.triggered.connect(self.paste_image)
        file_menu.addAction(paste)
        self.addAction(paste)
        file_menu.addSeparator()
        file_menu.addAction(QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close))
        self.menuBar().addMenu("&Model").addAction("Layers and receptive fields…", self.show_model_info)
        self.tabs = Tabs()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.library_tab, "Library")
        self.tabs.addTab(self.duplicates, "Duplicates")
        # Its options are taller than a small screen: they scroll instead of making the window taller.
        training_page = QScrollArea()
        training_page.setWidget(self.training)
        training_page.setWidgetResizable(True)
        training_page.setFrameShape(QFrame.Shape.NoFrame)
        self.tabs.addTab(training_page, "Training")
        self.setCentralWidget(self.tabs)
        self.status = IndexingStatus(self.session, self.statusBar())
        self._update_recent_menu()

    def _wire(self) -> None:
        s = self.session
        s.opened.connect(self._opened)
        s.failed.connect(self.models.index_failed)
        self.picker.use_requested.connect(self.models.switch)
        self.library_tab.message.connect(self.say)
        self.library_tab.open_requested.connect(self.open_folder)
        self.duplicates.finetune_requested.connect(lambda: self.tabs.setCurrentWidget(self.training))
        self.duplicates.show_in_library.connect(self.show_in_library)
        self.training.model_trained.connect(lambda _path: self.picker.refresh())
        self.training.use_model_requested.connect(self.models.use_model)
        self.explain.failed.connect(lambda q, m, why: self.say(f"No heat map for {Path(m).name}: {why}"))

    # -- window layout, kept between runs ------------------------------------------------------
    def _restore_layout(self) -> None:
        geometry, split = self.settings.value("window/geometry"), self.settings.value("window/splitter")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        if isinstance(split, QByteArray):
            self.library_tab.splitter.restoreState(split)

    def _save_layout(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/splitter", self.library_tab.splitter.saveState())

    # -- opening -------------------------------------------------------------------------------
    def start(self, folder: str | None = None) -> None:
        """At start-up: open *folder*, or else the library open when the app last closed."""
        recent = self.session.recent()
        if folder or recent:
            self.open_folder(folder or recent[0])

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a photo folder", str(Path.home()))
        if folder:
            self.open_folder(folder)

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.session.recent()
        for p in recent[:10]:
            self.recent_menu.addAction(p, lambda p=p: self.open_folder(p))
        self.recent_menu.setEnabled(bool(recent))

    def open_folder(self, folder: str | os.PathLike) -> None:
        try:
            self.session.open(folder)
        except Exception as exc:
            self.error("Cannot open this folder", f"{exc}\n\nChoose another folder.")

    def _opened(self, library) -> None:
        self.thumbnails.set_cache_dir(library.index_dir / "thumbnails")
        self.setWindowTitle(f"simviewer — {library.folder}")
        self._update_recent_menu()
        self.tabs.setCurrentWidget(self.library_tab)

    def show_in_library(self, path: str) -> None:
        self.tabs.setCurrentWidget(self.library_tab)
        self.library_tab.show_photo(path)

    def show_model_info(self) -> None:
        index = self.session.index
        if index is None:
            self.error("No library open", "Open a folder first: the table describes the model it uses.")
            return
        self.model_dialog = ModelInfoDialog(index.model.label, self)
        self.explain.stages_ready.connect(self.model_dialog.set_stages)
        self.explain.request_stages()
        self.model_dialog.show()

    # -- drag and drop, paste: the Library tab searches what arrives ---------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.handle_dropped([u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()])
        event.acceptProposedAction()

    def handle_dropped(self, paths: list[str]) -> None:
        self.tabs.setCurrentWidget(self.library_tab)
        self.library_tab.handle_dropped(paths)

    def paste_image(self) -> None:
        self.tabs.setCurrentWidget(self.library_tab)
        self.library_tab.paste(QApplication.clipboard())

    # -- Feedback (questions and errors: MessageBoxFeedback) ----------------------------------
    def say(self, text: str) -> None:
        self.status.say(text)

    # -- closing -------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._save_layout()
        self.explain.shutdown()
        self.session.close()  # stops and waits for every worker
        self.library_tab.remove_pasted()
        self.thumbnails.shutdown()
        super().closeEvent(event)


def schedule_open(window: MainWindow, folder: str | None) -> None:
    """Open *folder* (or the last library) once the event loop runs."""
    QTimer.singleShot(0, lambda: window.start(folder))
