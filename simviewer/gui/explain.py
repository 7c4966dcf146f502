"""Grad-CAM in the window: a worker that explains pairs on demand, and the model's layer table.

Explanations run on one worker thread with a network of its own (indexing and searching use
others), a few pairs per pass, in the order the window asks for them; results are cached per
(model, layer, pair).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QDialog, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout

from ..core import gradcam
from ..core.embedder import Embedder
from ..core.images import load_image
from ..core.model_spec import ModelSpec
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


# Receptive fields depend on the architecture and input size only, and take seconds to measure:
# once per process for each.
_STAGES: dict[tuple[str, int], dict[str, gradcam.StageInfo]] = {}


def _stages_of(embedder: Embedder) -> dict[str, gradcam.StageInfo]:
    key = (embedder.arch, embedder.preprocess.crop)
    if key not in _STAGES:
        _STAGES[key] = {s.name: s for s in gradcam.receptive_fields(embedder)}
    return _STAGES[key]


def explain_batch(explainer: gradcam.Explainer, pairs: list[tuple[Image.Image, Image.Image]]
                  ) -> list[gradcam.PairExplanation]:
    """Explain several pairs in one forward and one backward pass.

    The batch is a0, b0, a1, b1, ...; the target sums each pair's cos(f_a, sg(f_b)) + cos(sg(f_a), f_b)
    (core.gradcam.Explainer), and since no term mixes two pairs, each photo's gradient (so its
    map) is exactly the one its pair alone would give.
    """
    pre = explainer.embedder.preprocess
    batch = torch.stack([pre(im) for pair in pairs for im in pair]).to(explainer.embedder.device)

    def target(out: torch.Tensor) -> torch.Tensor:
        fa, fb = out[0::2], out[1::2]
        cos = torch.nn.functional.cosine_similarity
        return (cos(fa, fb.detach(), dim=1) + cos(fa.detach(), fb, dim=1)).sum()

    cams, out = gradcam.grad_cam(explainer.model, batch, explainer.layer, target)
    scores = torch.nn.functional.cosine_similarity(out[0::2], out[1::2], dim=1)
    return [
        gradcam.PairExplanation(
            float(scores[i]), gradcam.normalise(cams[2 * i]), gradcam.normalise(cams[2 * i + 1]),
            gradcam.CropGeometry.for_image(a.width, a.height, pre),
            gradcam.CropGeometry.for_image(b.width, b.height, pre), explainer.layer,
        )
        for i, (a, b) in enumerate(pairs)
    ]


class ExplainService(QObject):
    """Explains (query, match) pairs on a worker; ``explained`` arrives on the GUI thread.

    ``want(query, matches)`` replaces whatever is still waiting with these pairs, in this order
    (the results on screen, top first); ``request`` puts one pair before everything else (the
    compare view). The worker takes up to BATCH waiting pairs of one layer at a time and explains
    them in one pass (``explain_batch``), so the first maps show after one batch, not after all.
    """

    BATCH = 4

    explained = Signal(object)  # ExplainedPair
    failed = Signal(str, str, str)  # query, match, reason
    stages_ready = Signal(object, int)  # list[StageInfo] of the current model, its input side
    layers_ready = Signal(object)  # list[str]: the layers that can be explained, input side first

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.model: ModelSpec | None = None  # the model of the library's index
        self.layer: str | None = None
        self.layers: list[str] = []
        self.cache: dict[tuple, ExplainedPair] = {}
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._pending: set[tuple] = set()
        self._worker: GeneratorThread | None = None
        self._shut = False

    def set_model(self, model: ModelSpec) -> None:
        if self.model is not None and model.fingerprint == self.model.fingerprint:
            return
        self.stop()
        self.model = model
        self.layer = gradcam.DEFAULT_LAYERS[model.arch]
        self.layers = []
        self._queue = deque()
        self._pending.clear()
        self.layers_ready.emit([])  # the new model's arrive with its worker

    def set_layer(self, layer: str) -> None:
        """Explain with *layer* from now on (maps of each layer are kept apart)."""
        if layer and layer != self.layer:
            self.layer = layer
            self.want("", [])

    def key(self, query: str, match: str) -> tuple:
        assert self.model is not None
        return (self.model.fingerprint, self.layer, query, match)

    def get(self, query: str, match: str) -> ExplainedPair | None:
        return self.cache.get(self.key(query, match)) if self.model else None

    def computing(self, query: str, match: str) -> bool:
        """True while the pair waits or is being explained."""
        return self.model is not None and self.key(query, match) in self._pending

    def request(self, query: str, match: str) -> None:
        """Explain this pair before anything that waits."""
        if self.model is None:
            return
        key = self.key(query, match)
        if key in self.cache:
            return
        with self._lock:
            if key in self._pending:
                with contextlib.suppress(ValueError):
                    self._queue.remove((key, query, match))
            self._queue.appendleft((key, query, match))
        self._pending.add(key)
        self._ensure_worker()

    def want(self, query: str, matches: list[str]) -> None:
        """Explain (query, m) for each of *matches* in order, instead of what still waits."""
        if self.model is None:
            return
        items = [(self.key(query, m), query, m) for m in matches if self.key(query, m) not in self.cache]
        with self._lock:
            dropped = [it[0] for it in self._queue if it[0] != "stages"]
            self._queue = deque([it for it in self._queue if it[0] == "stages"] + items)
        self._pending.difference_update(dropped)
        self._pending.update(key for key, _, _ in items)
        if items:
            self._ensure_worker()

    def request_stages(self) -> None:
        if self.model is not None:
            with self._lock:
                self._queue.appendleft(("stages", None, None))
            self._ensure_worker()

    def _take(self) -> list:
        """Up to BATCH waiting items of one layer (or one "stages" item)."""
        with self._lock:
            if not self._queue:
                return []
            first = self._queue.popleft()
            if first[0] == "stages":
                return [first]
            taken = [first]
            while self._queue and len(taken) < self.BATCH and self._queue[0][0] != "stages" \
                    and self._queue[0][0][1] == first[0][1]:
                taken.append(self._queue.popleft())
            return taken

    def _ensure_worker(self) -> None:
        if self._shut or (self._worker is not None and self._worker.isRunning()):
            return
        assert self.model is not None
        worker = GeneratorThread(lambda stop, model=self.model: self._run(model, stop), "explain", self)
        worker.yielded.connect(self._on_event)
        worker.failed.connect(lambda exc: self.failed.emit("", "", str(exc)))
        self._worker = worker
        worker.start()

    def _run(self, model: ModelSpec, stop):
        """The worker: one network (fp32, for gradients), an Explainer per layer asked for."""
        embedder = Embedder.from_spec(model, precision="fp32")
        explainers: dict[str, gradcam.Explainer] = {}
        pre = embedder.preprocess
        stage_info: dict[str, gradcam.StageInfo] = _STAGES.get((model.arch, pre.crop), {})
        yield ("layers", [name for name, _ in gradcam.stages(embedder.model)])
        while not stop():
            items = self._take()
            if not items:
                time.sleep(0.05)
                continue
            if items[0][0] == "stages":
                stage_info = stage_info or _stages_of(embedder)
                yield ("stages", list(stage_info.values()), pre.crop)
                continue
            layer = items[0][0][1]
            try:
                explainer = explainers.get(layer) or explainers.setdefault(layer, gradcam.Explainer(embedder, layer))
                stage_info = stage_info or _stages_of(embedder)
            except Exception as exc:  # a layer that cannot be explained: say so for each pair
                for key, query, match in items:
                    yield ("failed", key, query, match, str(exc))
                continue
            yield from self._explain_items(explainer, items, stage_info, pre)

    @staticmethod
    def _explain_items(explainer, items, stage_info, pre):
        photos, ok = [], []
        for key, query, match in items:
            try:
                photos.append((load_image(query, pre.resize).image, load_image(match, pre.resize).image))
                ok.append((key, query, match))
            except Exception as exc:  # a file vanished or cannot be decoded: say which
                yield ("failed", key, query, match, str(exc))
        if not ok:
            return
        try:
            results = explain_batch(explainer, photos)
        except Exception as exc:
            for key, query, match in ok:
                yield ("failed", key, query, match, str(exc))
            return
        stage = stage_info.get(explainer.layer) or next(iter(stage_info.values()))
        for (key, query, match), (a, b), result in zip(ok, photos, results):
            ta, tb = a.copy(), b.copy()
            ta.thumbnail((THUMB_SIZE, THUMB_SIZE))
            tb.thumbnail((THUMB_SIZE, THUMB_SIZE))
            yield ("done", key, ExplainedPair(query, match, result, a.size, b.size, ta, tb, stage, pre.crop))

    def _on_event(self, event) -> None:
        kind = event[0]
        if kind == "layers":
            self.layers = event[1]
            self.layers_ready.emit(event[1])
        elif kind == "stages":
            self.stages_ready.emit(event[1], event[2])
        elif kind == "done":
            _, key, pair = event
            self._pending.discard(key)
            if self.model is not None and key[0] == self.model.fingerprint:
                self.cache[key] = pair
                self.explained.emit(pair)
        else:
            _, key, query, match, reason = event
            self._pending.discard(key)
            self.failed.emit(query, match, reason)

    def shutdown(self) -> None:
        """Stop for good (the window closes): later requests start nothing."""
        self._shut = True
        self.stop()

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
            "cells are one stride apart. Heat maps are drawn from the last stage unless you pick another "
            "layer beside “Heat maps”: a deep stage's cell summarises a large part of the photo (a field "
            "wider than the input counts the padding around it), an earlier stage's cells are finer."
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
