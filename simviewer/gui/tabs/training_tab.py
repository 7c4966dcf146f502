"""The Training tab: fine-tune the embedder on a folder of photos, with a live plot and a Stop button.

Training is :func:`core.training.train` on a :class:`GeneratorThread`; it checks the stop flag
between steps, so Stop takes effect within one step and the best checkpoint so far stays on disk.
The plot has the loss of every step, a smoothed loss, and the validation metrics of every epoch
on a second axis (QtCharts).

By default a run starts from the recommended pretrained model (:func:`core.training.starting_model`);
which one, and why, is worked out on a worker when the tab is first shown (it may look at the
network) and written under the choice. Only an epoch that beats the starting model is saved, so
"Use this model" is offered only for a model that is better than the one the run started from.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core import training
from ...core.embedder import ModelChoice
from ...core.paths import find_checkpoints
from ...core.registry import ARCHITECTURES
from ..widgets.loss_chart import LossChart
from ..workers import GeneratorThread

log = logging.getLogger(__name__)

MODE_NAMES = {"auto": "Detect from the folder", "supervised": "Labelled: one sub-folder per class",
              "selfsup": "No labels: match edited copies"}
DEFAULT_START = "default"  # the weights choice that means "the recommended pretrained model"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class WrappedLabel(QLabel):
    """A word-wrapped label that keeps the height of all its lines: a form layout would squeeze it
    to one line and cut the rest (the starting model's reason, the mode found) at 1024 px."""

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt API)
        super().setText(text)
        self._fit()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        width = self.width() if self.width() > 1 else self.sizeHint().width()
        needed = self.heightForWidth(width)
        if needed > 0 and needed != self.minimumHeight():
            self.setMinimumHeight(needed)


