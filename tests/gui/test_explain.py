"""The heat-map service alone: batched maps equal single ones, order and replacement of requests."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from simviewer.core import gradcam  # noqa: E402
from simviewer.core.embedder import Embedder  # noqa: E402
from simviewer.core.images import load_image  # noqa: E402
from simviewer.gui.explain import ExplainService, explain_batch  # noqa: E402

from ..conftest import EDITS, make_photo, write_jpeg  # noqa: E402


@pytest.fixture(scope="module")
def embedder():
    return Embedder("resnet18", "none", precision="fp32")


@pytest.fixture
def photos(tmp_path):
    paths = [write_jpeg(tmp_path / f"p{i}.jpg", make_photo(40 + i, size=(160, 120))) for i in range(4)]
    paths.append(write_jpeg(tmp_path / "p0_small.jpg", EDITS["resized"](make_photo(40, size=(160, 120)))))
    return [str(p) for p in paths]


def test_a_batch_of_pairs_gives_each_pair_its_own_maps(embedder, photos):
    pre = embedder.preprocess
    images = [load_image(p, pre.resize).image for p in photos]
    pairs = [(images[0], images[4]), (images[1], images[2]), (images[0], images[3])]
    explainer = gradcam.Explainer(embedder)
    batched = explain_batch(explainer, pairs)
    for (a, b), got in zip(pairs, batched):
        alone = explainer.explain(a, b)
        assert got.score == pytest.approx(alone.score, abs=1e-5)
        assert np.allclose(got.cam_a, alone.cam_a, atol=1e-4) and np.allclose(got.cam_b, alone.cam_b, atol=1e-4)
        assert got.geometry_b == alone.geometry_b and got.layer == "layer4"


@pytest.fixture
def idle_service(embedder):
    """A service whose worker is not started: what waits can be read."""
    service = ExplainService()
    service.set_model(embedder.spec())
    service._ensure_worker = lambda: None
    return service


def waiting(service):
    return [item[2] for item in service._queue]


def test_want_replaces_what_waits_and_request_goes_first(idle_service):
    s = idle_service
    s.want("q", ["m1", "m2", "m3", "m4", "m5", "m6"])
    assert waiting(s) == ["m1", "m2", "m3", "m4", "m5", "m6"] and s.computing("q", "m1")
    s.want("q", ["m5", "m6", "m7"])  # scrolled: what left the screen is dropped
    assert waiting(s) == ["m5", "m6", "m7"] and not s.computing("q", "m1") and s.computing("q", "m7")
    s.request("q", "m9")  # the compare view's pair comes before the list's
    assert waiting(s) == ["m9", "m5", "m6", "m7"]
    assert [it[2] for it in s._take()] == ["m9", "m5", "m6", "m7"]  # one batch of BATCH = 4
    assert s._take() == []


def test_a_batch_holds_one_layer(idle_service):
    s = idle_service
    s.want("q", ["m1", "m2"])
    s.set_layer("layer3")  # drops what waits for the old layer
    assert waiting(s) == [] and s.layer == "layer3"
    s.want("q", ["m1"])
    s.layer = "layer2"
    s.request("q", "m2")
    assert [it[0][1] for it in s._take()] == ["layer2"] and [it[0][1] for it in s._take()] == ["layer3"]


def test_the_worker_explains_in_the_order_asked_and_names_the_layers(qtbot, embedder, photos):
    service = ExplainService()
    service.set_model(embedder.spec())
    got, layers = [], []
    service.explained.connect(lambda pair: got.append(pair.match))
    service.layers_ready.connect(layers.append)
    service.want(photos[0], photos[1:])
    try:
        qtbot.waitUntil(lambda: len(got) == 4, timeout=60_000)
        assert got == photos[1:] and layers[-1][-1] == "layer4" and "layer1" in layers[-1]
        assert not any(service.computing(photos[0], m) for m in photos[1:])
        pair = service.get(photos[0], photos[4])
        assert pair.result.score > service.get(photos[0], photos[1]).result.score  # its own edited copy
        service.want(photos[0], ["/no/such/photo.jpg"])
        with qtbot.waitSignal(service.failed, timeout=30_000) as failed:
            pass
        assert failed.args[1] == "/no/such/photo.jpg" and not service.computing(photos[0], "/no/such/photo.jpg")
    finally:
        service.stop()
