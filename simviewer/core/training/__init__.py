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

import io
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import functional as TF

from .. import embedder, evaluate
from ..embedder import (
    CHECKPOINT_FORMAT,
    ModelChoice,
    Resolved,
    WeightsSpec,
    WeightsUnavailable,
    cpu_supports_bf16,
    default_threads,
    resolve,
)
from ..images import ImageError, WalkErrors, load_image, walk_images
from ..paths import checkpoint_dirs
from ..registry import ARCHITECTURES, DEFAULT_ARCH
from ..system import fsync_dir

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
MODES = ("auto", "supervised", "selfsup")
METRICS = ("recall@1", "recall@5", "mAP")
# Stored images keep a short side of image_size * 8/7 (ImageNet's 256/224): enough for crops, small
# enough that a library of thousands of photos fits in memory decoded.
RESIZE_RATIO = 8 / 7
SUPERVISED_TEMPERATURE = 0.05
SELFSUP_TEMPERATURE = 0.1
PROXY_LR_FACTOR = 10.0
WEIGHT_DECAY = 1e-4
LR_FACTOR = 0.3  # ReduceLROnPlateau: multiply the learning rate by this on a plateau
VAL_BATCH = 64


class TrainingError(Exception):
    """A dataset, option or checkpoint that cannot be trained on; the message says why."""


# -- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preparing:
    """Decoding the dataset into memory (once per run)."""

    done: int
    total: int


@dataclass(frozen=True)
class Info:
    """A note for the log: why a checkpoint is not resumed, images left out, precision used."""

    message: str


@dataclass(frozen=True)
class DatasetReady:
    """The data is in memory and split; training starts next."""

    folder: str
    mode: str  # "supervised" | "selfsup"
    n_train: int  # photos trained on
    n_val: int  # held-out photos (selfsup: each also gets edited copies)
    val_items: int  # images the validation ranks (held-out photos, plus their copies in selfsup)
    classes: tuple[str, ...]  # supervised: class names (sub-folders); selfsup: ()
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of every image that could not be read
    val_paths: tuple[str, ...]  # the held-out photos
    arch: str
    base_weights: str
    image_size: int
    batch_size: int
    steps_per_epoch: int
    device: str
    precision: str  # "bf16" | "fp32"
    threads: int
    out: str
    resumed_epoch: int | None  # the checkpoint's epoch when resuming, else None
    start_reason: str = ""  # why this starting model, when the user chose neither model nor weights


@dataclass(frozen=True)
class BeforeTraining:
    """Validation metrics of the starting weights, before any step: the gain is measured from here."""

    epoch: int  # epochs already done (0, or the resumed checkpoint's epoch)
    metrics: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class StepEvent:
    epoch: int  # 1-based, continues a resumed checkpoint's count
    last_epoch: int  # the epoch this run ends at if nothing stops it
    step: int  # 1-based within the epoch
    steps_per_epoch: int
    global_step: int  # 1-based within this run
    total_steps: int  # steps this run will take if it is not stopped early
    loss: float
    lr: float
    elapsed: float  # seconds since training started (validations included)
    eta: float  # seconds left, validations included
    images_per_second: float


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    last_epoch: int  # the epoch this run ends at if nothing stops it
    metrics: dict[str, float]
    train_loss: float  # mean loss over the epoch's steps
    lr: float  # learning rate after the scheduler saw this epoch's metric
    seconds: float  # training time of the epoch
    val_seconds: float
    improved: bool  # beat the best so far (the starting model, then the best epoch)
    best_epoch: int | None  # None: no epoch has beaten the starting model yet
    best_value: float | None  # the value to beat next: the best epoch's, else the starting model's


@dataclass(frozen=True)
class CheckpointSaved:
    """An epoch beat the starting model and every epoch before it: written to *path*."""

    path: str
    epoch: int
    metric: str
    value: float


@dataclass(frozen=True)
class TrainingDone:
    reason: str  # "finished" | "stopped" | "early-stopped"
    metric: str
    before: dict[str, float]  # metrics of the starting model
    best: dict[str, float] | None  # metrics of the best epoch (None: no epoch beat the starting model)
    best_epoch: int | None
    # The model to use: this run's best checkpoint, or the resumed checkpoint when no epoch beat it;
    # None when nothing was written (no epoch finished, or none beat the starting weights).
    best_path: str | None
    epochs_run: int  # epochs completed in this run
    last_epoch: int  # the last completed epoch number
    seconds: float
    seconds_per_epoch: tuple[float, ...]  # training time of each completed epoch
    # At least one epoch finished and none beat the starting model: the start is better on these
    # photos, and nothing of this run was saved as best.
    start_better: bool = False

    @property
    def stopped(self) -> bool:
        return self.reason == "stopped"

    @property
    def early_stopped(self) -> bool:
        return self.reason == "early-stopped"

    def summary(self) -> str:
        """One sentence for a status line or a log."""
        how = {"finished": "Finished", "stopped": "Stopped", "early-stopped": "Stopped early (no gain)"}[self.reason]
        text = f"{how} after {self.epochs_run} epoch{'s' * (self.epochs_run != 1)}"
        before = self.before.get(self.metric)
        if self.best is None or self.best_epoch is None:
            if self.start_better and self.best_path:  # resumed: the starting checkpoint stays the best
                return (f"{text}: no epoch beat the starting checkpoint {self.best_path} ({self.metric} "
                        f"{before:.4f}); it is still the best model")
            if self.start_better:
                return (f"{text}: no epoch beat the starting model ({self.metric} {before:.4f}); nothing was "
                        "saved as best \N{EM DASH} the starting model is better on your photos")
            return f"{text}: no epoch was completed, so no checkpoint was written"
        text += f": best {self.metric} {self.best[self.metric]:.4f} at epoch {self.best_epoch}"
        if before is not None:
            text += f" (before training {before:.4f})"
        return text + (f", saved in {self.best_path}" if self.best_path else "")

    def to_dict(self) -> dict:
        return {"reason": self.reason, "stopped": self.stopped, "early_stopped": self.early_stopped,
                "metric": self.metric, "before": _rounded(self.before),
                "best": _rounded(self.best) if self.best else None, "best_epoch": self.best_epoch,
                "checkpoint": self.best_path, "start_better": self.start_better,
                "epochs_run": self.epochs_run, "last_epoch": self.last_epoch,
                "seconds": round(self.seconds, 2),
                "seconds_per_epoch": [round(s, 2) for s in self.seconds_per_epoch]}


