"""The data: scan a dataset folder, decode its photos once into memory, split off the held-out
photos, and serve augmented training batches and fixed validation batches."""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ..images import ImageError, WalkErrors, load_image, walk_images
from .augment import VAL_EDITS, class_view, duplicate_view
from .events import Info, Preparing, TrainingError, TrainingEvent

if TYPE_CHECKING:
    from .config import TrainConfig

# Stored images keep a short side of image_size * 8/7 (ImageNet's 256/224): enough for crops, small
# enough that a library of thousands of photos fits in memory decoded.
RESIZE_RATIO = 8 / 7
VAL_BATCH = 64


# -- scan ---------------------------------------------------------------------------------------
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


def training_mode(scan: DatasetScan, asked: str) -> str:
    """The mode a run uses (*asked*, or the folder's own for ``auto``); TrainingError when a
    supervised run has too few classes."""
    mode = scan.mode if asked == "auto" else asked
    if mode == "supervised" and len(scan.labelled) < 2:
        raise TrainingError(
            f"supervised training needs at least two sub-folders (one per class) with two images or more "
            f"each; {scan.folder} has {len(scan.labelled)} (use self-supervised mode for a folder of photos)")
    return mode


# -- decode -------------------------------------------------------------------------------------
def resize_short(im: Image.Image, side: int) -> Image.Image:
    """Scale so the short side is *side* (the embedder's own resize, so validation sees what it sees)."""
    w, h = im.size
    scale = side / min(w, h)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    return im if size == (w, h) else im.resize(size, Image.BILINEAR, reducing_gap=3.0)


def decode(path: Path, side: int) -> tuple[Image.Image | None, str]:
    """The photo at *path* with its short side at *side*, or None and why it cannot be read."""
    try:
        return resize_short(load_image(path, min_side=side).image, side), ""
    except ImageError as exc:
        return None, str(exc)
    except Exception as exc:  # one bad file never ends a training run
        return None, f"cannot read: {type(exc).__name__}: {exc}"


def decode_all(paths: Sequence[Path], side: int, threads: int, stop: Callable[[], bool],
               skipped: list[tuple[str, str]]) -> Generator[TrainingEvent, None, list[Image.Image | None] | None]:
    """Decode every photo (None where unreadable, its reason added to *skipped*), yielding
    :class:`Preparing` now and then; returns None when stopped."""
    images: list[Image.Image | None] = [None] * len(paths)
    yield Preparing(done=0, total=len(paths))
    last = time.perf_counter()
    with ThreadPoolExecutor(max(1, min(threads, 4)), thread_name_prefix="simviewer-decode") as pool:
        chunk = 64
        for start in range(0, len(paths), chunk):
            if stop():
                return None
            part = paths[start:start + chunk]
            for k, (im, why) in enumerate(pool.map(lambda p: decode(p, side), part)):
                if im is None:
                    skipped.append((str(part[k]), why))
                images[start + k] = im
            now = time.perf_counter()
            if now - last > 0.25 or start + chunk >= len(paths):
                last = now
                yield Preparing(done=min(start + chunk, len(paths)), total=len(paths))
    return images


