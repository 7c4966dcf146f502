"""Why do two photos match? Grad-CAM for embedding similarity, overlays, receptive fields.

For a pair (A, B) the map on B weights each channel of a convolutional layer's activation on B by
the spatial mean of d cos(f(A), f(B)) / d activation, sums the channels and keeps the positive part
(Selvaraju et al., 2017, with the cosine to A's embedding as the target instead of a class
score). The map on A is the same with the roles swapped. One batched forward and backward pass
gives both: the target is cos(f_A, sg(f_B)) + cos(sg(f_A), f_B), where sg stops the gradient.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from .embedder import Embedder, GeM, Preprocess

log = logging.getLogger(__name__)

# The last convolutional block of each backbone: coarse but the most semantic.
DEFAULT_LAYERS = {
    "resnet18": "layer4", "resnet34": "layer4", "resnet50": "layer4", "resnet101": "layer4",
    "resnet152": "layer4", "googlenet": "inception5b", "inception_v3": "Mixed_7c",
    "efficientnet_lite0": "head", "efficientnet_lite1": "head", "efficientnet_lite2": "head",
}


class GradCamError(Exception):
    """A layer or model that cannot be explained; the message says why."""


# -- hooks --------------------------------------------------------------------------------------
class ActivationGrabber:
    """Context manager: records a layer's output and the gradient that flows back into it.

    The hooks are removed on exit, whatever happens inside, so a model is never left hooked.
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        modules = dict(model.named_modules())
        if layer not in modules:
            candidates = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
            raise GradCamError(f"no layer named {layer!r}; top-level layers: {', '.join(candidates)}")
        self.module = modules[layer]
        self.activation: torch.Tensor | None = None
        self.gradient: torch.Tensor | None = None
        self._handle = None

    def _forward_hook(self, module, inputs, output) -> None:
        self.activation = output
        if output.requires_grad:
            output.register_hook(self._save_gradient)

    def _save_gradient(self, grad: torch.Tensor) -> None:
        self.gradient = grad

    def __enter__(self) -> ActivationGrabber:
        self._handle = self.module.register_forward_hook(self._forward_hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.activation = self.gradient = None  # drop the graph's tensors with the hooks


def grad_cam(
    model: nn.Module, batch: torch.Tensor, layer: str, target: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[np.ndarray, torch.Tensor]:
    """Raw Grad-CAM maps (N, h, w), ReLU'd, not normalised; and the model output (detached).

    *target* maps the model output (N, D) to a scalar to explain.
    """
    with ActivationGrabber(model, layer) as grab, torch.enable_grad():
        x = batch.detach().clone().requires_grad_(True)  # makes a graph even with frozen weights
        out = model(x)
        model.zero_grad(set_to_none=True)
        target(out).backward()
        act, grad = grab.activation, grab.gradient
        if act is None or grad is None or act.dim() != 4:
            raise GradCamError(f"layer {layer!r} did not produce a 4-D activation with a gradient")
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * act).sum(dim=1))
        return cam.detach().float().cpu().numpy(), out.detach()


# -- geometry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropGeometry:
    """Where the network's square input sits in the original (oriented) photo, in pixels."""

    left: float
    top: float
    size: float  # side of the square the network saw, in original pixels

    @classmethod
    def for_image(cls, width: int, height: int, pre: Preprocess) -> CropGeometry:
        scale = pre.resize / min(width, height)  # short side -> resize
        side = pre.crop / scale
        return cls((width - side) / 2, (height - side) / 2, side)

    def scaled(self, factor: float) -> CropGeometry:
        return CropGeometry(self.left * factor, self.top * factor, self.size * factor)


@dataclass(frozen=True)
class PairExplanation:
    score: float  # cosine of the two embeddings
    cam_a: np.ndarray  # (h, w) in [0, 1]
    cam_b: np.ndarray
    geometry_a: CropGeometry
    geometry_b: CropGeometry
    layer: str


def normalise(cam: np.ndarray) -> np.ndarray:
    cam = cam - cam.min()
    peak = cam.max()
    return cam / peak if peak > 0 else cam