TrainingEvent = Preparing | Info | DatasetReady | BeforeTraining | StepEvent | EpochEnd | CheckpointSaved | TrainingDone


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in metrics.items()}


# -- losses -------------------------------------------------------------------------------------
class ProxyLoss(nn.Module):
    """NormSoftmax (Zhai & Wu 2019, the Proxy-NCA++ family): cross-entropy over the cosines between
    each embedding and one learned proxy per class, divided by a small temperature."""

    def __init__(self, n_classes: int, dim: int, temperature: float = SUPERVISED_TEMPERATURE) -> None:
        super().__init__()
        if n_classes < 2:
            raise TrainingError("supervised training needs at least two classes")
        self.temperature = temperature
        gen = torch.Generator().manual_seed(n_classes * 7919 + dim)
        self.proxies = nn.Parameter(F.normalize(torch.randn(n_classes, dim, generator=gen), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        e = F.normalize(embeddings.float().flatten(1), dim=1)
        p = F.normalize(self.proxies, dim=1)
        return F.cross_entropy(e @ p.T / self.temperature, labels)


class NTXentLoss(nn.Module):
    """NT-Xent (SimCLR) over a batch where ``ids`` says which rows are views of one photo: each
    view's positive is the other view of its photo, every other row is a negative."""

    def __init__(self, temperature: float = SELFSUP_TEMPERATURE) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        z = F.normalize(embeddings.float().flatten(1), dim=1)
        n = z.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = (z @ z.T / self.temperature).masked_fill(eye, float("-inf"))
        positive = (ids[:, None] == ids[None, :]) & ~eye
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        per_row = -log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1).clamp(min=1)
        return per_row[positive.any(1)].mean()


# -- validation ---------------------------------------------------------------------------------
def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def embed_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Sequence]], device: torch.device,
                  bf16: bool = False, should_stop: Callable[[], bool] | None = None
                  ) -> tuple[torch.Tensor, list] | None:
    """Unit embeddings (float32, CPU) of every batch and their labels; None when stopped midway.
    Runs the model in eval mode and puts its previous mode back."""
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    out, labels = [], []
    try:
        with torch.inference_mode(), _autocast(device, bf16):
            for images, groups in batches:
                if should_stop is not None and should_stop():
                    return None
                x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                out.append(F.normalize(model(x).float().flatten(1), dim=1).cpu())
                labels.extend(list(groups))
    finally:
        for m, mode in was_training.items():
            m.training = mode
    return (torch.cat(out) if out else torch.zeros(0, 0)), labels


def validate(model: nn.Module, val_loader: Iterable, device: torch.device, bf16: bool = False,
             should_stop: Callable[[], bool] | None = None) -> dict[str, float] | None:
    """Retrieval of same-group images among the validation set: recall@1, recall@5, mAP (each image
    queries all the others). None when stopped midway."""
    result = embed_batches(model, val_loader, device, bf16, should_stop)
    if result is None:
        return None
    vectors, groups = result
    v = vectors.double().numpy()
    try:
        r = evaluate.retrieval(v @ v.T, np.asarray([str(g) for g in groups]))
    except evaluate.EvalError as exc:
        raise TrainingError(f"the validation set cannot be scored: {exc}") from exc
    return {"recall@1": r.recall_at_1, "recall@5": r.recall_at_5, "mAP": r.mean_ap}


# -- checkpoints --------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """Write *checkpoint* atomically: a temporary file in the same folder, fsync, then os.replace,
    so *path* always holds either the previous checkpoint or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # make the rename itself durable
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A simviewer checkpoint, read with ``weights_only=True``; TrainingError if it is not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"cannot load checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a simviewer checkpoint")
    return ckpt


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


