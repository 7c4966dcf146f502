"""CNN backbones that turn photos into L2-normalised embedding vectors.

A backbone is a classifier (torchvision's, or the bundled EfficientNet-Lite) with its last fully
connected layer replaced by the identity, so its output is the pooled feature of the last
convolutional stage: generalised-mean (GeM, p = 3) pooled by default, which weighs the strongest
activations more than an average does (Radenović et al., 2018) and measured better for
near-duplicates and retrieval (benchmarks/bench_quality.py). Every stored vector is keyed by
:attr:`Embedder.fingerprint`, which names the architecture, the exact weights, the pooling and the
preprocessing, so vectors from different models never mix.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import models

from .decoding import DecodeSpec, centre_crop_array
from .images import file_digest
from .model_spec import DEFAULT_POOLING, POOLINGS, ModelSpec
from .registry import ARCHITECTURES, DEFAULT_ARCH
from .system import usable_cores

log = logging.getLogger(__name__)

# Bumped whenever decoding or preprocessing changes in a way that changes vectors.
# 2: pooling is part of the model (GeM by default); EfficientNet-Lite preprocessing.
PIPELINE_VERSION = 2
CHECKPOINT_FORMAT = "simviewer-checkpoint"
UNTRAINED_SEED = 0
GEM_P = 3.0
# Set to 1 to never try a download of ImageNet weights (the bundled model is used instead).
OFFLINE_ENV = "SIMVIEWER_OFFLINE"
# What a checkpoint's preprocessing may say: a crop a network can take (training's image sizes) and a
# resize no more than twice it, so a damaged or hostile file cannot make every photo cost gigabytes.
CROP_RANGE = (32, 1024)
MAX_RESIZE_RATIO = 2.0


class EmbedderError(Exception):
    """A model that cannot be built; the message says what to do instead."""


class WeightsUnavailable(EmbedderError):
    """ImageNet weights are neither cached nor downloadable (usually: offline)."""

    def __init__(self, message: str, arch: str = "", cache_file: str = "") -> None:
        super().__init__(message)
        self.arch, self.cache_file = arch, cache_file


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop a square, normalise: the weights' own recipe."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_weights(cls, weights: models.WeightsEnum) -> Preprocess:
        t = weights.transforms()
        return cls(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std))

    @classmethod
    def from_checkpoint(cls, p: object, path: str) -> Preprocess:
        """The preprocessing a checkpoint file stores, checked: EmbedderError names what is wrong."""
        def bad(what: str) -> EmbedderError:
            return EmbedderError(f"{path} has unusable preprocessing: {what}; it was not written by simviewer's "
                                 "training, or it was damaged")

        if not isinstance(p, dict):
            raise bad(f"{type(p).__name__} instead of resize, crop, mean and std")
        sizes = {}
        for name in ("resize", "crop"):
            v = p.get(name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v != int(v):
                raise bad(f"{name} {v!r} is not a whole number of pixels")
            sizes[name] = int(v)
        lo, hi = CROP_RANGE
        resize, crop = sizes["resize"], sizes["crop"]
        if not lo <= crop <= hi:
            raise bad(f"crop {crop} is not between {lo} and {hi} pixels")
        if not crop <= resize <= MAX_RESIZE_RATIO * crop:
            raise bad(f"resize {resize} is not between the crop ({crop}) and {MAX_RESIZE_RATIO:g} times it")
        channels = {}
        for name in ("mean", "std"):
            v = p.get(name)
            if not isinstance(v, list | tuple) or len(v) != 3:
                raise bad(f"{name} is not three numbers (one per colour channel)")
            if not all(not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x) for x in v):
                raise bad(f"{name} {list(v)!r} holds a value that is not a finite number")
            channels[name] = tuple(float(x) for x in v)
        if not all(-1.0 <= x <= 2.0 for x in channels["mean"]):
            raise bad(f"mean {list(channels['mean'])} is outside -1..2 (pixels are scaled to 0..1)")
        if not all(1e-3 <= x <= 10.0 for x in channels["std"]):
            raise bad(f"std {list(channels['std'])} must be between 0.001 and 10 (a std of 0 makes every "
                      "photo score the same)")
        return cls(resize, crop, channels["mean"], channels["std"])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One image as a normalised (3, crop, crop) float tensor."""
        return self.normalise(self.crop_array(image)[None])[0].contiguous()

    def crop_array(self, image: Image.Image) -> np.ndarray:
        """Short side to *resize*, centre square of *crop*, as (crop, crop, 3) uint8."""
        return centre_crop_array(image, self.resize, self.crop)

    def normalise(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, crop, crop, 3) uint8 -> (N, 3, crop, crop) float, normalised, in channels_last.

        One pass over the batch: about 0.3 ms a photo, against 1.2 ms for a per-image to-tensor,
        normalise, stack and channels_last copy. Equal to ``(x / 255 - mean) / std`` within float
        rounding, so vectors do not change.
        """
        x = torch.as_tensor(pixels).permute(0, 3, 1, 2)  # NHWC memory seen as NCHW: channels_last
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        scale = 1.0 / (torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        return x.float().sub_(mean).mul_(scale)

    @property
    def spec(self) -> DecodeSpec:
        """What a decoder needs to know to prepare photos for this network."""
        return DecodeSpec(self.min_side, self.resize, self.crop)

    @property
    def min_side(self) -> int:
        """Decode size to ask a JPEG decoder for: no smaller than the resize target."""
        return self.resize


@dataclass(frozen=True)
class WeightsSpec:
    """What the user asked for: ``imagenet``, ``none`` or a path to a weights file."""

    kind: str  # "imagenet" | "none" | "file"
    path: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> WeightsSpec:
        if text is None or text.lower() in ("imagenet", "default", "pretrained"):
            return cls("imagenet")
        if text.lower() in ("none", "untrained", "random"):
            return cls("none")
        p = Path(text).expanduser()
        if not p.is_file():
            raise EmbedderError(
                f"weights file not found: {text} (use --weights imagenet, --weights none, "
                "or the path of a .pt/.pth file)"
            )
        return cls("file", str(p.resolve()))

    def __str__(self) -> str:
        return self.path if self.kind == "file" else self.kind


class GeM(nn.Module):
    """Generalised-mean pooling: (mean of x^p)^(1/p) over each channel's map, p = 3.

    Between average (p = 1) and max pooling (p -> inf): a few strong activations count more than a
    large bland area, which keeps an object's signature when a photo is cropped or bordered.
    Computed in float32 whatever the autocast, since x^3 of bf16 values loses the mean.
    """

    def __init__(self, p: float = GEM_P, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GeM is homogeneous (GeM(c x) = c GeM(x)): pooling x / max(x) and scaling back gives the same
        # vector, and the clamp then only drops values tiny next to the map's largest, not values
        # tiny in absolute terms (an untrained deep network's last maps can be all below 1e-6).
        x = x.float()
        scale = x.detach().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-30)
        x = (x / scale).clamp(min=self.eps).pow(self.p)
        return nn.functional.adaptive_avg_pool2d(x, 1).pow(1.0 / self.p) * scale

    def extra_repr(self) -> str:
        return f"p={self.p}"


def set_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """Put *pooling* in place of the network's global average pool (every backbone names it avgpool)."""
    if pooling not in POOLINGS:
        raise EmbedderError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if pooling == "gem":
        model.avgpool = GeM()
    return model


