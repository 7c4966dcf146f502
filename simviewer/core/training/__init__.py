"""Fine-tune the embedder on the user's own photos.

Two modes:

* ``supervised``: the dataset folder holds one sub-folder per class (every image under a
  sub-folder belongs to it). The loss is NormSoftmax: the cross-entropy of the cosines between a
  photo's embedding and one learned proxy per class, at temperature 0.05. It trains the embedding
  itself (no classifier is kept), so photos of one class end up close together.
* ``selfsup``: any folder, the library itself included, no labels. NT-Xent (SimCLR) between two
  augmented views of each photo, with the edits that make photos duplicates: mild crops, JPEG
  re-encoding, colour changes, grey, mirror, 90-degree rotations, borders and caption bands. The
  network learns to match a photo with edited copies of itself.

The package reads like a training reference: :mod:`.data` (scan, decode, split, batches),
:mod:`.augment`, :mod:`.losses`, :mod:`.engine` (:func:`train_one_epoch`, :func:`evaluate`),
:mod:`.checkpoint` (make, save, load, resume), :mod:`.model` (starting network, freezing,
optimizer), :mod:`.config` and :mod:`.events`; this module holds the recipe.

:func:`train` turns a :class:`TrainConfig` into data, a model, an optimizer and a scheduler and
hands them to :func:`fit`, which yields one typed event per step and per epoch and ends with
:class:`TrainingDone`. Both check ``should_stop`` between steps. The network trained is the
headless backbone the embedder uses, from pretrained weights unless an untrained network is asked
for (:func:`starting_model`).

The starting model is scored on the held-out photos before the first step, and it is the one to
beat: an epoch is written only when its validation metric is strictly higher than the starting
model's and every better epoch before it. It is written atomically as a plain-dict checkpoint that
``Embedder(arch, weights=PATH)`` and ``simviewer index --weights PATH`` load
(``torch.load(weights_only=True)``), and that :func:`train` resumes from. When no epoch beats the
start, nothing is written (:attr:`TrainingDone.start_better`): the run's weights are worse than
what the user already has, so there is neither a model to offer nor a state worth resuming (a
later run starts again from the better starting weights). A resumed checkpoint is the starting
model of its run: only an epoch that beats it replaces it as the best.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import embedder
from ..embedder import ModelChoice, Resolved, WeightsSpec, WeightsUnavailable, resolve
from ..registry import ARCHITECTURES
from .augment import CAPTIONS, VAL_EDITS, add_caption, class_view, duplicate_view, jpeg_roundtrip
from .checkpoint import (
    CHECKPOINT_VERSION,
    base_checkpoint,
    checkpoint_meta,
    clean_stale_temporaries,
    load_checkpoint,
    make_checkpoint,
    resume,
    resume_problem,
    save_checkpoint,
)
from .config import (
    MODES,
    TrainConfig,
    default_out_path,
    default_train_threads,
    output_path,
    pick_device,
    use_bf16,
)
from .data import (
    RESIZE_RATIO,
    Data,
    DatasetScan,
    Preprocess,
    TrainBatches,
    ValBatches,
    detect_mode,
    load_data,
    natural_key,
    scan_dataset,
    split_selfsup,
    split_supervised,
    training_mode,
)
from .engine import Clock, embed_batches, evaluate, train_one_epoch
from .events import (
    METRICS,
    BeforeTraining,
    CheckpointSaved,
    DatasetReady,
    EpochEnd,
    Info,
    Preparing,
    StepEvent,
    TrainingDone,
    TrainingError,
    TrainingEvent,
)
from .losses import NTXentLoss, ProxyLoss, default_temperature, make_criterion
from .model import describe_start, freeze_all_but_last_stage, last_stage, make_optimizer, starting_model

_CAPTIONS = CAPTIONS  # the name calibration imports

__all__ = [
    "CHECKPOINT_VERSION", "METRICS", "MODES", "RESIZE_RATIO", "VAL_EDITS", "_CAPTIONS",
    "BeforeTraining", "CheckpointSaved", "DatasetReady", "DatasetScan", "EpochEnd", "Info", "NTXentLoss",
    "Preparing", "ProxyLoss", "StepEvent", "TrainBatches", "TrainConfig", "TrainingDone", "TrainingError",
    "TrainingEvent", "ValBatches",
    "add_caption", "class_view", "clean_stale_temporaries", "default_out_path", "default_train_threads",
    "describe_start", "detect_mode", "duplicate_view", "embed_batches", "evaluate", "fit",
    "freeze_all_but_last_stage", "jpeg_roundtrip", "last_stage", "load_checkpoint", "natural_key", "pick_device",
    "resolve", "run_to_end", "save_checkpoint", "scan_dataset", "split_selfsup", "split_supervised",
    "starting_model", "train", "train_one_epoch",
]

log = logging.getLogger(__name__)


# -- fit: epochs of train_one_epoch and evaluate, the best epoch saved --------------------------
@dataclass
class _Run:
    """The state of a :func:`fit` run: what it trains, the metrics to beat, the best epoch and its
    checkpoint."""

    metric: str
    clock: Clock
    epoch: int  # the last completed epoch
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loss_fn: object
    history: dict
    checkpoint_path: str | os.PathLike | None
    checkpoint_meta: dict | None
    before: dict[str, float] = field(default_factory=dict)
    best_value: float | None = None
    best: dict[str, float] | None = None
    best_epoch: int | None = None
    best_path: str | None = None
    since_best: int = 0
    epoch_seconds: list[float] = field(default_factory=list)

    def end_epoch(self, epoch: int, metrics: dict[str, float], losses: list[float], seconds: float,
                  val_seconds: float) -> Iterator[TrainingEvent]:
        """Epoch *epoch* ended with *metrics*: step the scheduler, record it, write it when it beats
        the best so far; yields its :class:`EpochEnd` (and :class:`CheckpointSaved`)."""
        self.epoch = epoch
        self.epoch_seconds.append(seconds)
        value = metrics[self.metric]
        improved = value > self.best_value
        if self.scheduler is not None:
            self.scheduler.step(value)
        lr = float(self.optimizer.param_groups[0]["lr"])
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        self.history["epochs"].append({"epoch": epoch, "metrics": dict(metrics), "loss": mean_loss, "lr": lr,
                                       "seconds": seconds, "val_seconds": val_seconds})
        saved = None
        if improved:
            self.best_value, self.best, self.best_epoch, self.since_best = value, dict(metrics), epoch, 0
            if self.checkpoint_path is not None:
                ckpt = make_checkpoint(self.checkpoint_meta, self.model, epoch, self.metric, metrics, self.history,
                                       self.optimizer, self.scheduler, self.loss_fn)
                self.best_path = os.fspath(save_checkpoint(self.checkpoint_path, ckpt))
                saved = CheckpointSaved(path=self.best_path, epoch=epoch, metric=self.metric, value=value)
        else:
            self.since_best += 1
        yield EpochEnd(epoch=epoch, last_epoch=self.clock.last_epoch, metrics=dict(metrics), train_loss=mean_loss,
                       lr=lr, seconds=seconds, val_seconds=val_seconds, improved=improved,
                       best_epoch=self.best_epoch, best_value=self.best_value)
        if saved is not None:
            yield saved

    def done(self, reason: str) -> TrainingDone:
        return TrainingDone(reason=reason, metric=self.metric, before=self.before, best=self.best,
                            best_epoch=self.best_epoch, best_path=self.best_path,
                            epochs_run=len(self.epoch_seconds), last_epoch=self.epoch,
                            seconds=self.clock.elapsed(), seconds_per_epoch=tuple(self.epoch_seconds),
                            start_better=bool(self.epoch_seconds) and self.best_epoch is None)


def _timed(fn, *args):
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scheduler_step_metric: str = "recall@1",
    should_stop: Callable[[], bool] | None = None,
    *,
    loss_fn: nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    patience: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_meta: dict | None = None,
    device: torch.device | str | None = None,
    bf16: bool = False,
    start_epoch: int = 0,
    history: dict | None = None,
    frozen: Sequence[nn.Module] = (),
    best_so_far: str | os.PathLike | None = None,
) -> Iterator[TrainingEvent]:
    """Train *model* for *epochs* epochs; a generator of events.

    *train_loader* yields ``(images, targets)`` and has a length (steps per epoch); the loss is
    ``loss_fn(model(images), targets)``. *val_loader* yields ``(images, groups)``; after every epoch
    (and once before the first step) :func:`evaluate` scores it, *scheduler* is stepped with the
    metric named *scheduler_step_metric* (a ReduceLROnPlateau in ``mode="max"``; ``None``: no
    scheduler), and an epoch that beats the best so far is written to *checkpoint_path* (atomically,
    with *checkpoint_meta*, the optimizer, scheduler and loss states and the history). The starting
    weights, scored before the first step, are the first "best so far": an epoch that does not beat
    them strictly is never written, and when none does, :class:`TrainingDone` says so
    (``start_better``) and points at no checkpoint. *patience*: stop after that many epochs without
    improvement (None or 0: never). *should_stop* is checked before every step and between
    validation batches; a stop leaves the best checkpoint as it is. *frozen* modules stay in eval
    mode while training (frozen batch-norm statistics). *best_so_far*: a checkpoint that holds the
    starting weights (one being resumed): when no epoch beats them, the final event points at that
    checkpoint, which is still the best model.
    """
    metric, stop = scheduler_step_metric, should_stop or (lambda: False)
    if metric not in METRICS:
        raise TrainingError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if epochs < 1:
        raise TrainingError("epochs must be at least 1")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    history = history if history is not None else {}
    for key in ("loss", "lr", "epochs"):
        history.setdefault(key, [])
    if len(train_loader) < 1:  # type: ignore[arg-type]
        raise TrainingError("the training set is too small for one batch")
    run = _Run(metric=metric, clock=Clock(len(train_loader), epochs, start_epoch), epoch=start_epoch, model=model,
               optimizer=optimizer, scheduler=scheduler, loss_fn=loss_fn, history=history,
               checkpoint_path=checkpoint_path, checkpoint_meta=checkpoint_meta)
    before, run.clock.val_seconds = _timed(evaluate, model, val_loader, device, bf16, stop)
    if before is None:
        yield run.done("stopped")
        return
    yield BeforeTraining(epoch=start_epoch, metrics=dict(before), seconds=run.clock.val_seconds)
    run.before, run.best_value = before, before[metric]  # the starting model is the one to beat
    run.best_path = os.fspath(best_so_far) if best_so_far is not None else None
    history.setdefault("before", dict(before))
    for epoch in range(start_epoch + 1, run.clock.last_epoch + 1):
        model.train()
        for m in frozen:
            m.eval()
        t_epoch = time.perf_counter()
        losses = yield from train_one_epoch(model, loss_fn, optimizer, iter(train_loader), device, epoch,
                                            clock=run.clock, stop=stop, bf16=bf16, history=history,
                                            best_path=run.best_path)
        train_seconds = time.perf_counter() - t_epoch
        metrics, val_seconds = (None, 0.0) if losses is None else _timed(evaluate, model, val_loader, device,
                                                                          bf16, stop)
        if metrics is None:
            yield run.done("stopped")
            return
        run.clock.val_seconds = val_seconds
        yield from run.end_epoch(epoch, metrics, losses, train_seconds, val_seconds)
        if patience and run.since_best >= patience and epoch < run.clock.last_epoch:
            yield run.done("early-stopped")
            return
    yield run.done("finished")


# -- train: the whole recipe --------------------------------------------------------------------
def _build_start(config: TrainConfig, choice: ModelChoice) -> tuple[TrainConfig, WeightsSpec, Resolved, nn.Module]:
    """*config* with the starting model filled in, its weights, and the network built from them
    (ImageNet weights are fetched here: offline, this fails before the slow part)."""
    cfg = replace(config, arch=choice.arch, weights=choice.weights).checked()
    spec = WeightsSpec.parse(cfg.weights)
    resolved = resolve(cfg.arch, spec)
    return cfg, spec, resolved, resolved.build()


@dataclass
class _Start:
    """The starting network of a run and where it came from."""

    choice: ModelChoice
    cfg: TrainConfig  # the run's config, its model filled in
    spec: WeightsSpec
    resolved: Resolved
    model: nn.Module
    checkpoint: dict | None  # the simviewer checkpoint the weights come from (resumed when it fits)


def _starting_network(config: TrainConfig) -> _Start:
    """The network a run starts from (:func:`starting_model`); when the default's ImageNet weights
    cannot be had, the pretrained model installed with simviewer instead."""
    choice = starting_model(config.arch, config.weights)
    spec = WeightsSpec.parse(choice.weights)
    ckpt = base_checkpoint(spec.path) if spec.kind == "file" and spec.path else None
    try:
        cfg, spec, resolved, model = _build_start(config, choice)
    except WeightsUnavailable as exc:
        if not choice.reason or ARCHITECTURES[choice.arch].bundled:
            raise  # the user's own choice (or the bundled model itself): say why it cannot be had
        log.info("%s", exc)
        choice = embedder.bundled_fallback(
            f"the {ARCHITECTURES[choice.arch].label} ImageNet weights could not be downloaded")
        cfg, spec, resolved, model = _build_start(config, choice)
    return _Start(choice=choice, cfg=cfg, spec=spec, resolved=resolved, model=model, checkpoint=ckpt)


@contextlib.contextmanager
def _torch_threads(device: torch.device, threads: int):
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _trainable(model: nn.Module, cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, list[nn.Module]]:
    """*model* on *device*, every weight trainable but the frozen stages'; and the frozen modules."""
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = freeze_all_but_last_stage(model, cfg.arch) if cfg.freeze else []
    return model.to(device, memory_format=torch.channels_last), frozen