# -- the training loop --------------------------------------------------------------------------
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
    (and once before the first step) :func:`validate` scores it, *scheduler* is stepped with the
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
    if scheduler_step_metric not in METRICS:
        raise TrainingError(f"unknown metric {scheduler_step_metric!r}; choose one of {', '.join(METRICS)}")
    if epochs < 1:
        raise TrainingError("epochs must be at least 1")
    stop = should_stop or (lambda: False)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    metric = scheduler_step_metric
    history = history if history is not None else {}
    history.setdefault("loss", [])
    history.setdefault("lr", [])
    history.setdefault("epochs", [])
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch < 1:
        raise TrainingError("the training set is too small for one batch")
    total_steps = steps_per_epoch * epochs
    last_epoch = start_epoch + epochs
    t_start = time.perf_counter()

    def done(reason: str) -> TrainingDone:
        return TrainingDone(reason=reason, metric=metric, before=before, best=best_metrics, best_epoch=best_epoch,
                            best_path=best_path, epochs_run=len(epoch_seconds), last_epoch=epoch,
                            seconds=time.perf_counter() - t_start, seconds_per_epoch=tuple(epoch_seconds),
                            start_better=bool(epoch_seconds) and best_epoch is None)

    t = time.perf_counter()
    before = validate(model, val_loader, device, bf16, stop)
    epoch = start_epoch
    best_metrics: dict[str, float] | None = None
    best_epoch: int | None = None
    best_value: float | None = None
    best_path: str | None = None
    epoch_seconds: list[float] = []
    if before is None:
        before = {}
        yield done("stopped")
        return
    val_seconds = time.perf_counter() - t
    yield BeforeTraining(epoch=start_epoch, metrics=dict(before), seconds=val_seconds)
    best_value = before[metric]  # the starting model is the one to beat
    if best_so_far is not None:
        best_path = os.fspath(best_so_far)
    history.setdefault("before", dict(before))

    global_step = 0
    step_times: list[float] = []
    since_best = 0
    for epoch in range(start_epoch + 1, last_epoch + 1):
        model.train()
        for m in frozen:
            m.eval()
        losses: list[float] = []
        t_epoch = time.perf_counter()
        batches = iter(train_loader)
        stopped = False
        for step in range(1, steps_per_epoch + 1):
            if stop():
                stopped = True
                break
            t_step = time.perf_counter()
            try:
                images, targets = next(batches)
            except StopIteration:
                break
            if stop():
                stopped = True
                break
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            with _autocast(device, bf16):
                out = model(images)
            loss = loss_fn(out.float(), targets)
            if not torch.isfinite(loss):
                where = f"; the best checkpoint so far is {best_path}" if best_path else ""
                raise TrainingError(f"the loss became {loss.item()} at epoch {epoch}, step {step}: "
                                    f"try a lower learning rate{where}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            lr = float(optimizer.param_groups[0]["lr"])
            losses.append(value)
            history["loss"].append(value)
            history["lr"].append(lr)
            global_step += 1
            step_times.append(time.perf_counter() - t_step)
            recent = step_times[-20:]
            per_step = sum(recent) / len(recent)
            left_epochs = last_epoch - epoch + 1
            eta = per_step * (total_steps - global_step) + val_seconds * left_epochs
            yield StepEvent(epoch, last_epoch, step, steps_per_epoch, global_step, total_steps, value, lr,
                            time.perf_counter() - t_start, eta, images.shape[0] / max(per_step, 1e-9))
        if stopped:
            epoch -= 1
            yield done("stopped")
            return
        train_seconds = time.perf_counter() - t_epoch
        t = time.perf_counter()
        metrics = validate(model, val_loader, device, bf16, stop)
        if metrics is None:
            epoch -= 1
            yield done("stopped")
            return
        val_seconds = time.perf_counter() - t
        epoch_seconds.append(train_seconds)
        value = metrics[metric]
        improved = value > best_value
        if scheduler is not None:
            scheduler.step(value)
        lr = float(optimizer.param_groups[0]["lr"])
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        history["epochs"].append({"epoch": epoch, "metrics": dict(metrics), "loss": mean_loss, "lr": lr,
                                  "seconds": train_seconds, "val_seconds": val_seconds})
        saved = None
        if improved:
            best_value, best_metrics, best_epoch, since_best = value, dict(metrics), epoch, 0
            if checkpoint_path is not None:
                ckpt = dict(checkpoint_meta or {})
                ckpt.update({
                    "model": _cpu_state(model),
                    "epoch": epoch,
                    "metrics": {"name": metric, "best": dict(metrics), "best_epoch": epoch,
                                "before": dict(history["before"])},
                    "history": {"loss": list(history["loss"]), "lr": list(history["lr"]),
                                "epochs": [dict(e) for e in history["epochs"]], "before": dict(history["before"])},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "criterion": _cpu_state(loss_fn) if isinstance(loss_fn, nn.Module) else {},
                })
                best_path = os.fspath(save_checkpoint(checkpoint_path, ckpt))
                saved = CheckpointSaved(path=best_path, epoch=epoch, metric=metric, value=value)
        else:
            since_best += 1
        yield EpochEnd(epoch=epoch, last_epoch=last_epoch, metrics=dict(metrics), train_loss=mean_loss, lr=lr,
                       seconds=train_seconds, val_seconds=val_seconds, improved=improved, best_epoch=best_epoch,
                       best_value=best_value)
        if saved is not None:
            yield saved
        if patience and since_best >= patience and epoch < last_epoch:
            yield done("early-stopped")
            return
    yield done("finished")


# -- datasets -----------------------------------------------------------------------------------
def natural_key(text: str) -> list:
    """Sort key that puts ``view2`` before ``view10``."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class DatasetScan:
    """What a dataset folder holds, before anything is decoded."""

    folder: Path
    classes: dict[str, list[Path]]  # top-level sub-folder -> its images (naturally sorted), nested included
    loose: list[Path]  # images directly in the folder
    folder_errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.loose) + sum(len(v) for v in self.classes.values())

    @property
    def labelled(self) -> dict[str, list[Path]]:
        """Classes with at least two images: the ones supervised training uses."""
        return {k: v for k, v in self.classes.items() if len(v) >= 2}

    @property
    def mode(self) -> str:
        """``supervised`` when at least two sub-folders hold two images or more, else ``selfsup``."""
        return "supervised" if len(self.labelled) >= 2 else "selfsup"

    def all_images(self) -> list[Path]:
        return self.loose + [p for k in sorted(self.classes, key=natural_key) for p in self.classes[k]]


def scan_dataset(folder: str | os.PathLike) -> DatasetScan:
    """Find the images of a dataset folder (recursively) and group them by top-level sub-folder."""
    root = Path(folder).expanduser()
    errors = WalkErrors()
    classes: dict[str, list[Path]] = {}
    loose: list[Path] = []
    try:
        for entry in walk_images(root, errors):
            rel = Path(os.path.relpath(entry.path, root))
            if len(rel.parts) == 1:
                loose.append(Path(entry.path))
            else:
                classes.setdefault(rel.parts[0], []).append(Path(entry.path))
    except ImageError as exc:
        raise TrainingError(str(exc)) from exc
    for paths in classes.values():
        paths.sort(key=lambda p: natural_key(os.path.relpath(p, root)))
    loose.sort(key=lambda p: natural_key(p.name))
    scan = DatasetScan(root, dict(sorted(classes.items(), key=lambda kv: natural_key(kv[0]))), loose,
                       errors.folders)
    if scan.n_images == 0:
        raise TrainingError(f"no images found in {root} (nor in its sub-folders): simviewer trains on "
                            "JPEG, PNG, WebP, BMP, TIFF, GIF and HEIC files")
    return scan


def detect_mode(folder: str | os.PathLike) -> tuple[str, int, int]:
    """``(mode, n_classes, n_images)``: ``supervised`` with the number of usable classes when at least
    two sub-folders hold two images or more each (class = sub-folder), else ``selfsup`` and 0."""
    scan = scan_dataset(folder)
    mode = scan.mode
    return mode, (len(scan.labelled) if mode == "supervised" else 0), scan.n_images


def _resize_short(im: Image.Image, side: int) -> Image.Image:
    """Scale so the short side is *side* (the embedder's own resize, so validation sees what it sees)."""
    w, h = im.size
    scale = side / min(w, h)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    return im if size == (w, h) else im.resize(size, Image.BILINEAR, reducing_gap=3.0)


def _decode(path: Path, side: int) -> tuple[Image.Image | None, str]:
    try:
        return _resize_short(load_image(path, min_side=side).image, side), ""
    except ImageError as exc:
        return None, str(exc)
    except Exception as exc:  # one bad file never ends a training run
        return None, f"cannot read: {type(exc).__name__}: {exc}"


# -- augmentations ------------------------------------------------------------------------------
_CAPTIONS = ("Holiday 2019 - best of", "IMG_2041  14/07/2019", "Family weekend", "(c) photo club",
             "DSC00417.JPG", "Summer '22", "sent from my phone", "Grandma's birthday")


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def add_caption(im: Image.Image, text: str, band: int, top: bool = False) -> Image.Image:
    """A white band with black text below (or above) the picture, like a captioned export."""
    border = (0, band, 0, 0) if top else (0, 0, 0, band)
    out = ImageOps.expand(im, border=border, fill="white")
    y = (band // 3) if top else im.height + band // 3
    ImageDraw.Draw(out).text((max(2, im.width // 40), y), text, fill="black", font=_font())
    return out


def jpeg_roundtrip(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _random_resized_crop(im: Image.Image, size: int, rng: random.Random, scale: tuple[float, float],
                         ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    w, h = im.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return im.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    side = min(w, h)
    x, y = (w - side) // 2, (h - side) // 2
    return im.resize((size, size), Image.BILINEAR, box=(x, y, x + side, y + side))


def duplicate_view(im: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """A random edited copy, the kind that makes two photo files duplicates: 90-degree rotation,
    mirror, caption band, border, a crop keeping half the picture or more, colour changes, grey,
    JPEG re-encoding at a random quality. Returns a *size* x *size* RGB image."""
    if rng.random() < 0.25:
        im = im.transpose(rng.choice((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                      Image.Transpose.ROTATE_270)))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    if rng.random() < 0.2:
        band = rng.randint(max(6, im.height // 12), max(8, im.height // 6))
        im = add_caption(im, rng.choice(_CAPTIONS), band, top=rng.random() < 0.3)
    if rng.random() < 0.25:
        width = max(1, round(max(im.size) * rng.uniform(0.02, 0.08)))
        u = rng.random()
        fill = (255, 255, 255) if u < 0.6 else (0, 0, 0) if u < 0.8 else tuple(rng.randint(0, 255) for _ in range(3))
        im = ImageOps.expand(im, border=width, fill=fill)
    im = _random_resized_crop(im, size, rng, (0.5, 1.0))
    if rng.random() < 0.8:
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.4))
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.6, 1.4))
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4))
        if rng.random() < 0.5:
            im = TF.adjust_hue(im, rng.uniform(-0.05, 0.05))
    if rng.random() < 0.2:
        im = im.convert("L").convert("RGB")
    if rng.random() < 0.5:
        im = jpeg_roundtrip(im, rng.randint(15, 90))
    return im


def class_view(im: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """A mild random view for supervised training: crop, mirror, a little colour change."""
    im = _random_resized_crop(im, size, rng, (0.5, 1.0))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    if rng.random() < 0.5:
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2))
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.8, 1.2))
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.8, 1.2))
    return im