class Explainer:
    """Explains pairs with a backbone of its own (never share an Embedder's network across threads)."""

    def __init__(self, embedder: Embedder, layer: str | None = None) -> None:
        self.embedder = embedder
        self.layer = layer or DEFAULT_LAYERS[embedder.arch]
        self.model = embedder.model
        ActivationGrabber(self.model, self.layer)  # fail early on a wrong layer name

    def explain_tensors(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[float, np.ndarray, np.ndarray]:
        batch = torch.stack([xa, xb]).to(self.embedder.device)

        def target(out: torch.Tensor) -> torch.Tensor:
            fa, fb = out[0], out[1]
            cos = nn.functional.cosine_similarity
            return cos(fa, fb.detach(), dim=0) + cos(fa.detach(), fb, dim=0)

        cams, out = grad_cam(self.model, batch, self.layer, target)
        score = float(nn.functional.cosine_similarity(out[0], out[1], dim=0))
        return score, normalise(cams[0]), normalise(cams[1])

    def explain(self, a: Image.Image, b: Image.Image) -> PairExplanation:
        pre = self.embedder.preprocess
        score, cam_a, cam_b = self.explain_tensors(pre(a), pre(b))
        return PairExplanation(
            score, cam_a, cam_b,
            CropGeometry.for_image(a.width, a.height, pre), CropGeometry.for_image(b.width, b.height, pre),
            self.layer,
        )


# -- colour and overlays ------------------------------------------------------------------------
def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) to sRGB in [0, 1], clipped."""
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    fy = (L + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200
    eps = 216 / 24389

    def finv(t):
        return np.where(t**3 > eps, t**3, (116 * t - 16) / (24389 / 27))

    xyz = np.stack([finv(fx) * 0.95047, finv(fy), finv(fz) * 1.08883], axis=1)
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    rgb = xyz @ m.T
    rgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.clip(rgb, 0, None) ** (1 / 2.4) - 0.055)
    return np.clip(rgb, 0, 1)


def perceptual_colormap(n: int = 256) -> np.ndarray:
    """A (n, 3) uint8 map from dark blue-violet through magenta and orange to pale yellow.

    Lightness rises linearly (L* 12 -> 96), so equal steps of the map look like equal steps of
    heat, and it still reads in greyscale and for red-green colour blindness.
    """
    t = np.linspace(0, 1, n)
    L = 12 + 84 * t
    hue = np.deg2rad(285 + 160 * t)  # violet -> magenta -> red -> orange -> yellow (not through green)
    chroma = 55 * np.sin(np.pi * np.clip(t * 0.9 + 0.08, 0, 1)) + 10
    lab = np.stack([L, chroma * np.cos(hue), chroma * np.sin(hue)], axis=1)
    return (_lab_to_srgb(lab) * 255 + 0.5).astype(np.uint8)


COLORMAP = perceptual_colormap()


def upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a (h, w) map to (height, width), pixel centres aligned."""
    t = torch.from_numpy(np.ascontiguousarray(cam, np.float32))[None, None]
    up = nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def overlay(photo: Image.Image, cam: np.ndarray, geometry: CropGeometry, opacity: float = 0.5) -> Image.Image:
    """Blend the heat map onto *photo* at its own resolution.

    *geometry* is relative to the photo's full size; pass ``geometry.scaled(...)`` for a resized
    photo. The parts of the photo the network did not see (outside the centre crop) are greyed,
    so nobody reads meaning into them.
    """
    photo = photo.convert("RGB")
    w, h = photo.size
    base = np.asarray(photo, np.float32)
    out = base * 0.45 + 128 * 0.55  # unseen: washed out
    x0, y0 = int(round(geometry.left)), int(round(geometry.top))
    side = max(1, int(round(geometry.size)))
    heat = upsample(cam, side, side)
    # Intersect the crop square with the photo (it lies inside it for centre crops; guard anyway).
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if cx1 > cx0 and cy1 > cy0:
        sub = heat[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        colours = COLORMAP[np.clip((sub * 255).astype(np.int32), 0, 255)].astype(np.float32)
        region = base[cy0:cy1, cx0:cx1]
        out[cy0:cy1, cx0:cx1] = region * (1 - opacity) + colours * opacity
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def side_by_side(left: Image.Image, right: Image.Image, height: int = 512, gap: int = 12,
                 caption: str | None = None) -> Image.Image:
    """Two images at the same height on a white sheet, with an optional caption band on top."""
    def fit(im):
        return im.resize((max(1, round(im.width * height / im.height)), height), Image.LANCZOS)

    a, b = fit(left), fit(right)
    band = 36 if caption else 0
    sheet = Image.new("RGB", (a.width + gap + b.width, height + band), "white")
    sheet.paste(a, (0, band))
    sheet.paste(b, (a.width + gap, band))
    if caption:
        from PIL import ImageDraw

        ImageDraw.Draw(sheet).text((8, 10), caption, fill=(20, 20, 20))
    return sheet


# -- receptive fields ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StageInfo:
    name: str
    out_size: tuple[int, int]  # (h, w) of the output for the network's input size
    channels: int
    stride: int  # input pixels between neighbouring output cells
    receptive_field: int  # input pixels one output cell depends on, side of the square
    offset: float  # input coordinate of the centre of cell 0's receptive field
    params: int

    def cell_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) in network-input pixels of what cell (row, col) sees.

        Pixel i spans [i, i + 1), so a field centred on pixel c spans c + 0.5 -/+ half its side.
        """
        cx, cy = self.offset + col * self.stride + 0.5, self.offset + row * self.stride + 0.5
        half = self.receptive_field / 2
        return cx - half, cy - half, cx + half, cy + half


Stage = tuple[str, list[nn.Module]]


def stages(model: nn.Module) -> list[Stage]:
    """The top-level blocks that transform the image, in order, each with the batch norms and
    activations that follow it folded in (they change no geometry); classifier parts left out."""
    skip = (nn.AdaptiveAvgPool2d, GeM, nn.Dropout, nn.Identity, nn.Linear, nn.Flatten)
    out: list[Stage] = []
    for name, m in model.named_children():
        if m is None or isinstance(m, skip) or name.startswith("aux") or name == "AuxLogits":
            continue
        if out and isinstance(m, (nn.BatchNorm2d, nn.ReLU)):
            out[-1][1].append(m)
        else:
            out.append((name, [m]))
    return out


def _run(stage: Stage, x: torch.Tensor) -> torch.Tensor:
    for m in stage[1]:
        x = m(x)
    return x


def _support_rows(grad: torch.Tensor) -> np.ndarray:
    rows = grad.abs().sum(dim=(0, 1, 3)).cpu().numpy()  # over batch, channels and columns
    return np.nonzero(rows > 0)[0]


def receptive_fields(embedder: Embedder, tall: int = 2048, narrow: int = 96) -> list[StageInfo]:
    """Per-stage stride, output size and theoretical receptive field, measured on the model itself.

    A copy of the network gets positive weights, identity batch norms, average pools in place of
    max pools and plain ReLUs in place of clipped ones (same geometry, but every input in the
    window matters); then the input rows on
    which an output cell's gradient is non-zero are exactly its theoretical receptive field. A tall
    narrow input keeps the field from being clipped while staying cheap; the kernels are square,
    so the vertical extent is the side of the field.
    """
    net = copy.deepcopy(embedder.model).float().cpu().eval()
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(m, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                              ceil_mode=child.ceil_mode))
            elif isinstance(child, nn.Hardtanh):  # ReLU6: residual sums pass 6 and would stop the gradient
                setattr(m, name, nn.ReLU())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.weight.fill_(1.0)
                m.bias.fill_(0.0)
    if hasattr(net, "transform_input"):
        net.transform_input = False
    crop = embedder.preprocess.crop
    named = stages(net)
    params = {name: sum(p.numel() for m in mods for p in m.parameters()) for name, mods in stages(embedder.model)}
    # Output sizes and channel counts at the network's real input size.
    sizes: dict[str, tuple[int, int, int]] = {}
    with torch.no_grad():
        y = torch.zeros(1, 3, crop, crop)
        for stage in named:
            y = _run(stage, y)
            sizes[stage[0]] = tuple(y.shape[1:])

    infos: list[StageInfo] = []
    x = torch.ones(1, 3, tall, narrow, requires_grad=True)
    feats = x
    for stage in named:
        name = stage[0]
        feats = _run(stage, feats)
        mid = feats.shape[2] // 2
        first, second = (
            _support_rows(torch.autograd.grad(feats[0, :, row, feats.shape[3] // 2].sum(), x, retain_graph=True)[0])
            for row in (mid, mid + 1)
        )
        rf = int(first[-1] - first[0] + 1)
        if rf >= tall or first[0] == 0:
            raise GradCamError(f"the receptive field of {name} is larger than the probe input ({tall} px)")
        stride = max(1, int(second[0] - first[0]))
        centre = (first[0] + first[-1]) / 2
        c, h, w = sizes[name]
        infos.append(StageInfo(name, (h, w), c, stride, rf, float(centre - mid * stride), params[name]))
    return infos


def layer_cell_boxes(info: StageInfo, geometry: CropGeometry, crop: int) -> Callable[[int, int], tuple]:
    """A function (row, col) -> the photo-pixel box one cell of *info*'s map sees."""
    scale = geometry.size / crop

    def box(row: int, col: int) -> tuple[float, float, float, float]:
        left, top, right, bottom = info.cell_box(row, col)
        return (geometry.left + left * scale, geometry.top + top * scale,
                geometry.left + right * scale, geometry.top + bottom * scale)

    return box

