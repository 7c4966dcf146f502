"""The typed model of an index, the model a command chooses, and what a checkpoint may say."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchvision import models

from simviewer.core import calibration as calib
from simviewer.core.embedder import CHECKPOINT_FORMAT, Embedder, EmbedderError, WeightsSpec, checkpoint_arch, resolve
from simviewer.core.index import AnnIndex
from simviewer.core.model_spec import ModelSpec, ModelSpecError, choose_model

GOOD_PREPROCESS = {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def r18_state():
    net = models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    return net.state_dict()


def checkpoint(tmp_path, state, name="x.pt", **extra):
    path = tmp_path / name
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "arch": "resnet18", "model": state, **extra}, path)
    return path


# -- ModelSpec --------------------------------------------------------------------------------
def test_spec_round_trips_what_an_embedder_records_and_rebuilds_it():
    e = Embedder("resnet18", "none", pooling="avg")
    spec = e.spec()
    assert (spec.arch, spec.weights, spec.pooling, spec.dim, spec.untrained) == ("resnet18", "none", "avg", 512, True)
    assert spec.to_dict() == e.describe() and spec.threshold is None
    again = Embedder.from_spec(spec, precision="fp32")
    assert again.fingerprint == e.fingerprint and again.use_bf16 is False
    with pytest.raises(AttributeError):
        spec.arch = "resnet50"  # frozen


def test_an_old_manifest_without_pooling_was_average_pooled():
    d = Embedder("resnet18", "none").describe()
    del d["pooling"]
    assert ModelSpec.from_dict(d).pooling == "avg"
    assert Embedder.from_spec(ModelSpec.from_dict(d)).pooling == "avg"


@pytest.mark.parametrize("field, value, says", [
    ("arch", "../evil", "not an architecture name"),
    ("arch", 5, "not a text"),
    ("weights", "relative/x.pt", "neither imagenet, none nor an absolute path"),
    ("pooling", "max", "not one of gem, avg"),
    ("fingerprint", "", "fingerprint is empty"),
    ("untrained", "no", "not true or false"),
    ("dim", 2048, "resnet18 makes vectors of 512"),
    ("dim", True, "not a whole number"),
    ("threshold", 3.0, "not a cosine"),
    ("threshold", float("nan"), "not a cosine"),
    ("label", "x" * 5000, "not a plausible value"),
])
def test_a_bad_model_entry_says_which_field(field, value, says):
    d = Embedder("resnet18", "none").describe()
    d[field] = value
    with pytest.raises(ModelSpecError, match=says):
        ModelSpec.from_dict(d)


def test_the_index_model_carries_the_calibrated_threshold(tmp_path):
    e = Embedder("resnet18", "none")
    v = np.eye(512, dtype=np.float32)[:5]
    index = AnnIndex.build_and_save(tmp_path, v, [f"k{i}" for i in range(5)], e.describe())
    assert index.model == e.spec() and index.model.threshold is None
    index.close()
    cal = calib.Calibration(fingerprint=e.fingerprint, threshold=0.93, separation=0.95, reliable=True, photos=5,
                            library_size=5, k=2, positives=(0.97,), negatives=(0.5,), seconds=1.0, created=0.0)
    calib.save(tmp_path, cal)
    index = AnnIndex.load(tmp_path)
    assert index.model.threshold == pytest.approx(0.93) and index.model.fingerprint == e.fingerprint
    index.close()
    (tmp_path / "calibration.json").write_text(json.dumps({**cal.to_dict(), "fingerprint": "other"}))
    assert AnnIndex.load(tmp_path).model.threshold is None  # another model's threshold is not this one's


# -- the model a command runs with --------------------------------------------------------------
def test_nothing_asked_keeps_the_folders_model_and_a_new_folder_gets_the_default():
    indexed = Embedder("resnet18", "none", pooling="avg").spec()
    c = choose_model(None, None, indexed)
    assert (c.arch, c.weights, c.pooling, c.spec) == ("resnet18", "none", "avg", indexed)
    assert choose_model(None, None, None).arch is None  # embedder.default_embedder decides


def test_asking_for_the_folders_own_model_keeps_its_pooling_and_another_gets_the_default_pooling():
    indexed = Embedder("resnet18", "none", pooling="avg").spec()
    assert choose_model("resnet18", None, indexed).pooling == "avg"
    assert choose_model("resnet18", "untrained", indexed).pooling == "avg"
    other = choose_model("resnet34", None, indexed)
    assert (other.arch, other.weights, other.pooling) == ("resnet34", "imagenet", "gem")
    assert choose_model(None, "imagenet", indexed).arch == "resnet18"


def test_a_checkpoint_names_its_architecture_everywhere_weights_are_taken(tmp_path, r18_state):
    path = checkpoint(tmp_path, r18_state, preprocess=GOOD_PREPROCESS)
    assert checkpoint_arch(str(path)) == "resnet18"
    resnet50_folder = ModelSpec("resnet50", "imagenet", "gem", "resnet50|imagenet:X|gem|p2", "R50", False, 2048)
    for indexed in (None, resnet50_folder):
        c = choose_model(None, str(path), indexed)
        assert (c.arch, c.weights) == ("resnet18", str(path))
    assert resolve(None, WeightsSpec.parse(str(path))).arch == "resnet18"
    e = Embedder(weights=str(path))
    assert e.arch == "resnet18" and e.dim == 512 and "fine-tuned" in e.label
    with pytest.raises(EmbedderError, match="resnet18 checkpoint, not resnet50; use --model resnet18"):
        Embedder(choose_model("resnet50", str(path), None).arch, str(path))


def test_a_plain_state_dict_has_no_architecture_of_its_own(tmp_path, r18_state):
    path = tmp_path / "sd.pth"
    torch.save(r18_state, path)
    assert checkpoint_arch(str(path)) is None
    assert choose_model(None, str(path), Embedder("resnet18", "none").spec()).arch == "resnet18"


# -- what a checkpoint's preprocessing may say ------------------------------------------------
@pytest.mark.parametrize("change, says", [
    ({"resize": 20000, "crop": 20000}, "crop 20000 is not between 32 and 1024"),
    ({"resize": 20000}, "resize 20000 is not between the crop"),
    ({"resize": 200}, "resize 200 is not between the crop"),
    ({"crop": 8, "resize": 8}, "crop 8 is not between"),
    ({"crop": 224.5}, "not a whole number"),
    ({"std": [0.0, 0.224, 0.225]}, "std .* must be between 0.001 and 10"),
    ({"std": [0.229, 0.224]}, "std is not three numbers"),
    ({"mean": [0.485, math.nan, 0.406]}, "not a finite number"),
    ({"mean": [0.485, math.inf, 0.406]}, "not a finite number"),
    ({"mean": ["a", 0.456, 0.406]}, "not a finite number"),
    ({"mean": [50.0, 0.456, 0.406]}, "outside -1..2"),
])
def test_a_checkpoint_with_unusable_preprocessing_is_refused(tmp_path, r18_state, change, says):
    path = checkpoint(tmp_path, r18_state, preprocess={**GOOD_PREPROCESS, **change})
    with pytest.raises(EmbedderError, match=says) as caught:
        Embedder("resnet18", str(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_preprocessing_that_is_not_a_table_or_weights_that_are_not_tensors_are_refused(tmp_path, r18_state):
    with pytest.raises(EmbedderError, match="unusable preprocessing: list"):
        Embedder("resnet18", str(checkpoint(tmp_path, r18_state, "a.pt", preprocess=[256, 224])))
    with pytest.raises(EmbedderError, match="does not look like a state dict"):
        Embedder("resnet18", str(checkpoint(tmp_path, [1, 2], "b.pt")))


def test_a_checkpoint_with_sane_preprocessing_uses_it(tmp_path, r18_state):
    path = checkpoint(tmp_path, r18_state, preprocess={**GOOD_PREPROCESS, "resize": 160, "crop": 128})
    e = Embedder("resnet18", str(path))
    assert (e.preprocess.resize, e.preprocess.crop) == (160, 128)


class _NotWeights:
    """A Python object in a weights file: torch refuses it with weights_only=True."""


def test_a_file_with_python_objects_is_refused_without_torchs_unsafe_advice(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save({"model": _NotWeights()}, path)
    with pytest.raises(EmbedderError) as refused:
        Embedder("resnet18", str(path))
    text = str(refused.value)
    assert text.startswith(f"{path} was refused for safety") and "\n" not in text
    assert "weights_only" not in text and "Weights only" not in text


def test_a_file_that_is_not_torchs_is_named_without_torchs_unsafe_advice(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(EmbedderError, match="cannot load weights file .*junk.pt: not a PyTorch weights file") as bad:
        Embedder("resnet18", str(tmp_path / "junk.pt"))
    assert "weights_only" not in str(bad.value) and "\n" not in str(bad.value)
