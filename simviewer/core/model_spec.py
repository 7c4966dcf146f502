"""The model an index was built with, as one typed, validated value (importable without torch).

An index manifest stores its model as a small JSON object (what :meth:`Embedder.describe` wrote).
:class:`ModelSpec` reads it once, checks every field, and is what the rest of simviewer passes
around: ``AnnIndex.model`` returns it and ``Embedder.from_spec`` rebuilds the network from it.

:func:`choose_model` is the one place where the user's ``--model``/``--weights`` meet the
folder's own model and the default.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from .registry import ARCHITECTURES

POOLINGS = ("gem", "avg")
DEFAULT_POOLING = "gem"
# An index written before pooling was recorded was average-pooled.
LEGACY_POOLING = "avg"
_MAX_TEXT = 4096  # longer strings in a manifest's model are damage, not a model
_ARCH_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_DIM = 65536


class ModelSpecError(ValueError):
    """A manifest's model entry that is not one simviewer wrote; the message says which field."""


def _text(d: dict, name: str, *, required: bool = True, default: str = "") -> str:
    value = d.get(name, None if required else default)
    if not isinstance(value, str):
        raise ModelSpecError(f"model {name} is {_show(value)}, not a text")
    if len(value) > _MAX_TEXT or "\0" in value:
        raise ModelSpecError(f"model {name} is not a plausible value ({len(value)} characters)")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class ModelSpec:
    """What an index's vectors were made with: enough to rebuild the embedder and to label it."""

    arch: str  # a key of core.registry.ARCHITECTURES
    weights: str  # "imagenet", "none", or the absolute path of a weights file
    pooling: str  # one of POOLINGS
    fingerprint: str  # Embedder.fingerprint: the identity of every vector
    label: str  # "ResNet-50 · ImageNet (IMAGENET1K_V2)"
    untrained: bool
    dim: int  # length of each vector
    threshold: float | None = None  # the library's calibrated duplicate threshold, when measured

    @classmethod
    def from_dict(cls, d: object) -> ModelSpec:
        """Read and check a manifest's ``"model"`` entry; :class:`ModelSpecError` says what is wrong."""
        if not isinstance(d, dict):
            raise ModelSpecError(f"the model entry is {type(d).__name__}, not an object")
        arch = _text(d, "arch")
        if not _ARCH_NAME.match(arch):  # an unregistered name is refused when an embedder is built from it
            raise ModelSpecError(f"model architecture {_show(arch)} is not an architecture name")
        known = ARCHITECTURES.get(arch)
        weights = _text(d, "weights")
        if weights not in ("imagenet", "none") and not os.path.isabs(weights):
            raise ModelSpecError(f"model weights {_show(weights)} are neither imagenet, none nor an absolute path")
        pooling = _text(d, "pooling", required=False, default=LEGACY_POOLING)
        if pooling not in POOLINGS:
            raise ModelSpecError(f"model pooling {_show(pooling)} is not one of {', '.join(POOLINGS)}")
        fingerprint = _text(d, "fingerprint")
        if not fingerprint:
            raise ModelSpecError("model fingerprint is empty")
        label = _text(d, "label", required=False, default=known.label if known else arch)
        untrained = d.get("untrained", weights == "none")
        if not isinstance(untrained, bool):
            raise ModelSpecError(f"model untrained is {_show(untrained)}, not true or false")
        dim = d.get("dim", known.dim if known else None)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
            raise ModelSpecError(f"model dim is {_show(dim)}, not a whole number from 1 to {MAX_DIM}")
        if known and dim != known.dim:
            raise ModelSpecError(f"model dim is {dim}; {arch} makes vectors of {known.dim}")
        threshold = d.get("threshold")
        if threshold is not None:
            threshold = check_threshold(threshold)
        return cls(arch, weights, pooling, fingerprint, label, untrained, dim, threshold)

    def to_dict(self) -> dict:
        """The manifest's ``"model"`` entry (the calibrated threshold lives beside the index)."""
        return {"arch": self.arch, "weights": self.weights, "fingerprint": self.fingerprint, "label": self.label,
                "untrained": self.untrained, "dim": self.dim, "pooling": self.pooling}

    def with_threshold(self, threshold: float | None) -> ModelSpec:
        return replace(self, threshold=None if threshold is None else check_threshold(threshold))

    @property
    def weights_kind(self) -> str:
        """``imagenet``, ``none`` or ``file``."""
        return self.weights if self.weights in ("imagenet", "none") else "file"

    @property
    def arch_label(self) -> str:
        known = ARCHITECTURES.get(self.arch)
        return known.label if known else self.arch


def check_threshold(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not -1.0 <= value <= 1.0:
        raise ModelSpecError(f"duplicate threshold {_show(value)} is not a cosine between -1 and 1")
    return float(value)


@dataclass(frozen=True)
class Choice:
    """What :func:`choose_model` decided: build ``Embedder(arch, weights, pooling=pooling)``.

    ``arch`` is None only when nothing was asked and there is no folder model: the default model
    (``embedder.default_embedder``) applies, with its own reason.
    """

    arch: str | None
    weights: str
    pooling: str
    reason: str
    spec: ModelSpec | None = None  # the folder's own model, when that is what was chosen


def choose_model(model: str | None, weights: str | None, indexed: ModelSpec | None) -> Choice:
    """The model a command runs with, from ``--model``, ``--weights`` and the folder's own model.

    Nothing asked: the folder's own model; for a folder without one, the default (``arch`` None).
    ``--weights CHECKPOINT`` without ``--model``: the architecture the checkpoint was trained on.
    ``--model`` without ``--weights``: the folder's weights if the folder uses that architecture,
    else its ImageNet weights. Asking for exactly the folder's model keeps its pooling, so nothing
    is embedded again. A ``--model`` that differs from a checkpoint's is refused when the embedder
    is built (it says which ``--model`` to use).
    """
    if not model and not weights:
        if indexed is not None:
            return Choice(indexed.arch, indexed.weights, indexed.pooling, "the model this folder was indexed with",
                          indexed)
        return Choice(None, "imagenet", DEFAULT_POOLING, "")
    arch = model or (checkpoint_arch_of(weights) if weights else None)
    if not arch:
        arch = indexed.arch if indexed is not None else _default_arch()
    if not weights:
        weights = indexed.weights if indexed is not None and indexed.arch == arch else "imagenet"
    if indexed is not None and indexed.arch == arch and _same_weights(indexed.weights, weights):
        return Choice(arch, indexed.weights, indexed.pooling, "as asked (the model this folder was indexed with)",
                      indexed)
    return Choice(arch, weights, DEFAULT_POOLING, "as asked")


def _default_arch() -> str:
    from .embedder import default_model

    return default_model().arch


def _same_weights(stored: str, asked: str) -> bool:
    lowered = asked.lower()
    if lowered in ("imagenet", "default", "pretrained"):
        return stored == "imagenet"
    if lowered in ("none", "untrained", "random"):
        return stored == "none"
    try:
        return stored not in ("imagenet", "none") and Path(asked).expanduser().resolve() == Path(stored)
    except (OSError, ValueError):
        return False


def checkpoint_arch_of(weights: str) -> str | None:
    """The architecture a ``--weights`` value names: a simviewer checkpoint's own; None otherwise."""
    if weights.lower() in ("imagenet", "default", "pretrained", "none", "untrained", "random"):
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        return None
    from .embedder import checkpoint_arch

    return checkpoint_arch(str(path))
