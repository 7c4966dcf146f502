"""Grad-CAM for similarity: agreement with pytorch-grad-cam, behaviour, hooks, memory, geometry."""

from __future__ import annotations

import gc
import resource

import numpy as np
import pytest
import torch
from PIL import Image

from simviewer.core.embedder import Embedder
from simviewer.core.gradcam import (
    COLORMAP,
    CropGeometry,
    Explainer,
    GradCamError,
    layer_cell_boxes,
    overlay,
    receptive_fields,
    upsample,
)

from ..conftest import make_photo
from ..gradcam_scenes import deletion_drops, patch_masses


@pytest.fixture(scope="module")
def r18():
    # Average-pooled, as pytorch-grad-cam's reference sees a torchvision ResNet. An untrained network's
    # strongest activations (which GeM pooling weighs) are unrelated to the picture, so the mechanics
    # are checked here and the default GeM pooling on the pretrained model below.
    return Embedder("resnet18", "none", precision="fp32", pooling="avg")


def test_matches_pytorch_grad_cam(r18):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    a, b = make_photo(1), make_photo(2)
    ours = Explainer(r18).explain(a, b)
    xa, xb = r18.preprocess(a), r18.preprocess(b)
    with torch.no_grad():
        fa, fb = r18.model(torch.stack([xa, xb]))

    def similarity_to(feature):
        return lambda out: torch.nn.functional.cosine_similarity(out, feature, dim=0)

    with pytorch_grad_cam.GradCAM(model=r18.model, target_layers=[r18.model.layer4]) as cam:
        ref_b = cam(input_tensor=xb[None], targets=[similarity_to(fa)])[0]
        ref_a = cam(input_tensor=xa[None], targets=[similarity_to(fb)])[0]
    for ref, mine in ((ref_a, ours.cam_a), (ref_b, ours.cam_b)):
        up = upsample(mine, 224, 224)
        # float32 sums in another order (one batched pass here, one pass per image there)
        assert np.abs(up - ref).max() < 5e-3
        assert np.corrcoef(up.ravel(), ref.ravel())[0, 1] > 0.9999
    assert ours.score == pytest.approx(float(torch.nn.functional.cosine_similarity(fa, fb, dim=0)), abs=1e-5)


def test_most_of_the_map_falls_on_a_shared_patch(r18):
    # The last block of an untrained network (7x7 cells, each seeing 435 px) localises coarsely;
    # a finer layer shows the mechanics sharply. Both must put far more heat on the patch than
    # its share of the picture (8 %).
    area = 64 * 64 / 224**2
    for layer, at_least in (("layer2", 0.6), ("layer4", 3 * area)):
        masses = patch_masses(Explainer(r18, layer))
        assert np.mean(masses) >= at_least, (layer, masses)


def test_the_bundled_pretrained_model_is_explained_on_the_shared_patch():
    lite = Embedder("efficientnet_lite0", "imagenet", precision="fp32")  # GeM pooling, the default
    assert lite.pooling == "gem"
    masses = patch_masses(Explainer(lite), n=4)
    assert np.mean(masses) >= 3 * 64 * 64 / 224**2, masses
    stages = {s.name: s for s in receptive_fields(lite)}
    assert stages["head"].out_size == (7, 7) and stages["head"].stride == 32 and stages["head"].channels == 1280


def test_masking_the_hottest_regions_lowers_similarity_more_than_random(r18):
    top_drops, random_drops = deletion_drops(Explainer(r18))
    wins = sum(t > r for t, r in zip(top_drops, random_drops))
    assert np.mean(top_drops) > np.mean(random_drops) and wins >= 6, (top_drops, random_drops)


def test_hooks_are_removed_and_memory_does_not_grow(r18):
    explainer = Explainer(r18)
    a, b = make_photo(3, (256, 256)), make_photo(4, (256, 256))
    for _ in range(10):  # warm-up: allocator pools settle
        explainer.explain(a, b)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(100):
        explainer.explain(a, b)
    gc.collect()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 40, f"peak memory grew {grown_mb:.0f} MB over 100 explanations"
    assert all(not m._forward_hooks and not m._backward_hooks for m in r18.model.modules())
    with pytest.raises(GradCamError, match="no layer named"):
        Explainer(r18, "layer9")


@pytest.mark.parametrize("arch", ["resnet34", "googlenet", "inception_v3"])
def test_every_backbone_explains(arch):
    e = Embedder(arch, "none", precision="fp32")
    result = Explainer(e).explain(make_photo(5), make_photo(6))
    assert result.cam_a.ndim == 2 and result.cam_a.shape == result.cam_b.shape
    assert result.cam_b.max() <= 1.0 and np.isfinite(result.cam_b).all()


def test_receptive_fields_from_the_model(r18):
    table = {s.name: s for s in receptive_fields(r18)}
    assert list(table) == ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    # Known theoretical values for ResNet-18 (Araujo et al., Distill 2019): 7, 11, 43, 99, 211, 435.
    assert [s.receptive_field for s in table.values()] == [7, 11, 43, 99, 211, 435]
    assert [s.stride for s in table.values()] == [2, 4, 4, 8, 16, 32]
    assert table["layer4"].out_size == (7, 7) and table["layer4"].channels == 512
    assert table["layer4"].params == sum(p.numel() for p in r18.model.layer4.parameters())
    r50 = {s.name: s for s in receptive_fields(Embedder("resnet50", "none"))}
    assert r50["layer4"].receptive_field == 427 and r50["layer3"].receptive_field == 267


def test_cell_boxes_map_into_the_photo(r18):
    layer4 = {s.name: s for s in receptive_fields(r18)}["layer4"]
    g = CropGeometry.for_image(800, 600, r18.preprocess)  # short side -> 256, centre crop 224
    scale = g.size / r18.preprocess.crop
    box = layer_cell_boxes(layer4, g, r18.preprocess.crop)
    # With "same" padding and stride 2 everywhere, cell (i, j) of ResNet's last block is centred
    # on input pixel (32 i, 32 j): the grid hugs the top-left, the centre cell sits at 96, not 112.
    left, top, right, bottom = box(3, 3)
    assert (left + right) / 2 == pytest.approx(g.left + 96.5 * scale)
    assert (top + bottom) / 2 == pytest.approx(g.top + 96.5 * scale)
    assert right - left == pytest.approx(435 * scale)
    left0, top0, _, _ = box(0, 0)
    assert left0 == pytest.approx(g.left + (0.5 - 217.5) * scale)


def test_overlay_keeps_resolution_and_marks_unseen_parts():
    photo = Image.new("RGB", (400, 200), (0, 120, 0))
    cam = np.zeros((7, 7))
    cam[3, 3] = 1.0
    g = CropGeometry(100, 0, 200)  # the network saw the middle square
    out = np.asarray(overlay(photo, cam, g, opacity=0.6)).astype(int)
    assert out.shape == (200, 400, 3)
    centre, corner_in_crop, outside = out[100, 200], out[5, 105], out[100, 20]
    assert centre[0] > corner_in_crop[0] + 80  # hot: bright warm colour
    assert tuple(outside) != (0, 120, 0) and abs(int(outside[0]) - int(outside[1])) < 70  # washed out


def test_colormap_lightness_rises_monotonically():
    luma = COLORMAP @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luma) > -0.5) and luma[-1] - luma[0] > 180