# -- batches ------------------------------------------------------------------------------------
def normalise(batch_hwc: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
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
        return normalise(np.stack([np.asarray(v, dtype=np.uint8) for v in views]), self.mean, self.std), targets

    def _plan(self, epoch: int) -> list[list[int]]:
        """The photo indices of each batch of *epoch*."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        bs, n = self.batch_size, len(self.images)
        batches: list[list[int]] = []
        while len(batches) < len(self):
            order = rng.sample(range(n), n)
            batches.extend(order[k * bs:(k + 1) * bs] for k in range(self.batches_per_pass))
        return batches[:len(self)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        batches = self._plan(epoch)
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
            yield (normalise(self.images[i:i + self.batch_size], self.mean, self.std),
                   self.groups[i:i + self.batch_size])


def centre(im: Image.Image, resize: int, crop: int) -> np.ndarray:
    """The embedder's preprocessing up to normalisation: short side to *resize*, centre square *crop*."""
    return np.asarray(TF.center_crop(resize_short(im, resize), [crop, crop]), dtype=np.uint8)


# -- split --------------------------------------------------------------------------------------
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


# -- the datasets of a run ----------------------------------------------------------------------
@dataclass
class Data:
    """The training and validation sets of a run, and what :class:`DatasetReady` reports of them."""

    classes: list[str]  # supervised: class names; selfsup: []
    train_set: TrainBatches
    val_set: ValBatches
    n_train: int
    n_val: int  # held-out photos
    val_paths: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Preprocess:
    """The embedder's preprocessing the run trains and validates with."""

    resize: int
    crop: int
    mean: Sequence[float]
    std: Sequence[float]


def load_data(scan: DatasetScan, mode: str, cfg: TrainConfig, pre: Preprocess, threads: int,
              stop: Callable[[], bool]) -> Generator[TrainingEvent, None, Data | None]:
    """Decode the photos *mode* trains on (short side ``pre.resize``) and split them; yields
    :class:`Info` and :class:`Preparing`, returns the :class:`Data` (None when stopped)."""
    if mode == "supervised":
        classes = list(scan.labelled)
        paths = [p for c in classes for p in scan.labelled[c]]
        path_class = [k for k, c in enumerate(classes) for _ in scan.labelled[c]]
        unused = scan.n_images - len(paths)
        if unused:
            yield Info(message=f"{unused} images outside the class sub-folders (or alone in one) are not used")
    else:
        classes, paths, path_class = [], scan.all_images(), []
    skipped: list[tuple[str, str]] = [(f, f"unreadable folder: {why}") for f, why in scan.folder_errors]
    images = yield from decode_all(paths, pre.resize, threads, stop, skipped)
    if images is None:
        return None
    ok = [i for i, im in enumerate(images) if im is not None]
    if not ok:
        first = next((f"{p}: {why}" for p, why in skipped), "")
        raise TrainingError(f"none of the {len(paths)} images in {scan.folder} could be read ({first})")
    if mode == "supervised":
        train_idx, val_idx, val_set = _supervised_split(images, ok, classes, path_class, cfg, pre)
        labels = [path_class[i] for i in train_idx]
    else:
        train_idx, val_idx, val_set = _selfsup_split(images, ok, cfg, pre)
        labels = None
    train_set = TrainBatches([images[i] for i in train_idx], labels, cfg.batch_size, pre.crop, pre.mean, pre.std,
                             cfg.seed, min_steps=cfg.min_steps)
    return Data(classes=classes, train_set=train_set, val_set=val_set, n_train=len(train_idx), n_val=len(val_idx),
                val_paths=tuple(str(paths[i]) for i in val_idx), skipped=tuple(skipped))


def _supervised_split(images: list, ok: list[int], classes: list[str], path_class: list[int], cfg: TrainConfig,
                      pre: Preprocess) -> tuple[list[int], list[int], ValBatches]:
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
    arrays = [centre(images[i], pre.resize, pre.crop) for i in val_idx]
    groups = [classes[path_class[i]] for i in val_idx]
    return train_idx, val_idx, ValBatches(np.stack(arrays), groups, pre.mean, pre.std)


def _selfsup_split(images: list, ok: list[int], cfg: TrainConfig,
                   pre: Preprocess) -> tuple[list[int], list[int], ValBatches]:
    """Held-out photos, each ranked among its own edited copies (:data:`VAL_EDITS`) and the others."""
    train_pos, val_pos = split_selfsup(len(ok), cfg.val_fraction, cfg.seed, cfg.max_val_photos)
    train_idx, val_idx = [ok[i] for i in train_pos], [ok[i] for i in val_pos]
    arrays, groups = [], []
    for k, i in enumerate(val_idx):
        im = images[i]
        arrays.append(centre(im, pre.resize, pre.crop))
        groups.append(f"photo{k}")
        for edit in VAL_EDITS.values():
            arrays.append(centre(edit(im).convert("RGB"), pre.resize, pre.crop))
            groups.append(f"photo{k}")
    return train_idx, val_idx, ValBatches(np.stack(arrays), groups, pre.mean, pre.std)