class TrainingForm(QGroupBox):
    """What to train on and how: the photos, the mode, the starting model and the run's settings.

    Whether the photos have labels is found out on a worker when the folder is chosen, and the
    recommended starting model when the form is first shown (it may look at the network)."""

    def __init__(self, session, parent=None) -> None:
        super().__init__("Fine-tune the model on your photos", parent)
        self.session = session
        self.settings = session.settings
        self.detected: tuple[str, int, int] | None = None
        self._detect_worker: GeneratorThread | None = None
        self.default_choice: ModelChoice | None = None  # the recommended starting model, once known
        self._default_worker: GeneratorThread | None = None
        self._build_source()
        self._build_run()
        self._build_layout()
        if self.dataset_edit.text():
            self.detect()

    # -- layout --------------------------------------------------------------------------------
    def _build_source(self) -> None:
        """The photos, the mode and the starting model."""
        s = self.settings
        self.dataset_edit = QLineEdit(str(s.value("train/dataset", "")))
        self.dataset_edit.setPlaceholderText("A folder of photos (sub-folders: classes)")
        self.dataset_edit.editingFinished.connect(self.detect)
        browse = QPushButton("Choose…")
        browse.clicked.connect(self.choose_dataset)
        self.library_button = QPushButton("Use the open library")
        self.library_button.clicked.connect(self.use_library)
        self.ds_row = QHBoxLayout()
        self.ds_row.addWidget(self.dataset_edit, 1)
        self.ds_row.addWidget(browse)
        self.detected_label = WrappedLabel()
        self.mode_box = QComboBox()
        for key, text in MODE_NAMES.items():
            self.mode_box.addItem(text, key)
        self.arch_box = QComboBox()
        self.arch_box.addItems(list(ARCHITECTURES))
        self.arch_box.setCurrentText(str(s.value("train/arch", "resnet18")))
        self.arch_box.currentTextChanged.connect(self._describe_start)
        self.model_label = WrappedLabel()
        self.weights_box = QComboBox()
        self.fill_weights()
        self.weights_box.currentIndexChanged.connect(self._weights_changed)

    def _build_run(self) -> None:
        """The run's settings: size, batch, learning rate, epochs, early stop, threads, output."""
        s = self.settings
        self.size_spin = QSpinBox(minimum=32, maximum=512, singleStep=16, value=int(s.value("train/size", 224)))
        self.size_spin.setToolTip("Smaller trains faster; the trained model embeds at this size")
        self.size_spin.setSuffix(" px")
        self.batch_spin = QSpinBox(minimum=2, maximum=512, value=int(s.value("train/batch", 32)))
        self.lr_spin = QDoubleSpinBox(decimals=6, minimum=0.0, maximum=0.5, singleStep=0.0001)
        self.lr_spin.setSpecialValueText("automatic")
        self.lr_spin.setValue(float(s.value("train/lr", 0.0)))
        self.lr_spin.setToolTip("0 = automatic: 1e-3 from an untrained network, 1e-4 from trained weights")
        self.epochs_spin = QSpinBox(minimum=1, maximum=1000, value=int(s.value("train/epochs", 10)))
        defaults = training.TrainConfig(dataset="")
        self.patience_spin = QSpinBox(minimum=0, maximum=100, value=int(s.value("train/patience", defaults.patience)))
        self.patience_spin.setSpecialValueText("never stop early")
        self.patience_spin.setToolTip("Stop when the validation metric has not improved for this many epochs")
        self.freeze_box = QCheckBox("Train only the last stage (faster, needs fewer photos)")
        self.freeze_box.setChecked(s.value("train/freeze", "false") == "true")
        self.threads_spin = QSpinBox(minimum=1, maximum=256, value=training.default_train_threads())
        self.threads_spin.setToolTip("CPU threads for training; fewer keeps the computer more responsive")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("models/DATASET-MODEL-MODE.pt")

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("Photos:", self.ds_row)
        form.addRow("", self.library_button)
        form.addRow("", self.detected_label)
        form.addRow("Mode:", self.mode_box)
        form.addRow("Model:", self.arch_box)
        form.addRow("Start from:", self.weights_box)
        form.addRow("", self.model_label)
        form.addRow("Image size:", self.size_spin)
        form.addRow("Batch size:", self.batch_spin)
        form.addRow("Learning rate:", self.lr_spin)
        form.addRow("Epochs:", self.epochs_spin)
        form.addRow("Early stop after:", self.patience_spin)
        form.addRow("", self.freeze_box)
        form.addRow("CPU threads:", self.threads_spin)
        form.addRow("Save as:", self.out_edit)
        self.setLayout(form)

    def fill_weights(self) -> None:
        box = self.weights_box
        current = box.currentData() or str(self.settings.value("train/weights", DEFAULT_START))
        box.blockSignals(True)
        box.clear()
        box.addItem("Recommended pretrained model", DEFAULT_START)
        box.addItem("ImageNet weights of the model chosen above", "imagenet")
        box.addItem("Untrained (random weights)", "none")
        for ckpt in find_checkpoints():
            box.addItem(f"Checkpoint: {ckpt.name} (resume)", str(ckpt))
        i = box.findData(current)
        box.setCurrentIndex(i if i >= 0 else 0)
        box.blockSignals(False)
        self._describe_start()

    # -- the starting model ----------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self.default_choice is None and self._default_worker is None:
            self.find_default_model()

    def find_default_model(self) -> None:
        """Work out the recommended starting model on a worker: it may try to reach the download server."""
        if self._default_worker is not None and self._default_worker.isRunning():
            return

        def run(_stop):
            yield training.starting_model()

        worker = GeneratorThread(run, "train-default-model", self)
        worker.yielded.connect(self._default_found)
        worker.failed.connect(self._default_failed)
        self._default_worker = worker
        self._describe_start()
        worker.start()

    def _default_found(self, choice: ModelChoice) -> None:
        self.default_choice = choice
        self._describe_start()

    def _default_failed(self, exc: Exception) -> None:
        self.model_label.setText(f"<span style='color:#c0392b'>Cannot choose a pretrained model: {exc}</span>")

    def _weights_changed(self) -> None:
        if self.weights_box.currentData() == DEFAULT_START and self.default_choice is None and self.isVisible():
            self.find_default_model()
        self._describe_start()

    def _describe_start(self) -> None:
        """Say under the choice which network a run starts from; the model box only matters when
        the weights are ImageNet's or none (the default and a checkpoint bring their own)."""
        weights = self.weights_box.currentData()
        own_model = weights in ("imagenet", "none")
        self.arch_box.setEnabled(own_model)
        self.arch_box.setToolTip("" if own_model else "Set by the starting weights")
        arch = self.arch_box.currentText()
        label = ARCHITECTURES[arch].label if arch in ARCHITECTURES else arch
        if weights == DEFAULT_START:
            choice = self.default_choice
            if choice is None:
                text = "The recommended pretrained model (finding out which one is available…)"
            else:
                text = f"Recommended: {training.describe_start(choice)}."
                if choice.arch in ARCHITECTURES:
                    self.arch_box.blockSignals(True)
                    self.arch_box.setCurrentText(choice.arch)
                    self.arch_box.blockSignals(False)
        elif weights == "imagenet":
            where = ("installed with simviewer" if ARCHITECTURES.get(arch) and ARCHITECTURES[arch].bundled
                     else "downloaded once, then cached")
            text = f"{label} with its ImageNet weights ({where})."
        elif weights == "none":
            text = (f"An untrained {label} (random weights): it knows only what these photos teach it, and "
                    "needs far more of them than a pretrained model.")
        elif weights:
            text = (f"Continues {Path(weights).name} when it was trained the same way (mode, classes, freeze "
                    "setting); otherwise starts from its weights.")
        else:
            text = ""
        self.model_label.setText(text)

    # -- dataset -------------------------------------------------------------------------------
    def choose_dataset(self) -> None:
        start = self.dataset_edit.text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Photos to train on", start)
        if folder:
            self.set_dataset(folder)

    def use_library(self) -> None:
        library = self.session.library
        if library is None:
            self.detected_label.setText("Open a folder first, or choose one to train on.")
            return
        self.set_dataset(str(library.folder))

    def set_dataset(self, folder: str) -> None:
        self.dataset_edit.setText(folder)
        self.detect()

    def detect(self) -> None:
        """Find out on a worker (a big folder takes a moment to walk) whether it has labels."""
        folder = self.dataset_edit.text().strip()
        if not folder:
            return
        self.detected = None
        self.detected_label.setText("Looking at the folder…")

        def run(_stop):
            yield folder, training.detect_mode(folder)

        worker = GeneratorThread(run, "train-detect", self)
        worker.yielded.connect(self._detected)
        worker.failed.connect(lambda exc: self.detected_label.setText(f"<span style='color:#c0392b'>{exc}</span>"))
        self._detect_worker = worker
        worker.start()

    def _detected(self, result) -> None:
        folder, (mode, classes, images) = result
        if folder != self.dataset_edit.text().strip():
            return
        self.detected = (mode, classes, images)
        if mode == "supervised":
            text = (f"{images} photos in {classes} labelled sub-folders: supervised (photos of a class "
                    "end up close together)")
        else:
            text = (f"{images} photos, no labels: self-supervised (learns to match each photo with "
                    "edited copies: crops, JPEG, colour, mirror, rotation, borders, captions)")
        self.detected_label.setText(text)

    # -- the run it describes -------------------------------------------------------------------------------
    def config(self) -> training.TrainConfig:
        """The run the form describes. The recommended start leaves model and weights to
        :func:`core.training.starting_model`, and a checkpoint brings its own model."""
        out = self.out_edit.text().strip() or None
        weights = self.weights_box.currentData()
        own_model = weights in ("imagenet", "none")
        return training.TrainConfig(
            dataset=self.dataset_edit.text().strip(),
            mode=self.mode_box.currentData(),
            arch=self.arch_box.currentText() if own_model else None,
            weights=None if weights == DEFAULT_START else weights,
            image_size=self.size_spin.value(),
            batch_size=self.batch_spin.value(),
            lr=self.lr_spin.value() or None,
            epochs=self.epochs_spin.value(),
            freeze=self.freeze_box.isChecked(),
            threads=self.threads_spin.value(),
            patience=self.patience_spin.value(),
            out=out,
        )

    def remember(self, cfg: training.TrainConfig) -> None:
        s = self.settings
        if cfg.arch is not None:
            s.setValue("train/arch", cfg.arch)
        for key, value in (("dataset", cfg.dataset), ("weights", cfg.weights or DEFAULT_START),
                           ("size", cfg.image_size), ("batch", cfg.batch_size), ("lr", cfg.lr or 0.0),
                           ("epochs", cfg.epochs), ("patience", cfg.patience),
                           ("freeze", "true" if cfg.freeze else "false")):
            s.setValue(f"train/{key}", value)



