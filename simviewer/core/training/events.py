"""What a training run tells its caller: one typed event per step, per epoch and per stage, always
built with keywords, and the one error type a run raises for bad data, options or checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

METRICS = ("recall@1", "recall@5", "mAP")


class TrainingError(Exception):
    """A dataset, option or checkpoint that cannot be trained on; the message says why."""


@dataclass(frozen=True, kw_only=True)
class Preparing:
    """Decoding the dataset into memory (once per run)."""

    done: int
    total: int


@dataclass(frozen=True, kw_only=True)
class Info:
    """A note for the log: why a checkpoint is not resumed, images left out, precision used."""

    message: str


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class BeforeTraining:
    """Validation metrics of the starting weights, before any step: the gain is measured from here."""

    epoch: int  # epochs already done (0, or the resumed checkpoint's epoch)
    metrics: dict[str, float]
    seconds: float


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class CheckpointSaved:
    """An epoch beat the starting model and every epoch before it: written to *path*."""

    path: str
    epoch: int
    metric: str
    value: float


@dataclass(frozen=True, kw_only=True)
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

    @classmethod
    def stopped_before_training(cls, metric: str) -> TrainingDone:
        """A run stopped before its first validation: nothing measured, nothing written."""
        return cls(reason="stopped", metric=metric, before={}, best=None, best_epoch=None, best_path=None,
                   epochs_run=0, last_epoch=0, seconds=0.0, seconds_per_epoch=())

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