# Fixed edits for self-supervised validation (as in benchmarks/make_neardup_set.py).
VAL_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop": lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
    "jpeg": lambda im: jpeg_roundtrip(im, 25),
    "resize": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.LANCZOS),
    "mirror": ImageOps.mirror,
    "rotate": lambda im: im.rotate(90, expand=True),
    "border": lambda im: ImageOps.expand(im, border=max(im.size) // 16, fill="white"),
    "colour": lambda im: ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(1.6)).enhance(1.15),
    "caption": lambda im: add_caption(im, "Holiday 2019 - best of", max(12, im.height // 8)),
}


def _normalise(batch_hwc: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float, channels_last, normalised."""
    x = torch.from_numpy(batch_hwc).permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(mean).div_(std)


class TrainBatches:
    """Augmented training batches from images held in memory. One iteration is an epoch: a shuffled
    pass over the photos (the last incomplete batch left out), or as many passes as it takes to
    make *min_steps* batches on a small set; no batch holds a photo twice. Supervised batches are
    ``(images, class indices)``; self-supervised batches hold two views of each photo,
    ``(2B images, photo ids)``. Each batch is built from its own seed, in a background thread while
    the previous one trains."""

    def __init__(self, images: Sequence[Image.Image], labels: Sequence[int] | None, batch_size: int,
                 size: int, mean: Sequence[float], std: Sequence[float], seed: int = 0, epoch: int = 0,
                 min_steps: int = 1) -> None:
        if len(images) < 2:
            raise TrainingError("at least two training images are needed")
        self.images = list(images)
        self.labels = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
        self.batch_size = max(2, min(batch_size, len(self.images)))
        self.size = size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.seed = seed
        self.epoch = epoch  # the next iteration's epoch number (0-based)
        self.min_steps = max(1, min_steps)

    @property
    def batches_per_pass(self) -> int:
        return len(self.images) // self.batch_size

    def __len__(self) -> int:
        return max(self.batches_per_pass, self.min_steps)

    def make_batch(self, indices: Sequence[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(seed)
        if self.labels is None:
            views = [duplicate_view(self.images[i], self.size, rng) for _ in range(2) for i in indices]
            targets = torch.arange(len(indices)).repeat(2)
        else:
            views = [class_view(self.images[i], self.size, rng) for i in indices]
            targets = self.labels[list(indices)]
        return _normalise(np.stack([np.asarray(v, dtype=np.uint8) for v in views]), self.mean, self.std), targets

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        rng = random.Random(self.seed * 1_000_003 + epoch)
        bs, n = self.batch_size, len(self.images)
        batches: list[list[int]] = []
        while len(batches) < len(self):
            order = rng.sample(range(n), n)
            batches.extend(order[k * bs:(k + 1) * bs] for k in range(self.batches_per_pass))
        batches = batches[:len(self)]
        seeds = [(self.seed * 1_000_003 + epoch) * 100_003 + k for k in range(len(batches))]
        with ThreadPoolExecutor(1, thread_name_prefix="simviewer-augment") as pool:
            pending = pool.submit(self.make_batch, batches[0], seeds[0]) if batches else None
            for k in range(len(batches)):
                batch = pending.result()
                pending = pool.submit(self.make_batch, batches[k + 1], seeds[k + 1]) if k + 1 < len(batches) else None
                yield batch
                if pending is None:
                    break
            if pending is not None:  # the consumer stopped early: let the thread finish its batch
                pending.cancel()


class ValBatches:
    """Fixed, preprocessed validation images (uint8 in memory) and their groups."""

    def __init__(self, images: np.ndarray, groups: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 batch_size: int = VAL_BATCH) -> None:
        self.images, self.groups = images, list(groups)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.groups) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        for i in range(0, len(self.groups), self.batch_size):
            yield (_normalise(self.images[i:i + self.batch_size], self.mean, self.std),
                   self.groups[i:i + self.batch_size])


def _centre(im: Image.Image, resize: int, crop: int) -> np.ndarray:
    """The embedder's preprocessing up to normalisation: short side to *resize*, centre square *crop*."""
    return np.asarray(TF.center_crop(_resize_short(im, resize), [crop, crop]), dtype=np.uint8)


def _spread(n: int, k: int, phase: float) -> list[int]:
    """*k* positions spread evenly over range(n), shifted by *phase* in [0, 1)."""
    return sorted({min(n - 1, int((i + phase) * n / k)) for i in range(k)})


def split_supervised(per_class: dict[str, list[int]], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per class, hold out about *fraction* of its images (at least two, and at least two kept for
    training; classes under four images are all trained on), spread evenly over the class in name
    order: for turntable or burst sequences, the views held out sit between views trained on."""
    rng = random.Random(seed)
    train, val = [], []
    for name in sorted(per_class, key=natural_key):
        idx = per_class[name]
        n = len(idx)
        phase = rng.random()
        if n < 4:
            train.extend(idx)
            continue
        k = min(max(2, round(n * fraction)), n - 2)
        held = set(_spread(n, k, phase))
        val.extend(i for p, i in enumerate(idx) if p in held)
        train.extend(i for p, i in enumerate(idx) if p not in held)
    return train, val


def split_selfsup(n: int, fraction: float, seed: int, max_val: int) -> tuple[list[int], list[int]]:
    """Hold out a seeded random *fraction* of the photos (at least two, at most *max_val*)."""
    if n < 4:
        raise TrainingError(f"self-supervised training needs at least 4 readable images, the folder has {n}")
    k = min(max(2, round(n * fraction)), n - 2, max_val)
    val = sorted(random.Random(seed).sample(range(n), k))
    held = set(val)
    return [i for i in range(n) if i not in held], val


# -- configuration and the whole run ------------------------------------------------------------
# Top-level children that make each network's last stage (name prefixes). EfficientNet-Lite's last
# block stage feeds a 1x1 convolution ("head") that widens it to the embedding: both are the stage.
_LAST_STAGE: dict[str, tuple[str, ...]] = {
    "googlenet": ("inception5",),
    "inception_v3": ("Mixed_7",),
    "efficientnet_lite0": ("stage7", "head"),
    "efficientnet_lite1": ("stage7", "head"),
    "efficientnet_lite2": ("stage7", "head"),
}


def last_stage(arch: str) -> tuple[str, ...]:
    """Name prefixes of the top-level modules that make the network's last stage: what stays
    trainable with ``freeze`` (ResNets: ``layer4``)."""
    return _LAST_STAGE.get(arch, ("layer4",))


def freeze_all_but_last_stage(model: nn.Module, arch: str) -> list[nn.Module]:
    """Stop gradients everywhere but the last stage; returns the frozen top-level modules (to keep in
    eval mode, so their batch-norm statistics stay as they are)."""
    prefixes = last_stage(arch)
    if not any(name.startswith(prefixes) for name, _ in model.named_children()):
        raise TrainingError(f"{arch} has no module named {' or '.join(prefixes)}: cannot tell its last stage")
    frozen = []
    for name, child in model.named_children():
        if name.startswith(prefixes):
            continue
        for p in child.parameters():
            p.requires_grad_(False)
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            frozen.append(child)
    return frozen


def default_train_threads() -> int:
    """All cores but one on machines with four or more, so the desktop stays responsive."""
    n = default_threads()
    return n - 1 if n >= 4 else n


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "dataset"


def default_out_path(dataset: str | os.PathLike, arch: str, mode: str) -> Path:
    """``models/DATASET-ARCH-MODE.pt`` in the working folder; ``-2``, ``-3``... when taken."""
    folder = checkpoint_dirs()[0]
    stem = f"{_safe_name(Path(dataset).expanduser().resolve().name)}-{arch}-{mode}"
    path, n = folder / f"{stem}.pt", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.pt", n + 1
    return path


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; plain values, so it is stored in the checkpoint as is."""

    dataset: str
    mode: str = "auto"  # "auto" | "supervised" | "selfsup"
    # None for both: the recommended pretrained model (embedder.default_model); see starting_model()
    arch: str | None = None
    weights: str | None = None  # "imagenet" | "none" | a weights file or simviewer checkpoint (resumed)
    image_size: int = 224
    batch_size: int = 32  # photos per step (self-supervised: two views of each)
    lr: float | None = None  # None: 1e-3 from an untrained network, 1e-4 from trained weights
    epochs: int = 10  # epochs to run (a resumed run continues with this many more)
    freeze: bool = False  # train only the last stage
    threads: int | None = None  # CPU threads (None: all cores but one on 4+ cores)
    val_fraction: float = 0.2
    patience: int = 5  # early stopping: epochs without improvement (0: never)
    lr_patience: int = 2  # epochs without improvement before the learning rate drops
    min_steps: int = 20  # steps per epoch at least: a small set is passed over several times per epoch
    seed: int = 0
    out: str | None = None  # None: default_out_path()
    device: str = "auto"  # "auto" (CUDA when present) | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"  # "auto" (bf16 autocast where the hardware has it) | "bf16" | "fp32"
    metric: str = "mAP"  # validation metric for the scheduler, early stopping and the best checkpoint
    temperature: float | None = None  # None: 0.05 supervised, 0.1 self-supervised
    max_val_photos: int = 200  # self-supervised: held-out photos (each gets 8 edited copies)

    def checked(self) -> TrainConfig:
        """This config with its values checked; TrainingError names the first bad one."""
        if self.mode not in MODES:
            raise TrainingError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.arch is not None and self.arch not in ARCHITECTURES:
            raise TrainingError(f"unknown model {self.arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
        min_size = 75 if self.arch == "inception_v3" else 32  # the others reduce 32 px to one pixel
        if not min_size <= self.image_size <= 1024:
            raise TrainingError(f"image size must be between {min_size} and 1024 pixels for "
                                f"{self.arch or 'the model'}, not {self.image_size}")
        if self.batch_size < 2:
            raise TrainingError("batch size must be at least 2")
        if self.lr is not None and not 0 < self.lr < 1:
            raise TrainingError(f"learning rate must be between 0 and 1, not {self.lr}")
        if self.epochs < 1:
            raise TrainingError("epochs must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise TrainingError("threads must be at least 1")
        if not 0 < self.val_fraction < 1:
            raise TrainingError(f"validation fraction must be between 0 and 1, not {self.val_fraction}")
        if self.patience < 0 or self.lr_patience < 0:
            raise TrainingError("patience must be 0 or more")
        if self.metric not in METRICS:
            raise TrainingError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise TrainingError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.temperature is not None and not self.temperature > 0:
            raise TrainingError("temperature must be positive")
        if self.min_steps < 1:
            raise TrainingError("min_steps must be at least 1")
        if self.max_val_photos < 2:
            raise TrainingError("max_val_photos must be at least 2")
        return self

    def to_dict(self) -> dict:
        """Plain values only (paths as strings), as stored in a checkpoint."""
        return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in asdict(self).items()}


def _checkpoint_arch(path: str) -> str | None:
    """The architecture a simviewer checkpoint was trained on; None for any other file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format file (mmap), or not a checkpoint at all: resolve() says why
        return None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and obj.get("arch") in ARCHITECTURES:
        return str(obj["arch"])
    return None


def starting_model(arch: str | None = None, weights: str | None = None) -> ModelChoice:
    """The network and weights a run starts from, from what the user said (None: nothing).

    Nothing, or only ImageNet weights: :func:`embedder.default_model`, a pretrained network (ResNet-50
    where its ImageNet weights are cached or can be downloaded, else the EfficientNet-Lite installed
    with simviewer), with its reason. Only a model: its ImageNet weights. Only a simviewer
    checkpoint: the architecture it was trained on. An untrained network only when asked for
    (``weights="none"``). ``reason`` is empty when the user chose both.
    """
    if arch is None and (weights is None or WeightsSpec.parse(weights).kind == "imagenet"):
        return embedder.default_model()
    if arch is None:
        spec = WeightsSpec.parse(weights)
        arch = (_checkpoint_arch(spec.path) if spec.kind == "file" and spec.path else None) or DEFAULT_ARCH
    return ModelChoice(arch, weights if weights is not None else "imagenet", "")


def describe_start(choice: ModelChoice) -> str:
    """``ResNet-50 with ImageNet weights (why)``: the starting model in words, for a log or a form."""
    label = ARCHITECTURES[choice.arch].label if choice.arch in ARCHITECTURES else choice.arch
    word = choice.weights.lower()
    what = ("ImageNet weights" if word in ("imagenet", "default", "pretrained")
            else "untrained weights" if word in ("none", "untrained", "random")
            else f"the weights of {Path(choice.weights).name}")
    return f"{label} with {what}" + (f" ({choice.reason})" if choice.reason else "")


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TrainingError(f"unknown device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("CUDA was asked for but no CUDA device is available")
    return device


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "fp32":
        return False
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
    if precision == "bf16" and not supported:
        raise TrainingError(f"bf16 was asked for but this {device.type.upper()} does not support it")
    return supported


def _resume_problem(ckpt: dict, mode: str, cfg: TrainConfig, classes: list[str]) -> str:
    """Why *ckpt* cannot be resumed by this run ('' when it can)."""
    if "optimizer" not in ckpt or "epoch" not in ckpt:
        return "it holds no optimizer state"
    if ckpt.get("mode") != mode:
        return f"it was trained {ckpt.get('mode')}, this run is {mode}"
    if bool(ckpt.get("config", {}).get("freeze")) != cfg.freeze:
        return "it was trained with a different freeze setting"
    if mode == "supervised" and list(ckpt.get("classes", [])) != classes:
        return "its classes differ from this dataset's sub-folders"
    return ""


def _build_start(config: TrainConfig, choice: ModelChoice) -> tuple[TrainConfig, WeightsSpec, Resolved, nn.Module]:
    """*config* with the starting model filled in, its weights, and the network built from them
    (ImageNet weights are fetched here: offline, this fails before the slow part)."""
    cfg = replace(config, arch=choice.arch, weights=choice.weights).checked()
    spec = WeightsSpec.parse(cfg.weights)
    resolved = resolve(cfg.arch, spec)
    return cfg, spec, resolved, resolved.build()


def train(config: TrainConfig, should_stop: Callable[[], bool] | None = None) -> Iterator[TrainingEvent]:
    """Run a whole training described by *config*; a generator of events (see :func:`fit`).

    Decodes the dataset once (short side ``image_size * 8/7``; unreadable files are skipped and
    listed in :class:`DatasetReady`), splits off the validation set, builds the headless backbone
    from the base weights (:func:`starting_model`; when the default's ImageNet weights turn out not
    to download, the pretrained model installed with simviewer instead) and trains it. The reason
    for a model the user did not choose is the first :class:`Info`. A simviewer checkpoint as base
    weights is resumed (its optimizer, scheduler and epoch count carry on) when it was trained on
    the same architecture, mode, freeze setting and classes; otherwise it is only a starting point.
    Only an epoch that beats the starting weights is saved (see :func:`fit`). Bad options, an empty
    folder and weights that cannot be had (TrainingError, EmbedderError / WeightsUnavailable) raise
    from the first ``next()``, before any image is decoded.
    """
    config.checked()
    stop = should_stop or (lambda: False)
    scan = scan_dataset(config.dataset)
    mode = scan.mode if config.mode == "auto" else config.mode
    if mode == "supervised" and len(scan.labelled) < 2:
        raise TrainingError(
            f"supervised training needs at least two sub-folders (one per class) with two images or more "
            f"each; {scan.folder} has {len(scan.labelled)} (use self-supervised mode for a folder of photos)")
    device = pick_device(config.device)
    bf16 = _use_bf16(config.precision, device)
    choice = starting_model(config.arch, config.weights)
    try:
        cfg, spec, resolved, model = _build_start(config, choice)
    except WeightsUnavailable as exc:
        if not choice.reason or ARCHITECTURES[choice.arch].bundled:
            raise  # the user's own choice (or the bundled model itself): say why it cannot be had
        log.info("%s", exc)
        choice = embedder.bundled_fallback(
            f"the {ARCHITECTURES[choice.arch].label} ImageNet weights could not be downloaded")
        cfg, spec, resolved, model = _build_start(config, choice)
    threads = cfg.threads or default_train_threads()
    base_ckpt = None
    if spec.kind == "file":
        obj = torch.load(spec.path, map_location="cpu", weights_only=True)
        base_ckpt = obj if obj.get("format") == CHECKPOINT_FORMAT else None
    size = cfg.image_size
    resize = max(size, round(size * RESIZE_RATIO))
    mean, std = resolved.preprocess.mean, resolved.preprocess.std
    lr = cfg.lr if cfg.lr is not None else (1e-3 if spec.kind == "none" else 1e-4)
    temperature = cfg.temperature or (SUPERVISED_TEMPERATURE if mode == "supervised" else SELFSUP_TEMPERATURE)
    out = Path(cfg.out).expanduser() if cfg.out else default_out_path(scan.folder, cfg.arch, mode)
    if out.exists() and out.is_dir():
        raise TrainingError(f"the output {out} is a folder; give a file name such as {out / 'model.pt'}")

    previous_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(cfg.seed)
        if choice.reason:
            yield Info(message=f"starting from {describe_start(choice)}")
        # -- the data, decoded once
        if mode == "supervised":
            labelled = scan.labelled
            classes = list(labelled)
            paths = [p for c in classes for p in labelled[c]]
            path_class = [k for k, c in enumerate(classes) for _ in labelled[c]]
            unused = scan.n_images - len(paths)
            if unused:
                yield Info(f"{unused} images outside the class sub-folders (or alone in one) are not used")
        else:
            classes, paths, path_class = [], scan.all_images(), []
        images: list[Image.Image | None] = [None] * len(paths)
        skipped: list[tuple[str, str]] = [(f, f"unreadable folder: {why}") for f, why in scan.folder_errors]
        yield Preparing(0, len(paths))
        last = time.perf_counter()
        with ThreadPoolExecutor(max(1, min(threads, 4)), thread_name_prefix="simviewer-decode") as pool:
            chunk = 64
            for start in range(0, len(paths), chunk):
                if stop():
                    yield TrainingDone(reason="stopped", metric=cfg.metric, before={}, best=None, best_epoch=None,
                                       best_path=None, epochs_run=0, last_epoch=0, seconds=0.0,
                                       seconds_per_epoch=())
                    return
                part = paths[start:start + chunk]
                for k, (im, why) in enumerate(pool.map(lambda p: _decode(p, resize), part)):
                    if im is None:
                        skipped.append((str(part[k]), why))
                    images[start + k] = im
                now = time.perf_counter()
                if now - last > 0.25 or start + chunk >= len(paths):
                    last = now
                    yield Preparing(min(start + chunk, len(paths)), len(paths))
        ok = [i for i, im in enumerate(images) if im is not None]
        if not ok:
            first = next((f"{p}: {why}" for p, why in skipped), "")
            raise TrainingError(f"none of the {len(paths)} images in {scan.folder} could be read ({first})")

        # -- the split
        if mode == "supervised":
            per_class: dict[str, list[int]] = {}
            for i in ok:
                per_class.setdefault(classes[path_class[i]], []).append(i)
            if len([c for c in per_class.values() if len(c) >= 2]) < 2:
                raise TrainingError("fewer than two classes have two readable images: nothing to learn from")
            train_idx, val_idx = split_supervised(per_class, cfg.val_fraction, cfg.seed)
            if len({path_class[i] for i in val_idx}) < 2:
                raise TrainingError(
                    "too few images per class to hold out a validation set: at least two classes need four "
                    "images or more (two to train on, two to test with)")
            train_set = TrainBatches([images[i] for i in train_idx], [path_class[i] for i in train_idx],
                                     cfg.batch_size, size, mean, std, cfg.seed, min_steps=cfg.min_steps)
            val_arrays = [_centre(images[i], resize, size) for i in val_idx]
            val_groups = [classes[path_class[i]] for i in val_idx]
            n_val_photos = len(val_idx)
        else:
            keep = [images[i] for i in ok]
            train_pos, val_pos = split_selfsup(len(keep), cfg.val_fraction, cfg.seed, cfg.max_val_photos)
            train_idx, val_idx = [ok[i] for i in train_pos], [ok[i] for i in val_pos]
            train_set = TrainBatches([images[i] for i in train_idx], None, cfg.batch_size, size, mean, std, cfg.seed,
                                     min_steps=cfg.min_steps)
            val_arrays, val_groups = [], []
            for k, i in enumerate(val_idx):
                im = images[i]
                val_arrays.append(_centre(im, resize, size))
                val_groups.append(f"photo{k}")
                for edit in VAL_EDITS.values():
                    val_arrays.append(_centre(edit(im).convert("RGB"), resize, size))
                    val_groups.append(f"photo{k}")
            n_val_photos = len(val_idx)
        val_set = ValBatches(np.stack(val_arrays), val_groups, mean, std)
        del images

        # -- the model, loss, optimizer and scheduler
        for p in model.parameters():
            p.requires_grad_(True)
        frozen = freeze_all_but_last_stage(model, cfg.arch) if cfg.freeze else []
        model = model.to(device, memory_format=torch.channels_last)
        dim = ARCHITECTURES[cfg.arch].dim
        criterion = (ProxyLoss(len(classes), dim, temperature) if mode == "supervised"
                     else NTXentLoss(temperature)).to(device)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr,
                   "weight_decay": WEIGHT_DECAY}]
        if any(True for _ in criterion.parameters()):
            groups.append({"params": list(criterion.parameters()), "lr": lr * PROXY_LR_FACTOR, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=LR_FACTOR,
                                                               patience=cfg.lr_patience)
        start_epoch, history, resumed, base_weights = 0, {}, None, str(spec)
        if base_ckpt is not None:
            problem = _resume_problem(base_ckpt, mode, cfg, classes)
            if problem:
                yield Info(f"starting from the weights of {spec.path} without resuming: {problem}")
            else:
                try:
                    criterion.load_state_dict(base_ckpt.get("criterion", {}))
                    optimizer.load_state_dict(base_ckpt["optimizer"])
                    if base_ckpt.get("scheduler"):
                        scheduler.load_state_dict(base_ckpt["scheduler"])
                except (RuntimeError, ValueError, KeyError) as exc:
                    raise TrainingError(f"cannot resume from {spec.path}: {exc}") from exc
                resumed = start_epoch = int(base_ckpt["epoch"])
                old = base_ckpt.get("history", {})
                history = {"loss": list(old.get("loss", [])), "lr": list(old.get("lr", [])),
                           "epochs": list(old.get("epochs", []))}
                if "before" in old:
                    history["before"] = dict(old["before"])
                base_weights = str(base_ckpt.get("base_weights", spec))
                yield Info(f"resuming {spec.path} after its epoch {start_epoch}: its optimizer state and "
                           f"learning rate ({optimizer.param_groups[0]['lr']:.2g}) carry on")
        meta = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "arch": cfg.arch,
            "dim": dim,
            "mode": mode,
            "classes": classes,
            "base_weights": base_weights,
            "resumed_from": str(spec.path) if resumed is not None else None,
            "transform_input": bool(getattr(model, "transform_input", False)),
            "pooling": resolved.pooling,
            "preprocess": {"resize": resize, "crop": size, "mean": list(mean), "std": list(std)},
            "config": {**cfg.to_dict(), "mode": mode, "lr": lr, "temperature": temperature, "out": str(out),
                       "threads": threads},
        }
        yield DatasetReady(
            folder=str(scan.folder), mode=mode, n_train=len(train_idx), n_val=n_val_photos, val_items=len(val_groups),
            classes=tuple(classes), skipped=tuple(skipped), val_paths=tuple(str(paths[i]) for i in val_idx),
            arch=cfg.arch, base_weights=base_weights, image_size=size, batch_size=train_set.batch_size,
            steps_per_epoch=len(train_set), device=str(device), precision="bf16" if bf16 else "fp32",
            threads=threads, out=str(out), resumed_epoch=resumed, start_reason=choice.reason)
        train_set.epoch = start_epoch
        yield from fit(model, train_set, val_set, cfg.epochs, optimizer, scheduler, cfg.metric, stop,
                       loss_fn=criterion, patience=cfg.patience or None, checkpoint_path=out, checkpoint_meta=meta,
                       device=device, bf16=bf16, start_epoch=start_epoch, history=history, frozen=frozen,
                       best_so_far=spec.path if resumed is not None else None)
    finally:
        torch.set_num_threads(previous_threads)


def run_to_end(events: Iterable[TrainingEvent]) -> TrainingDone:
    """Consume a training's events and return its final :class:`TrainingDone`."""
    done = None
    for ev in events:
        if isinstance(ev, TrainingDone):
            done = ev
    if done is None:  # pragma: no cover - fit and train always end with TrainingDone
        raise TrainingError("training ended without a result")
    return done

