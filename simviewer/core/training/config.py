"""What a run is asked to do (:class:`TrainConfig`) and the choices made from it before any work:
where the checkpoint goes, how many threads, which device and precision."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..embedder import cpu_supports_bf16, default_threads
from ..paths import checkpoint_dirs
from ..registry import ARCHITECTURES
from .events import METRICS, TrainingError

MODES = ("auto", "supervised", "selfsup")


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
        problem = self._model_problem() or self._number_problem() or self._choice_problem()
        if problem:
            raise TrainingError(problem)
        return self

    def _model_problem(self) -> str:
        if self.mode not in MODES:
            return f"mode must be one of {', '.join(MODES)}, not {self.mode!r}"
        if self.arch is not None and self.arch not in ARCHITECTURES:
            return f"unknown model {self.arch!r}; choose one of: {', '.join(ARCHITECTURES)}"
        min_size = 75 if self.arch == "inception_v3" else 32  # the others reduce 32 px to one pixel
        if not min_size <= self.image_size <= 1024:
            return (f"image size must be between {min_size} and 1024 pixels for {self.arch or 'the model'}, "
                    f"not {self.image_size}")
        return ""

    def _number_problem(self) -> str:
        if self.batch_size < 2:
            return "batch size must be at least 2"
        if self.lr is not None and not 0 < self.lr < 1:
            return f"learning rate must be between 0 and 1, not {self.lr}"
        if self.epochs < 1:
            return "epochs must be at least 1"
        if self.threads is not None and self.threads < 1:
            return "threads must be at least 1"
        if not 0 < self.val_fraction < 1:
            return f"validation fraction must be between 0 and 1, not {self.val_fraction}"
        if self.patience < 0 or self.lr_patience < 0:
            return "patience must be 0 or more"
        return ""

    def _choice_problem(self) -> str:
        if self.metric not in METRICS:
            return f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}"
        if self.precision not in ("auto", "bf16", "fp32"):
            return f"precision must be auto, bf16 or fp32, not {self.precision!r}"
        if self.temperature is not None and not self.temperature > 0:
            return "temperature must be positive"
        if self.min_steps < 1:
            return "min_steps must be at least 1"
        if self.max_val_photos < 2:
            return "max_val_photos must be at least 2"
        return ""

    def to_dict(self) -> dict:
        """Plain values only (paths as strings), as stored in a checkpoint."""
        return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in asdict(self).items()}


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


def output_path(cfg: TrainConfig, folder: Path, mode: str) -> Path:
    """The checkpoint file a run writes (``cfg.out``, else :func:`default_out_path`)."""
    out = Path(cfg.out).expanduser() if cfg.out else default_out_path(folder, cfg.arch, mode)
    if out.exists() and out.is_dir():
        raise TrainingError(f"the output {out} is a folder; give a file name such as {out / 'model.pt'}")
    return out


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


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "fp32":
        return False
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
    if precision == "bf16" and not supported:
        raise TrainingError(f"bf16 was asked for but this {device.type.upper()} does not support it")
    return supported
