"""The toolbar's model choice: architecture, weights, "Use model", and the model in use.

The boxes show the open library's model once its index is loaded (before that: the remembered
choice). Choosing in them changes nothing until "Use model" is pressed: that is the explicit switch,
``use_requested(arch, weights)``. The label names the model in use, marks an untrained one, and its
tooltip says why that model is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QWidget

from ...core.embedder import checkpoint_arch
from ...core.index import AnnIndex
from ...core.paths import find_checkpoints
from ...core.registry import ARCHITECTURES, DEFAULT_ARCH
from ..session import KEPT_REASON, LibrarySession, ModelInUse


class ModelPicker(QWidget):
    use_requested = Signal(str, str)  # arch, weights: the user pressed "Use model"

    def __init__(self, session: LibrarySession, parent=None) -> None:
        super().__init__(parent)
        self.session = session
        settings = session.settings
        self.reasons: dict[str, str] = {}  # model fingerprint -> why the open library uses it
        self._boxes_show: tuple[object, str] | None = None  # (library, fingerprint) the boxes show
        self.arch_box = QComboBox()
        self.arch_box.addItems(list(ARCHITECTURES))
        self.arch_box.setCurrentText(str(settings.value("model/arch", DEFAULT_ARCH)))
        self.weights_box = QComboBox()
        self.weights_box.setMinimumContentsLength(18)
        self._fill_weights_box(str(settings.value("model/weights", "imagenet")))
        self.weights_box.activated.connect(self._weights_chosen)
        self.use_button = QPushButton("Use model")
        self.use_button.setToolTip("Re-index the library with the chosen model (a library otherwise keeps the "
                                   "model it was indexed with)")
        self.use_button.clicked.connect(self.request_use)
        self.label = QLabel("")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel(" Model: "))
        lay.addWidget(self.arch_box)
        lay.addWidget(self.weights_box)
        lay.addWidget(self.use_button)
        lay.addWidget(self.label)
        session.opened.connect(lambda _lib: self.reasons.clear())
        session.event.connect(self._event)
        session.index_ready.connect(self._index_ready)
        session.indexing_changed.connect(lambda _on: self.show_label())

    # -- the boxes -----------------------------------------------------------------------------
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

    def set_choice(self, arch: str | None, weights: str) -> None:
        if arch in ARCHITECTURES:
            self.arch_box.setCurrentText(arch)
        self._fill_weights_box(weights)

    def refresh(self) -> None:
        """Offer checkpoints that appeared in models/ (a training run just wrote one)."""
        self._fill_weights_box(self.selected_weights())

    def _weights_chosen(self, i: int) -> None:
        if self.weights_box.itemData(i) == "":
            path, _ = QFileDialog.getOpenFileName(
                self, "Choose a weights file", str(Path.home()), "PyTorch weights (*.pt *.pth);;All files (*)"
            )
            if path and (arch := checkpoint_arch(path)) in ARCHITECTURES:
                self.arch_box.setCurrentText(arch)  # a checkpoint names its architecture
            self._fill_weights_box(path or str(self.session.settings.value("model/weights", "imagenet")))

    def request_use(self) -> None:
        """The explicit switch: remember the choice and ask for the library to be re-indexed with it."""
        arch, weights = self.arch_box.currentText(), self.selected_weights()
        self.session.settings.setValue("model/arch", arch)
        self.session.settings.setValue("model/weights", weights)
        self.use_requested.emit(arch, weights)

    # -- the model in use ----------------------------------------------------------------------
    def _event(self, ev) -> None:
        if isinstance(ev, ModelInUse):
            fp = ev.embedder.fingerprint
            if ev.reason != KEPT_REASON or fp not in self.reasons:  # why it was chosen says more
                self.reasons[fp] = ev.reason
            self.show_label()

    def _index_ready(self, index: AnnIndex | None) -> None:
        if index is None:
            self._boxes_show = None
            return
        shown = (self.session.library, index.model_fingerprint)
        if self._boxes_show != shown:  # another library or model: the boxes show what it uses
            self._boxes_show = shown
            self.set_choice(index.model.arch, index.model.weights)
        self.show_label()

    def show_label(self) -> None:
        """The model in use: the index's once there is one, else the running job's."""
        index, running = self.session.index, self.session.embedder
        if index is not None:
            m = index.model
            untrained, label, fp = m.untrained, m.label, m.fingerprint
            if self.session.indexing and running is not None and running.fingerprint != fp:
                label += f"  → {running.label}"  # a run is switching the library to another model
        elif running is not None:
            untrained, label, fp = running.untrained, running.label, running.fingerprint
        else:
            return
        self.label.setText(f"  {label}" + ("  ⚠ UNTRAINED" if untrained else ""))
        self.label.setStyleSheet("color: #c0392b; font-weight: bold;" if untrained else "")
        reason = self.reasons.get(fp, KEPT_REASON)
        self.label.setToolTip(f"{label}\n{reason[:1].upper()}{reason[1:]}.")

    def untrained(self) -> bool:
        """Whether the model whose results show is an untrained network."""
        index, running = self.session.index, self.session.embedder
        if index is not None:
            return index.model.untrained
        return bool(running is not None and running.untrained)