def _stale_files_note(folder: Path) -> Iterator[Info]:
    removed, size = clean_stale_temporaries(folder)
    if removed:
        yield Info(message=f"removed {removed} unfinished checkpoint file{'s' * (removed != 1)} "
                           f"({size / 1e6:.1f} MB) that an interrupted save left in {folder}")


def train(config: TrainConfig, should_stop: Callable[[], bool] | None = None) -> Iterator[TrainingEvent]:
    """Run a whole training described by *config*; a generator of events (see :func:`fit`).

    Decodes the dataset once (short side ``image_size * 8/7``; unreadable files are skipped and
    listed in :class:`DatasetReady`), splits off the validation set, builds the headless backbone
    from the base weights (:func:`starting_model`; when the default's ImageNet weights turn out not
    to download, the pretrained model installed with simviewer instead) and trains it. The reason
    for a model the user did not choose is the first :class:`Info`. A simviewer checkpoint as base
    weights is resumed (its optimizer, scheduler and epoch count carry on) when it was trained on
    the same architecture, mode, freeze setting and classes; otherwise it is only a starting point.
    Only an epoch that beats the starting weights is saved (see :func:`fit`). Temporary files that
    a killed save left beside the checkpoint are removed first. Bad options, an empty folder and
    weights that cannot be had (TrainingError, EmbedderError / WeightsUnavailable) raise from the
    first ``next()``, before any image is decoded.
    """
    config.checked()
    stop = should_stop or (lambda: False)
    scan = scan_dataset(config.dataset)
    mode = training_mode(scan, config.mode)
    device = pick_device(config.device)
    bf16 = use_bf16(config.precision, device)
    start = _starting_network(config)
    cfg, spec = start.cfg, start.spec
    threads = cfg.threads or default_train_threads()
    pre = Preprocess(resize=max(cfg.image_size, round(cfg.image_size * RESIZE_RATIO)), crop=cfg.image_size,
                     mean=start.resolved.preprocess.mean, std=start.resolved.preprocess.std)
    lr = cfg.lr if cfg.lr is not None else (1e-3 if spec.kind == "none" else 1e-4)
    temperature = cfg.temperature or default_temperature(mode)
    out = output_path(cfg, scan.folder, mode)
    with _torch_threads(device, threads):
        torch.manual_seed(cfg.seed)
        if start.choice.reason:
            yield Info(message=f"starting from {describe_start(start.choice)}")
        yield from _stale_files_note(out.parent)
        data = yield from load_data(scan, mode, cfg, pre, threads, stop)
        if data is None:
            yield TrainingDone.stopped_before_training(cfg.metric)
            return
        model, frozen = _trainable(start.model, cfg, device)
        criterion = make_criterion(mode, len(data.classes), ARCHITECTURES[cfg.arch].dim, temperature).to(device)
        optimizer, scheduler = make_optimizer(model, criterion, lr, cfg.lr_patience)
        problem = resume_problem(start.checkpoint, mode, cfg.freeze, data.classes) if start.checkpoint else ""
        resumed = yield from resume(start.checkpoint, spec.path, str(spec), problem, criterion, optimizer, scheduler)
        meta = checkpoint_meta(
            arch=cfg.arch, dim=ARCHITECTURES[cfg.arch].dim, mode=mode, classes=data.classes,
            base_weights=resumed.base_weights, model=model, pooling=start.resolved.pooling,
            resumed_from=str(spec.path) if resumed.from_epoch is not None else None,
            preprocess={"resize": pre.resize, "crop": pre.crop, "mean": list(pre.mean), "std": list(pre.std)},
            config={**cfg.to_dict(), "mode": mode, "lr": lr, "temperature": temperature, "out": str(out),
                    "threads": threads})
        yield _dataset_ready(scan, mode, data, start, resumed.base_weights, resumed.from_epoch, device=device,
                             bf16=bf16, threads=threads, out=out)
        data.train_set.epoch = resumed.epoch
        yield from fit(model, data.train_set, data.val_set, cfg.epochs, optimizer, scheduler, cfg.metric, stop,
                       loss_fn=criterion, patience=cfg.patience or None, checkpoint_path=out, checkpoint_meta=meta,
                       device=device, bf16=bf16, start_epoch=resumed.epoch, history=resumed.history, frozen=frozen,
                       best_so_far=spec.path if resumed.from_epoch is not None else None)


def _dataset_ready(scan: DatasetScan, mode: str, data: Data, start: _Start, base_weights: str,
                   resumed_epoch: int | None, *, device: torch.device, bf16: bool, threads: int,
                   out: Path) -> DatasetReady:
    return DatasetReady(
        folder=str(scan.folder), mode=mode, n_train=data.n_train, n_val=data.n_val,
        val_items=len(data.val_set.groups), classes=tuple(data.classes), skipped=data.skipped,
        val_paths=data.val_paths, arch=start.cfg.arch, base_weights=base_weights,
        image_size=start.cfg.image_size, batch_size=data.train_set.batch_size,
        steps_per_epoch=len(data.train_set), device=str(device), precision="bf16" if bf16 else "fp32",
        threads=threads, out=str(out), resumed_epoch=resumed_epoch, start_reason=start.choice.reason)


def run_to_end(events: Iterable[TrainingEvent]) -> TrainingDone:
    """Consume a training's events and return its final :class:`TrainingDone`."""
    done = None
    for ev in events:
        if isinstance(ev, TrainingDone):
            done = ev
    if done is None:  # pragma: no cover - fit and train always end with TrainingDone
        raise TrainingError("training ended without a result")
    return done
