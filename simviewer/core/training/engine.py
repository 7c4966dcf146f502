"""One epoch of training and one validation pass: :func:`train_one_epoch` and :func:`evaluate`."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import evaluate as retrieval
from .events import StepEvent, TrainingError


def autocast(device: torch.device, bf16: bool):
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
        with torch.inference_mode(), autocast(device, bf16):
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


def evaluate(model: nn.Module, val_loader: Iterable, device: torch.device, bf16: bool = False,
             should_stop: Callable[[], bool] | None = None) -> dict[str, float] | None:
    """Retrieval of same-group images among the validation set: recall@1, recall@5, mAP (each image
    queries all the others). None when stopped midway."""
    result = embed_batches(model, val_loader, device, bf16, should_stop)
    if result is None:
        return None
    vectors, groups = result
    v = vectors.double().numpy()
    try:
        r = retrieval.retrieval(v @ v.T, np.asarray([str(g) for g in groups]))
    except retrieval.EvalError as exc:
        raise TrainingError(f"the validation set cannot be scored: {exc}") from exc
    return {"recall@1": r.recall_at_1, "recall@5": r.recall_at_5, "mAP": r.mean_ap}



class Clock:
    """Time and step counts across a run, for each step's elapsed time, speed and time left."""

    def __init__(self, steps_per_epoch: int, epochs: int, start_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs
        self.last_epoch = start_epoch + epochs
        self.started = time.perf_counter()
        self.global_step = 0
        self.step_times: list[float] = []
        self.val_seconds = 0.0  # the last validation's duration: the ETA counts one per epoch left

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def step_done(self, epoch: int, step: int, seconds: float, images: int, loss: float, lr: float) -> StepEvent:
        self.global_step += 1
        self.step_times.append(seconds)
        recent = self.step_times[-20:]
        per_step = sum(recent) / len(recent)
        eta = per_step * (self.total_steps - self.global_step) + self.val_seconds * (self.last_epoch - epoch + 1)
        return StepEvent(epoch=epoch, last_epoch=self.last_epoch, step=step, steps_per_epoch=self.steps_per_epoch,
                         global_step=self.global_step, total_steps=self.total_steps, loss=loss, lr=lr,
                         elapsed=self.elapsed(), eta=eta, images_per_second=images / max(per_step, 1e-9))


def train_one_epoch(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    optimizer: torch.optim.Optimizer, batches: Iterator, device: torch.device, epoch: int, *,
                    clock: Clock, stop: Callable[[], bool], bf16: bool = False, history: dict,
                    best_path: str | None = None) -> Generator[StepEvent, None, list[float] | None]:
    """The steps of *epoch*: forward, loss, backward, optimizer step; yields a :class:`StepEvent`
    after each and returns the step losses, or None when *stop* asked before a step. A loss that
    is not finite raises TrainingError (naming *best_path*, the best checkpoint so far)."""
    losses: list[float] = []
    for step in range(1, clock.steps_per_epoch + 1):
        if stop():
            return None
        t_step = time.perf_counter()
        try:
            images, targets = next(batches)
        except StopIteration:
            break
        if stop():
            return None
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, bf16):
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
        yield clock.step_done(epoch, step, time.perf_counter() - t_step, images.shape[0], value, lr)
    return losses