class TrainingTab(QWidget):
    """Runs :func:`core.training.train` on a worker with a live plot, Stop, and the results."""

    model_trained = Signal(str)  # the checkpoint a run saved (the window offers it as a model)
    use_model_requested = Signal(str, str)  # (arch, weights): index the open library with this model

    def __init__(self, session, feedback, parent=None) -> None:
        super().__init__(parent)
        self.session, self.feedback = session, feedback
        self.worker: GeneratorThread | None = None
        self.running = False
        self.stop_requested_at: int | None = None  # global step when Stop was pressed
        self.steps_after_stop = 0
        self.before: dict[str, float] = {}
        self.done: training.TrainingDone | None = None
        self.dataset_info: training.DatasetReady | None = None
        self._last_step_paint = 0.0
        self.form = TrainingForm(session)
        self._build_ui()

    # -- layout --------------------------------------------------------------------------------
    def _build_left(self) -> QWidget:
        self.start_button = QPushButton("Start training")
        self.start_button.setStyleSheet("font-weight: bold;")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stops after the current step; the best checkpoint so far is kept")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)

        self.results = QTableWidget(0, 4)
        self.results.setHorizontalHeaderLabels(["metric", "before", "best epoch", "change"])
        self.results.verticalHeader().setVisible(False)
        self.results.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.results.setMaximumHeight(130)
        self.use_button = QPushButton("Use this model for the library")
        self.use_button.setToolTip("Re-index the open library with the trained model")
        self.use_button.clicked.connect(self.use_model)
        self.use_button.setEnabled(False)

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(self.form)
        lv.addLayout(buttons)
        lv.addWidget(QLabel("Before and after training (held-out photos):"))
        lv.addWidget(self.results)
        lv.addWidget(self.use_button)
        lv.addStretch(1)
        return left

    def _build_ui(self) -> None:
        self.chart = LossChart()
        self.progress = QProgressBar()
        # The run's line ("epoch 1, step 14/20 · loss … · about 21 s left") wraps under the bar: beside
        # it, its width would make the page wider than a small screen.
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(5000)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.addWidget(self.chart, 3)
        rv.addWidget(self.progress)
        rv.addWidget(self.progress_label)
        rv.addWidget(self.log, 1)

        split = QSplitter()
        split.addWidget(self._build_left())
        split.addWidget(right)
        split.setSizes([430, 850])
        lay = QVBoxLayout(self)
        lay.addWidget(split)

    def start(self) -> None:
        if self.running:
            return
        cfg = self.form.config()
        if not cfg.dataset:
            self.feedback.error("No photos chosen", "Choose a folder of photos to train on.")
            return
        try:
            cfg.checked()
        except training.TrainingError as exc:
            self.feedback.error("Cannot start training", str(exc))
            return
        self.form.remember(cfg)
        self.chart.clear()
        self.log.clear()
        self.results.setRowCount(0)
        self.use_button.setEnabled(False)
        self.done, self.dataset_info, self.before = None, None, {}
        self.stop_requested_at, self.steps_after_stop = None, 0
        self._last_global = 0
        what = cfg.arch or (Path(cfg.weights).name if cfg.weights else "the recommended pretrained model")
        self._log(f"Training {what} on {cfg.dataset}.")
        worker = GeneratorThread(lambda stop: training.train(cfg, should_stop=stop), "training", self)
        worker.yielded.connect(self._event)
        worker.failed.connect(self._failed)
        worker.done.connect(self._finished)
        self.worker = worker
        self.running = True
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress_label.setStyleSheet("")
        self.progress_label.setText("Reading the photos…")
        worker.start()

    def stop(self) -> None:
        if self.worker is not None and self.running:
            self.worker.stop()
            self.stop_requested_at = self._last_global
            self.stop_button.setEnabled(False)
            self.progress_label.setText("Stopping after this step…")
            self._log("Stop pressed: finishing the current step; the best checkpoint so far is kept.")

    def _log(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    def _event(self, ev) -> None:
        if isinstance(ev, training.Preparing):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.progress_label.setText(f"Reading photos: {ev.done} of {ev.total}")
        elif isinstance(ev, training.Info):
            self._log(ev.message)
        elif isinstance(ev, training.DatasetReady):
            self.dataset_info = ev
            what = (f"supervised, {len(ev.classes)} classes" if ev.mode == "supervised"
                    else "self-supervised, no labels")
            base = {"none": "untrained weights", "imagenet": "ImageNet weights"}.get(ev.base_weights,
                                                                                   Path(ev.base_weights).name)
            self._log(f"{ev.n_train} photos to train on, {ev.n_val} held out ({what}); {ev.arch} from "
                      f"{base}, {ev.image_size} px, batch {ev.batch_size}, {ev.steps_per_epoch} steps "
                      f"per epoch on {ev.device} ({ev.precision}, {ev.threads} threads).")
            if ev.skipped:
                self._log(f"{len(ev.skipped)} files skipped: " + "; ".join(f"{Path(p).name}: {r}"
                                                                             for p, r in ev.skipped[:5]))
            self._log(f"An epoch is saved to {ev.out} only when it beats the starting model on the held-out "
                      "photos.")
            self.progress_label.setText("Measuring the model before training…")
        elif isinstance(ev, training.BeforeTraining):
            self.before = ev.metrics
            self._log("Before training: " + self._metrics_text(ev.metrics))
            self.chart.add_metrics(0, ev.metrics)
            self._fill_results(ev.metrics, None)
        elif isinstance(ev, training.StepEvent):
            self._last_global = ev.global_step
            if self.stop_requested_at is not None:
                self.steps_after_stop += 1
            if self.progress.maximum() != ev.total_steps:
                self.progress.setRange(0, ev.total_steps)
                self.chart.set_total_steps(ev.total_steps)
            self.progress.setValue(ev.global_step)
            self.chart.add_step(ev.global_step, ev.loss)
            if self.stop_requested_at is None:
                self.progress_label.setText(
                    f"epoch {ev.epoch}, step {ev.step}/{ev.steps_per_epoch} · loss {ev.loss:.4f} · "
                    f"lr {ev.lr:.2g} · {ev.images_per_second:.1f} img/s · about {_duration(ev.eta)} left")
        elif isinstance(ev, training.EpochEnd):
            self.chart.add_metrics(self._last_global, ev.metrics)
            mark = " (best so far)" if ev.improved else ""
            self._log(f"Epoch {ev.epoch}: loss {ev.train_loss:.4f}, " + self._metrics_text(ev.metrics)
                      + f", lr {ev.lr:.2g}, {ev.seconds:.1f} s + {ev.val_seconds:.1f} s validation{mark}")
            if ev.improved:
                self._fill_results(self.before, ev.metrics)
        elif isinstance(ev, training.CheckpointSaved):
            self._log(f"Saved {ev.path} ({ev.metric} {ev.value:.4f}, epoch {ev.epoch}).")
        elif isinstance(ev, training.TrainingDone):
            self.done = ev
            self._log(ev.summary())
            self._show_results(ev)

    @staticmethod
    def _metrics_text(metrics: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())

    def _show_results(self, done: training.TrainingDone) -> None:
        self._fill_results(done.before, done.best)
        usable = bool(done.best_path) and Path(done.best_path).is_file()
        self.use_button.setEnabled(usable)
        self.use_button.setToolTip("Re-index the open library with the trained model" if usable else
                                   "No model of this run beat the one it started from" if done.start_better else
                                   "No epoch was completed")
        self.progress_label.setText(done.summary())
        self.progress_label.setStyleSheet("color: #c0392b;" if done.start_better and not done.best_path else "")

    def _fill_results(self, before: dict[str, float], after: dict[str, float] | None) -> None:
        """Before training, and the best epoch so far (the checkpoint that is kept)."""
        after = after or {}
        names = list(before) or list(after)
        self.results.setRowCount(len(names))
        for r, name in enumerate(names):
            b, a = before.get(name), after.get(name)
            cells = [name, f"{b:.3f}" if b is not None else "—", f"{a:.3f}" if a is not None else "—",
                     f"{a - b:+.3f}" if a is not None and b is not None else "—"]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 3 and a is not None and b is not None:
                    item.setForeground(QColor(39, 174, 96) if a >= b else QColor(192, 57, 43))
                self.results.setItem(r, c, item)

    def _failed(self, exc: Exception) -> None:
        self._log(f"Training failed: {exc}")
        self.feedback.error("Training failed", str(exc))

    def _finished(self, _completed: bool) -> None:
        self.running = False
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.form.fill_weights()
        if self.done is not None and self.done.best_path:
            self.model_trained.emit(self.done.best_path)

    def use_model(self) -> None:
        """Index the open library with the best checkpoint of this run."""
        if self.done is None or not self.done.best_path:
            return
        if self.session.library is None:
            self.feedback.error("No library open", "Open a folder first; it will be indexed with this model.")
            return
        arch = self.dataset_info.arch if self.dataset_info else self.form.arch_box.currentText()
        self.use_model_requested.emit(arch, self.done.best_path)
