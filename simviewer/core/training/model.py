"""The network a run trains: which one to start from, what stays frozen, and its optimizer and
learning-rate schedule."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import embedder
from ..embedder import ModelChoice, WeightsSpec
from ..registry import ARCHITECTURES, DEFAULT_ARCH
from .checkpoint import checkpoint_arch
from .events import TrainingError

PROXY_LR_FACTOR = 10.0
WEIGHT_DECAY = 1e-4
LR_FACTOR = 0.3  # ReduceLROnPlateau: multiply the learning rate by this on a plateau

# Top-level children that make each network's last stage (name prefixes). EfficientNet-Lite's last
# block stage feeds a 1x1 convolution ("head") that widens it to the embedding: both are the stage.
_LAST_STAGE: dict[str, tuple[str, ...]] = {
    "googlenet": ("inception5",),
    "inception_v3": ("Mixed_7",),
    "efficientnet_lite0": ("stage7", "head"),
    "efficientnet_lite1": ("stage7", "head"),
    "efficientnet_lite2": ("stage7", "head"),
}


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
        arch = (checkpoint_arch(spec.path) if spec.kind == "file" and spec.path else None) or DEFAULT_ARCH
    return ModelChoice(arch, weights if weights is not None else "imagenet", "")


def describe_start(choice: ModelChoice) -> str:
    """``ResNet-50 with ImageNet weights (why)``: the starting model in words, for a log or a form."""
    label = ARCHITECTURES[choice.arch].label if choice.arch in ARCHITECTURES else choice.arch
    word = choice.weights.lower()
    what = ("ImageNet weights" if word in ("imagenet", "default", "pretrained")
            else "untrained weights" if word in ("none", "untrained", "random")
            else f"the weights of {Path(choice.weights).name}")
    return f"{label} with {what}" + (f" ({choice.reason})" if choice.reason else "")


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


def make_optimizer(model: nn.Module, criterion: nn.Module, lr: float, lr_patience: int):
    """AdamW over the trainable weights (and the loss's proxies at a higher rate, no decay), and a
    ReduceLROnPlateau on the validation metric: ``(optimizer, scheduler)``."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": WEIGHT_DECAY}]
    if any(True for _ in criterion.parameters()):
        groups.append({"params": list(criterion.parameters()), "lr": lr * PROXY_LR_FACTOR, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=LR_FACTOR,
                                                           patience=lr_patience)
    return optimizer, scheduler
