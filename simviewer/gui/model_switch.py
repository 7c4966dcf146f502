"""Switching the open library to another model: the explicit "Use model", a trained model's "use
this model", and what to do when an indexing run cannot get its model's weights."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from ..core.embedder import Embedder, EmbedderError, WeightsUnavailable, checkpoint_arch
from ..core.registry import BUNDLED_ARCH
from .dialogs import IMPORT_FILE, USE_BUNDLED, MessageBoxFeedback, offline_box
from .session import LibrarySession
from .widgets.model_picker import ModelPicker


class ModelSwitch(QObject):
    """Re-indexes the session's library with a model the user chose; *show_library* brings the
    Library tab forward; *feedback* is the window (its message boxes and status line)."""

    def __init__(self, session: LibrarySession, picker: ModelPicker, feedback: MessageBoxFeedback,
                 show_library: Callable[[], None]) -> None:
        super().__init__(picker)
        self.session, self.picker, self.feedback, self.show_library = session, picker, feedback, show_library

    def switch(self, arch: str, weights: str) -> None:
        """The explicit switch ("Use model"): re-index the open library with this model."""
        if self.session.library is None:
            return
        try:
            # A checkpoint names its architecture: it wins over the box (which may show another).
            embedder = Embedder(None if os.path.isfile(weights) and checkpoint_arch(weights) else arch, weights)
        except Exception as exc:
            self.feedback.error("Cannot use this model", str(exc))
            return
        self.session.use_model(embedder)

    def use_model(self, arch: str, weights: str) -> None:
        """Switch the library to *arch* with *weights* (a fine-tuned checkpoint) and show it."""
        self.picker.set_choice(arch, weights)
        self.show_library()
        self.picker.request_use()

    def index_failed(self, exc: Exception) -> None:
        if isinstance(exc, WeightsUnavailable):
            # The user's own choice, or the model this library was indexed with: they decide.
            self.offer_offline_choices(exc)
        elif isinstance(exc, EmbedderError):
            self.feedback.error("Cannot use this model", f"{exc}\n\nThe photos indexed before can still be browsed. "
                                "To index new ones, choose a model in the toolbar and press “Use model”.")
        else:
            self.feedback.error("Indexing failed", f"{exc}\n\nCheck the folder and try again.")

    def offer_offline_choices(self, exc: WeightsUnavailable) -> None:
        box, answers = offline_box(exc, self.picker.window())
        self.feedback.last_error = ("offline", str(exc))
        self.feedback.say("ImageNet weights are not available: choose how to go on")
        choice = answers.get(self.feedback.exec_dialog(box))
        if choice == IMPORT_FILE:
            path, _ = QFileDialog.getOpenFileName(self.picker.window(), "Weights file", str(Path.home()),
                                                  "PyTorch weights (*.pt *.pth)")
            if not path:
                return
            self.picker.set_choice(None, path)
        elif choice == USE_BUNDLED:
            self.picker.set_choice(BUNDLED_ARCH, "imagenet")
        elif choice is not None:
            self.picker.set_choice(None, "none")
        else:
            return
        self.picker.request_use()
