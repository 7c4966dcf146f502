"""Embedder: shapes, norms, determinism, bf16 agreement, weights files, offline message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import models

from simviewer.core import embedder as emb
from simviewer.core.embedder import (
    CHECKPOINT_FORMAT,
    Embedder,
    EmbedderError,
    WeightsSpec,
    WeightsUnavailable,
)
from simviewer.core.model_spec import ModelSpec
from simviewer.core.registry import ARCHITECTURES

from ..conftest import EDITS, make_photo


@pytest.fixture(scope="module")
def r18() -> Embedder:
    return Embedder("resnet18", "none")


@pytest.fixture(scope="module")
def photos():
    return [make_photo(i) for i in range(8)]


def test_vectors_are_unit_float32(r18, photos):
    v = r18.embed_images(photos)
    assert v.shape == (8, 512) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_untrained_is_seeded_and_labelled(r18, photos):
    again = Embedder("resnet18", "none")
    np.testing.assert_allclose(r18.embed_images(photos[:2]), again.embed_images(photos[:2]), atol=1e-6)
    assert "untrained" in r18.label and r18.untrained
    assert r18.fingerprint == again.fingerprint == "resnet18|untrained:seed0|gem|p2"


def test_bf16_stays_within_cosine_0999_of_fp32(photos):
    if not emb.cpu_supports_bf16():
        pytest.skip("no bf16 on this CPU")
    fp32 = Embedder("resnet18", "none", precision="fp32").embed_images(photos)
    bf16 = Embedder("resnet18", "none", precision="bf16").embed_images(photos)
    assert (fp32 * bf16).sum(1).min() >= ARCHITECTURES["resnet18"].bf16_min_cosine == 0.999


def test_auto_precision_measures_bf16_against_fp32(photos):
    e = Embedder("resnet18", "none", precision="auto")
    e.embed_images(photos)
    if emb.cpu_supports_bf16():
        assert e.bf16_min_cosine is not None and e.bf16_min_cosine >= ARCHITECTURES["resnet18"].bf16_min_cosine
        assert e.use_bf16
    else:
        assert not e.use_bf16


@pytest.mark.parametrize("edit", ["resized", "recompressed", "cropped", "bordered"])
def test_edited_copy_is_nearest_to_its_original(r18, edit):
    originals = [make_photo(100 + i) for i in range(10)]
    base = r18.embed_images(originals)
    queries = r18.embed_images([EDITS[edit](im) for im in originals])
    assert list((queries @ base.T).argmax(1)) == list(range(10))


@pytest.mark.parametrize("arch", ["resnet34", "googlenet", "inception_v3"])
def test_other_backbones_embed(arch):
    e = Embedder(arch, "none", precision="fp32")
    v = e.embed_images([make_photo(1), make_photo(2)])
    assert v.shape == (2, e.dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "googlenet"])
def test_folded_batch_norms_give_the_vectors_of_the_network_as_it_is(arch, photos):
    e = Embedder(arch, "none", precision="fp32")
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # batch norms with real statistics, as trained weights have
        for m in e.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.2, 2.0),
                                  (m.weight, 0.5, 1.5), (m.bias, -0.3, 0.3)):
                    t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    x = e.preprocess.normalise(np.stack([e.preprocess.crop_array(im) for im in photos]))
    with torch.inference_mode():
        plain = torch.nn.functional.normalize(e.model(x).flatten(1), dim=1).numpy()
    folded = e.embed_tensors(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in e.inference_model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in e.model.modules())  # Grad-CAM and training
    assert (plain * folded).sum(1).min() > 0.99999
    assert np.abs(plain - folded).max() > 0  # it really ran another network


def test_unknown_arch_names_the_choices():
    with pytest.raises(EmbedderError, match="resnet18"):
        Embedder("vgg16", "none")


def test_torchvision_state_dict_file_loads(tmp_path, r18, photos):
    torch.manual_seed(7)
    net = models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    e = Embedder("resnet18", str(path), precision="fp32", pooling="avg")  # as torchvision pools
    assert e.fingerprint.startswith("resnet18|file:") and "r18.pth" in e.label
    net.fc = torch.nn.Identity()
    net.eval()
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(net(torch.stack([e.preprocess(im) for im in photos[:2]])), dim=1)
    np.testing.assert_allclose(e.embed_images(photos[:2]), ref.numpy(), atol=1e-4)
    assert not np.allclose(e.embed_images(photos[:1]), r18.embed_images(photos[:1]), atol=1e-3)


def test_simviewer_checkpoint_loads_and_checks_arch(tmp_path):
    net = models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    ckpt = {"format": CHECKPOINT_FORMAT, "version": 1, "arch": "resnet18", "model": net.state_dict()}
    path = tmp_path / "mine.pt"
    torch.save(ckpt, path)
    assert "fine-tuned" in Embedder("resnet18", str(path)).label
    with pytest.raises(EmbedderError, match="resnet18 checkpoint, not resnet50"):
        Embedder("resnet50", str(path))


def test_wrong_state_dict_is_refused(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(EmbedderError, match="does not match the architecture"):
        Embedder("resnet18", str(path))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(EmbedderError, match="cannot load weights file"):
        Embedder("resnet18", str(tmp_path / "junk.pt"))
    with pytest.raises(EmbedderError, match="weights file not found"):
        WeightsSpec.parse(str(tmp_path / "missing.pt"))


def test_offline_imagenet_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*a, **k):
        raise OSError("Name or service not known")

    # torchvision holds its own reference to load_state_dict_from_url: cut the download itself.
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    e = Embedder("resnet18", "imagenet")  # cheap: nothing is fetched until needed
    assert e.fingerprint.startswith("resnet18|imagenet:")
    with pytest.raises(WeightsUnavailable) as info:
        e.load()
    msg = str(info.value)
    for alternative in ("--weights PATH", "efficientnet_lite0", "simviewer train", "--weights none",
                        str(tmp_path / "hub")):
        assert alternative in msg


def test_googlenet_state_dict_with_aux_heads_loads(tmp_path):
    net = models.googlenet(weights=None, aux_logits=True, init_weights=True)
    path = tmp_path / "googlenet.pth"
    torch.save(net.state_dict(), path)  # includes aux1/aux2/fc, which embedding does not use
    e = Embedder("googlenet", str(path), precision="fp32", pooling="avg")  # as torchvision pools
    v = e.embed_images([make_photo(3)])
    assert v.shape == (1, 1024)
    net.eval()
    net.fc = torch.nn.Identity()
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(net(e.preprocess(make_photo(3))[None]), dim=1)
    np.testing.assert_allclose(v, ref.numpy(), atol=1e-4)


def test_gem_pools_stronger_activations_more_and_does_not_depend_on_scale():
    from simviewer.core.embedder import GeM

    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0, 0] = 16.0  # one strong spot
    x[0, 1] = 1.0  # a bland area with the same mean
    pooled = GeM()(x).flatten()
    assert pooled[0] > 2 * pooled[1]  # an average pool would score them equal
    assert torch.allclose(pooled[1], torch.tensor(1.0))
    tiny = GeM()(x * 1e-9).flatten()  # an untrained deep network's last maps can be this small
    assert torch.allclose(tiny / 1e-9, pooled, rtol=1e-4)


def test_pooling_is_part_of_the_fingerprint_and_of_the_manifest():
    gem, avg = Embedder("resnet18", "none"), Embedder("resnet18", "none", pooling="avg")
    assert gem.fingerprint != avg.fingerprint and gem.pooling == "gem"
    again = Embedder.from_spec(ModelSpec.from_dict(avg.describe()))
    assert again.fingerprint == avg.fingerprint
    old = {k: v for k, v in gem.describe().items() if k != "pooling"}  # an index from before pooling was stored
    assert Embedder.from_spec(ModelSpec.from_dict(old)).pooling == "avg"


def test_the_bundled_model_keeps_bf16_within_its_own_bound(photos):
    if not emb.cpu_supports_bf16():
        pytest.skip("no bf16 on this CPU")
    e = Embedder("efficientnet_lite0", "imagenet", precision="auto")
    e.embed_images(photos)
    bound = ARCHITECTURES["efficientnet_lite0"].bf16_min_cosine
    assert bound < ARCHITECTURES["resnet50"].bf16_min_cosine
    # Drawn pictures of flat colours drift more than photos (0.989 here, 0.993-0.997 on the shared
    # photo sets): the decision follows the bound either way.
    assert e.bf16_min_cosine > 0.98 and e.use_bf16 == (e.bf16_min_cosine >= bound)
