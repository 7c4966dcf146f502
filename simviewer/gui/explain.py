"""Grad-CAM in the window: a worker that explains pairs on demand, and the model's layer table.

Explanations run on one worker thread with a network of its own (indexing and searching use
others), one pair at a time, newest request first; results are cached per (model, layer, pair).
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QDialog, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout

from ..core import gradcam
from ..core.embedder import Embedder
from ..core.images import load_image
from .thumbnails import THUMB_SIZE, pil_to_qimage
from .workers import GeneratorThread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainedPair:
    query: str
    match: str
    result: gradcam.PairExplanation  # geometry in the decoded photos' pixels
    size_a: tuple[int, int]  # decoded sizes the geometry refers to
    size_b: tuple[int, int]
    thumb_a: Image.Image  # small copies for overlays on thumbnails
    thumb_b: Image.Image
    stage: gradcam.StageInfo  # receptive field of the explained layer
    crop: int  # the network's input side

    def overlay_thumb(self, side: str, opacity: float) -> QImage:
        thumb, size, cam, geom = (
            (self.thumb_a, self.size_a, self.result.cam_a, self.result.geometry_a) if side == "a"
            else (self.thumb_b, self.size_b, self.result.cam_b, self.result.geometry_b)
        )
        return pil_to_qimage(gradcam.overlay(thumb, cam, geom.scaled(thumb.width / size[0]), opacity))

    def geometry(self, side: str, width: int) -> gradcam.CropGeometry:
        """The crop square in the pixels of a copy of that photo *width* pixels wide."""
        size, geom = (self.size_a, self.result.geometry_a) if side == "a" else (self.size_b, self.result.geometry_b)
        return geom.scaled(width / size[0])

    def cam(self, side: str) -> np.ndarray:
        return self.result.cam_a if side == "a" else self.result.cam_b


class ExplainService(QObject):
    """Explains (query, match) pairs on a worker; ``explained`` arrives on the GUI thread."""

    explained = Signal(object)  # ExplainedPair
    failed = Signal(str, str, str)  # query, match, reason
    stages_ready = Signal(object, int)  # list[StageInfo] of the current model, its input side

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.model: dict | None = None  # manifest["model"] of the library's index
        self.layer: str | None = None
        self.cache: dict[tuple, ExplainedPair] = {}
        self._queue: queue.LifoQueue = queue.LifoQueue()
        self._pending: set[tuple] = set()
        self._worker: GeneratorThread | None = None

    def set_model(self, model: dict) -> None:
        if self.model is not None and model["fingerprint"] == self.model["fingerprint"]:
            return
        self.stop()
        self.model = model
        self.layer = gradcam.DEFAULT_LAYERS[model["arch"]]
        self._queue = queue.LifoQueue()
        self._pending.clear()

    def key(self, query: str, match: str) -> tuple:
        assert self.model is not None
        return (self.model["fingerprint"], self.layer, query, match)

    def get(self, query: str, match: str) -> ExplainedPair | None:
        return self.cache.get(self.key(query, match)) if self.model else None

    def request(self, query: str, match: str) -> None:
        if self.model is None:
            return
        key = self.key(query, match)
        if key in self.cache or key in self._pending:
            return
        self._pending.add(key)
        self._queue.put((key, query, match))
        self._ensure_worker()

    def request_stages(self) -> None:
        if self.model is not None:
            self._queue.put(("stages", None, None))
            self._ensure_worker()

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.isRunning():
            return
        model, q = self.model, self._queue
        assert model is not None

        def run(stop):
            embedder = Embedder.from_manifest(model, precision="fp32")
            explainer = gradcam.Explainer(embedder)
            stages = {s.name: s for s in gradcam.receptive_fields(embedder)}
            pre = embedder.preprocess
            while not stop():
                try:
                    key, query, match = q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if key == "stages":
                    yield ("stages", list(stages.values()), pre.crop)
                    continue
                try:
                    a = load_image(query, pre.resize).image
                    b = load_image(match, pre.resize).image
                    result = explainer.explain(a, b)
                except Exception as exc:  # a file vanished or cannot be decoded: say which
                    yield ("failed", key, query, match, str(exc))
                    continue
                ta, tb = a.copy(), b.copy()
                ta.thumbnail((THUMB_SIZE, THUMB_SIZE))
                tb.thumbnail((THUMB_SIZE, THUMB_SIZE))
                yield ("done", key, ExplainedPair(query, match, result, a.size, b.size, ta, tb,
                                                  stages[explainer.layer], pre.crop))

        worker = GeneratorThread(run, "explain", self)
        worker.yielded.connect(self._on_event)
        worker.failed.connect(lambda exc: self.failed.emit("", "", str(exc)))
        self._worker = worker
        worker.start()

    def _on_event(self, event) -> None:
        kind = event[0]
        if kind == "stages":
            self.stages_ready.emit(event[1], event[2])
        elif kind == "done":
            _, key, pair = event
            self._pending.discard(key)
            if self.model is not None and key[0] == self.model["fingerprint"]:
                self.cache[key] = pair
                self.explained.emit(pair)
        else:
            _, key, query, match, reason = event
            self._pending.discard(key)
            self.failed.emit(query, match, reason)

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker.wait()
            self._worker = None


class ModelInfoDialog(QDialog):
    """Stages of the backbone: output size, stride, receptive field, parameters."""

    COLUMNS = ("stage", "output (h × w × channels)", "stride (px)", "receptive field (px)", "parameters")

    def __init__(self, label: str, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model layers")
        self.resize(720, 420)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        self.label = label
        self.note = QLabel(f"<b>{label}</b>")
        note = self.note
        note.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(note)
        lay.addWidget(self.table)
        self.status = QLabel("Measuring the receptive fields…")
        lay.addWidget(self.status)

    def set_stages(self, stages: list[gradcam.StageInfo], crop: int) -> None:
        self.note.setText(
            f"<b>{self.label}</b>, input {crop} × {crop} px. Each cell of a stage's output sees a square of "
            "the input the size of its receptive field (measured on the network itself); neighbouring "
            "cells are one stride apart. Heat maps are drawn from the last stage, so each of their cells "
            "summarises a large part of the photo."
        )
        self.table.setRowCount(len(stages))
        for row, s in enumerate(stages):
            values = (s.name, f"{s.out_size[0]} × {s.out_size[1]} × {s.channels}", str(s.stride),
                      str(s.receptive_field), f"{s.params:,}")
            for col, v in enumerate(values):
                item = QTableWidgetItem(v)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(row, col, item)
        self.status.setText(f"{sum(s.params for s in stages):,} parameters in these stages.")