@dataclass(frozen=True)
class ModelChoice:
    """The model a new library gets when the user has not chosen one, and why."""

    arch: str
    weights: str
    reason: str
    fallback: bool = False  # the default's weights failed to download: the bundled model stands in


def _download_possible(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of *url* answers at all; a few ms when offline (the name does not resolve)."""
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        return False
    import socket
    from urllib.parse import urlparse

    host = urlparse(url).hostname
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def default_model() -> ModelChoice:
    """ResNet-50 with ImageNet weights where they are cached or can be downloaded; otherwise the
    bundled EfficientNet-Lite0, whose ImageNet weights were installed with simviewer.

    Never an untrained network: that is only ever the user's explicit choice.
    """
    from .registry import BUNDLED_ARCH

    weights = _imagenet_weights(DEFAULT_ARCH)
    label = ARCHITECTURES[DEFAULT_ARCH].label
    if _weights_cache_file(weights).is_file():
        return ModelChoice(DEFAULT_ARCH, "imagenet", f"{label} ImageNet weights are in the cache")
    if _download_possible(weights.url):
        return ModelChoice(DEFAULT_ARCH, "imagenet", f"{label} ImageNet weights are downloaded once, then cached")
    return ModelChoice(BUNDLED_ARCH, "imagenet",
                       f"{label} ImageNet weights are not cached and cannot be downloaded (offline?); using "
                       f"the pretrained {ARCHITECTURES[BUNDLED_ARCH].label} installed with simviewer")


def bundled_fallback(reason: str) -> ModelChoice:
    """The bundled pretrained model, for when the ImageNet weights of the default failed to load."""
    from .registry import BUNDLED_ARCH

    return ModelChoice(BUNDLED_ARCH, "imagenet",
                       f"{reason}; using the pretrained {ARCHITECTURES[BUNDLED_ARCH].label} installed with simviewer",
                       fallback=True)


def default_embedder(**kwargs) -> tuple[Embedder, ModelChoice]:
    """The embedder of :func:`default_model`, its weights fetched now where they must be downloaded,
    so that a download that fails falls back to the bundled pretrained model before any work starts
    (never to an untrained network). *kwargs* go to :class:`Embedder`."""
    choice = default_model()
    embedder = Embedder(choice.arch, choice.weights, **kwargs)
    if not embedder.builds_offline:
        try:
            embedder.load()
        except WeightsUnavailable as exc:
            log.info("%s", exc)
            choice = bundled_fallback(f"the {ARCHITECTURES[choice.arch].label} ImageNet weights could not be "
                                      "downloaded")
            embedder = Embedder(choice.arch, choice.weights, **kwargs)
    return embedder, choice


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_threads() -> int:
    """Intra-op threads for inference: all cores this process may use."""
    return usable_cores()


def _imagenet_weights(arch: str) -> models.WeightsEnum:
    return models.get_model_weights(arch).DEFAULT


def _weights_cache_file(weights: models.WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _build_torchvision(arch: str, weights: models.WeightsEnum | None) -> nn.Module:
    kwargs = {}
    if arch in ("googlenet", "inception_v3"):
        # The auxiliary classifiers only matter for training from scratch on ImageNet.
        kwargs["aux_logits"] = weights is not None
        if weights is None:
            kwargs["init_weights"] = True
    return models.get_model(arch, weights=weights, **kwargs)


def _headless(model: nn.Module) -> nn.Module:
    model.fc = nn.Identity()
    if hasattr(model, "aux1"):
        model.aux1 = model.aux2 = None
    if hasattr(model, "AuxLogits"):
        model.AuxLogits = None
    model.aux_logits = False
    return model


def _load_state_dict_file(path: str) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message advises an unsafe load: it is not passed on
        text = str(exc)
        if "Unsupported global" not in text:
            detail = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n", 1)[0].strip()
            if "eights only" in detail or "weights_only" in detail or not detail:
                detail = "unreadable"
            raise EmbedderError(f"cannot load weights file {path}: not a PyTorch weights file ({detail})") from None
        raise EmbedderError(f"{path} was refused for safety: besides weights it holds Python objects (a whole "
                            "saved model, say), and loading those can run code; give a state dict or a "
                            "simviewer checkpoint") from None
    except Exception as exc:
        raise EmbedderError(f"cannot load weights file {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise EmbedderError(f"{path} does not hold a state dict or a simviewer checkpoint")
    return obj


@dataclass(frozen=True)
class Resolved:
    """A model choice made concrete: identity, label, preprocessing, and how to build it."""

    weights_id: str
    label: str
    preprocess: Preprocess
    build: Callable[[], nn.Module]  # returns the headless network (with its pooling) in eval mode
    pooling: str = DEFAULT_POOLING
    arch: str = DEFAULT_ARCH


def _seeded(arch: str) -> nn.Module:
    """The untrained network, the same for everyone: weights from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        if ARCHITECTURES[arch].bundled:
            from . import efficientnet_lite

            return efficientnet_lite.efficientnet_lite(arch, pretrained=False)
        return _build_torchvision(arch, None)


def native_preprocess(arch: str) -> Preprocess:
    """The preprocessing the architecture's ImageNet weights were trained with."""
    if ARCHITECTURES[arch].bundled:
        from . import efficientnet_lite

        p = efficientnet_lite.preprocessing(arch)
        return Preprocess(p.resize, p.crop, p.mean, p.std)
    return Preprocess.from_weights(_imagenet_weights(arch))


def _bundled(arch: str, pooling: str) -> Resolved:
    from . import efficientnet_lite

    path = efficientnet_lite.bundled_weights_path(arch)
    tag = Path(path).stem.rsplit("-", 1)[-1] if path else "missing"

    def build() -> nn.Module:
        try:
            model = efficientnet_lite.efficientnet_lite(arch, pretrained=True)
        except efficientnet_lite.WeightsNotInstalled as exc:
            raise WeightsUnavailable(str(exc), arch=arch) from exc
        return set_pooling(_headless(model), pooling).eval()

    return Resolved(f"imagenet:bundled-{tag}", "ImageNet (installed with simviewer)", native_preprocess(arch),
                    build, pooling, arch)


def checkpoint_arch(path: str) -> str | None:
    """The architecture a simviewer checkpoint names; None for any other file (or an unreadable one:
    building the embedder then says why)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format file (mmap), or not loadable at all
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and obj.get("arch") in ARCHITECTURES:
        return str(obj["arch"])
    return None


def resolve(arch: str | None, spec: WeightsSpec, pooling: str = DEFAULT_POOLING) -> Resolved:
    """Work out what *arch* + *spec* means without building the network where possible.

    ImageNet and untrained networks are only built (and ImageNet weights only fetched) when the
    first image is embedded, so opening an up-to-date library costs no model load. A weights
    file is read and checked at once, so a wrong file fails before any work starts. *arch* None:
    the architecture a simviewer checkpoint names, else the default (ResNet-50).
    """
    state = None
    if spec.kind == "file":
        assert spec.path is not None
        state = _load_state_dict_file(spec.path)
        if arch is None and state.get("format") == CHECKPOINT_FORMAT and state.get("arch") in ARCHITECTURES:
            arch = str(state["arch"])
    arch = arch or DEFAULT_ARCH
    if arch not in ARCHITECTURES:
        raise EmbedderError(f"unknown model {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if pooling not in POOLINGS:
        raise EmbedderError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    preprocess = native_preprocess(arch)

    if spec.kind == "imagenet" and ARCHITECTURES[arch].bundled:
        return _bundled(arch, pooling)
    if spec.kind == "imagenet":
        default_weights = _imagenet_weights(arch)

        def build() -> nn.Module:
            try:
                model = _build_torchvision(arch, default_weights)
            except Exception as exc:  # URLError, socket errors, HTTP errors, a half-written file
                raise WeightsUnavailable(
                    f"ImageNet weights for {arch} are not in the cache "
                    f"({_weights_cache_file(default_weights)}) and could not be downloaded "
                    f"({type(exc).__name__}: {exc}). Alternatives: copy that file there from a machine "
                    "that has it, or pass it with --weights PATH; use the pretrained model installed with "
                    "simviewer (--model efficientnet_lite0); fine-tune on your own photos with "
                    "`simviewer train`; or use --weights none for an untrained network.",
                    arch=arch,
                    cache_file=str(_weights_cache_file(default_weights)),
                ) from exc
            return set_pooling(_headless(model), pooling).eval()

        return Resolved(f"imagenet:{default_weights.name}", f"ImageNet ({default_weights.name})", preprocess, build,
                        pooling, arch)
    if spec.kind == "none":
        return Resolved(f"untrained:seed{UNTRAINED_SEED}", "untrained (random init)", preprocess,
                        lambda: set_pooling(_headless(_seeded(arch)), pooling).eval(), pooling, arch)
    return _resolve_file(arch, spec.path, state, pooling, preprocess)


def _resolve_file(arch: str, path: str, state: dict, pooling: str, preprocess: Preprocess) -> Resolved:
    """A weights file: a simviewer checkpoint (with its preprocessing and pooling) or a state dict."""
    if state.get("format") == CHECKPOINT_FORMAT:
        if state.get("arch") != arch:
            raise EmbedderError(
                f"{path} is a {state.get('arch')} checkpoint, not {arch}; use --model {state.get('arch')}"
            )
        if "preprocess" in state:  # checked before any weights are loaded
            preprocess = Preprocess.from_checkpoint(state["preprocess"], path)
        model = _headless(_seeded(arch))
        _load_into(model, state.get("model"), path, ignore_prefix=None)
        if state.get("transform_input"):  # fine-tuned from ImageNet GoogLeNet / Inception v3 weights
            model.transform_input = True
        pooling = state.get("pooling", pooling) if state.get("pooling") in POOLINGS else pooling
        label = f"fine-tuned ({Path(path).name})"
    else:
        sd = state["state_dict"] if isinstance(state.get("state_dict"), dict) else state
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        model = _seeded(arch)
        if arch == "inception_v3":
            # torchvision's Inception weights (ported from TensorFlow) expect their input re-scaled.
            model.transform_input = True
        _load_into(model, sd, path, ignore_prefix=("fc.", "aux1.", "aux2.", "AuxLogits."))
        label = f"weights file ({Path(path).name})"
    model = set_pooling(_headless(model), pooling).eval()
    return Resolved(f"file:{file_digest(path, 8)}", label, preprocess, lambda: model, pooling, arch)


def _load_into(model: nn.Module, sd: object, path: str, ignore_prefix: tuple[str, ...] | None) -> None:
    """Load *sd* strictly, except for the classifier heads, which are dropped anyway."""
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EmbedderError(f"{path} does not look like a state dict (non-tensor entries)")
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not (ignore_prefix and k.startswith(ignore_prefix))]
    unexpected = [k for k in result.unexpected_keys if not (ignore_prefix and k.startswith(ignore_prefix))]
    if missing or unexpected:
        detail = (f"missing {missing[:3]}" if missing else "") + (f" unexpected {unexpected[:3]}" if unexpected else "")
        raise EmbedderError(f"{path} does not match the architecture: {detail.strip()}")


class Embedder:
    """A headless backbone plus its preprocessing; turns images into unit vectors.

    Not thread-safe: one Embedder is used by one thread at a time.
    """

    def __init__(
        self,
        arch: str | None = None,
        weights: WeightsSpec | str | None = "imagenet",
        *,
        precision: str = "auto",
        threads: int | None = None,
        device: str | None = None,
        pooling: str = DEFAULT_POOLING,
    ) -> None:
        spec = weights if isinstance(weights, WeightsSpec) else WeightsSpec.parse(weights)
        self.weights = spec
        resolved = resolve(arch, spec, pooling)  # arch None: a checkpoint's own, else the default
        self.arch = arch = resolved.arch
        self.pooling = resolved.pooling
        self.weights_id, self.weights_label = resolved.weights_id, resolved.label
        self.preprocess = resolved.preprocess
        self._build = resolved.build
        self._model: nn.Module | None = None
        self._inference: nn.Module | None = None
        self.dim = ARCHITECTURES[arch].dim
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.threads = threads or default_threads()
        if precision not in ("auto", "bf16", "fp32"):
            raise EmbedderError(f"precision must be auto, bf16 or fp32, not {precision!r}")
        if precision == "auto":
            use_bf16 = self.device.type == "cuda" or cpu_supports_bf16()
            self._bf16_checked = False
        else:
            use_bf16 = precision == "bf16"
            self._bf16_checked = True
        self.use_bf16 = use_bf16
        self.bf16_min_cosine: float | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec, **kwargs) -> Embedder:
        """The embedder an index was built with (``AnnIndex.model``); *kwargs* go to the constructor."""
        return cls(spec.arch, spec.weights, pooling=spec.pooling, **kwargs)

    def spec(self) -> ModelSpec:
        """This embedder as the typed model an index records (:meth:`describe` is its manifest form)."""
        return ModelSpec.from_dict(self.describe())

    @property
    def model(self) -> nn.Module:
        """The network, built on first use (this is where ImageNet weights get fetched)."""
        if self._model is None:
            if self.device.type == "cpu":
                torch.set_num_threads(self.threads)
            self._model = self._build().to(self.device, memory_format=torch.channels_last)
        return self._model

    def load(self) -> Embedder:
        """Build the network now, so that unavailable weights fail early; returns self."""
        _ = self.model
        return self

    @property
    def built(self) -> bool:
        return self._model is not None

    @property
    def builds_offline(self) -> bool:
        """True when building the network needs no download (untrained, a file, or cached weights)."""
        if self.weights.kind != "imagenet" or ARCHITECTURES[self.arch].bundled:
            return True
        return _weights_cache_file(_imagenet_weights(self.arch)).is_file()

    @property
    def fingerprint(self) -> str:
        """Identity of every vector this embedder produces."""
        return f"{self.arch}|{self.weights_id}|{self.pooling}|p{PIPELINE_VERSION}"

    @property
    def label(self) -> str:
        return f"{ARCHITECTURES[self.arch].label} · {self.weights_label}"

    @property
    def untrained(self) -> bool:
        return self.weights.kind == "none"

    @property
    def inference_model(self) -> nn.Module:
        """The network with every batch norm folded into the convolution before it, for embedding.

        Same vectors within float rounding (relative difference below 1e-6), one memory pass fewer
        per layer: 15-20 % faster for a ResNet-50 on a CPU (benchmarks/bench_ingest.py --profile).
        :attr:`model` stays as it is, for Grad-CAM and training, which need the batch norms' own
        outputs and gradients. A network that cannot be traced is used unfused.
        """
        if self._inference is None:
            model = self.model
            try:
                from torch.fx.experimental.optimization import fuse

                with torch.no_grad():
                    self._inference = fuse(model.eval()).to(memory_format=torch.channels_last)
            except Exception as exc:  # a custom network with Python control flow, say
                log.info("cannot fold batch norms of %s (%s); embedding with the network as it is", self.label, exc)
                self._inference = model
        return self._inference

    def _forward(self, batch: torch.Tensor, bf16: bool) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        model = self.inference_model
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(batch)
        out = out.float()
        return nn.functional.normalize(out.flatten(1), dim=1)

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed (N, 3, H, W) batch; returns float32 (N, dim), rows of norm 1.

        With ``precision="auto"`` the first 8 images of the first batch are also run in fp32; bf16
        is kept only if every one of their vectors is within the architecture's bound (cosine 0.999,
        0.99 for EfficientNet-Lite: see core.registry) of its fp32 twin, otherwise this embedder
        stays in fp32 (and the batch is embedded again in fp32).
        """
        if self.use_bf16 and not self._bf16_checked:
            out = self._forward(batch, bf16=True)
            ref = self._forward(batch[:8], bf16=False)
            cos = float((ref * out[:8]).sum(1).min())
            self.bf16_min_cosine = cos
            self._bf16_checked = True
            if cos < ARCHITECTURES[self.arch].bf16_min_cosine:
                log.info("bf16 drifts from fp32 (min cosine %.5f); using fp32 for %s", cos, self.label)
                self.use_bf16 = False
                out = self._forward(batch, bf16=False)
            else:
                log.info("bf16 autocast on: min cosine to fp32 %.5f", cos)
        else:
            out = self._forward(batch, self.use_bf16)
        return out.cpu().numpy().astype(np.float32, copy=False)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        pre = self.preprocess
        out = [
            self.embed_tensors(pre.normalise(np.stack([pre.crop_array(im) for im in images[i : i + batch_size]])))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_paths(self, paths: Sequence[str | os.PathLike], batch_size: int = 32) -> np.ndarray:
        """Embed files; raises ImageError for the first unreadable one (use Library for folders)."""
        from .images import load_image

        images = [load_image(p, self.preprocess.min_side).image for p in paths]
        return self.embed_images(images, batch_size)

    def describe(self) -> dict:
        """What gets stored in an index manifest to rebuild this embedder later."""
        return {
            "arch": self.arch,
            "weights": str(self.weights),
            "fingerprint": self.fingerprint,
            "label": self.label,
            "untrained": self.untrained,
            "dim": self.dim,
            "pooling": self.pooling,
        }

