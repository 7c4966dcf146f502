"""Training core: loss goes down, only an epoch that beats the starting model is saved, Stop within a
step, plateau schedule, checkpoints the embedder reproduces, resume, the starting model, freezing.
Tiny synthetic photos, ResNet-18 from an untrained start, 32 px, two threads."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ImageEnhance
from torch import nn

from simviewer.core import embedder
from simviewer.core import training as tr
from simviewer.core.embedder import CHECKPOINT_FORMAT, Embedder, ModelChoice, WeightsUnavailable
from simviewer.core.registry import DEFAULT_ARCH

from ..conftest import make_photo, write_jpeg

FAST = dict(arch="resnet18", weights="none", image_size=32, batch_size=8, threads=2, precision="fp32", seed=0,
            min_steps=1)


def make_classes(root: Path, n_classes: int = 3, per_class: int = 6, bases: int = 2) -> Path:
    """Each class: crops, turns and colour shifts of *bases* pictures taken in turn (like views of
    an object from two sides). With two, a held-out view's class-mates are mostly of the other
    picture: an untrained network ranks them poorly (mAP about 0.37), so training has room to gain."""
    for c in range(n_classes):
        pictures = [make_photo(500 + c + 10 * b, (80, 64)) for b in range(bases)]
        for i in range(per_class):
            im = pictures[i % bases].rotate(i * 9).crop((i, i // 2, 64 + i, 52 + i // 2))
            im = ImageEnhance.Brightness(im).enhance(0.85 + 0.05 * i)
            write_jpeg(root / f"class{c}" / f"view{i}.jpg", im)
    return root


def make_library(root: Path, n: int) -> Path:
    for i in range(n):
        write_jpeg(root / f"photo{i:02d}.jpg", make_photo(700 + i, (64, 48)))
    return root


@pytest.fixture
def classes(tmp_path) -> Path:
    return make_classes(tmp_path / "classes")


def run(config: tr.TrainConfig, stop=None) -> tuple[list, tr.TrainingDone]:
    events = list(tr.train(config, stop))
    assert isinstance(events[-1], tr.TrainingDone)
    return events, events[-1]


def of(events, kind) -> list:
    return [e for e in events if isinstance(e, kind)]


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- dataset detection ----------------------------------------------------------------------------
def test_detect_mode(tmp_path, classes):
    assert tr.detect_mode(classes) == ("supervised", 3, 18)
    flat = make_library(tmp_path / "flat", 5)
    assert tr.detect_mode(flat) == ("selfsup", 0, 5)
    lonely = tmp_path / "lonely"  # sub-folders of one photo each are not classes
    for i in range(3):
        write_jpeg(lonely / f"album{i}" / "a.jpg", make_photo(i, (48, 40)))
    write_jpeg(lonely / "album0" / "b.jpg", make_photo(9, (48, 40)))
    assert tr.detect_mode(lonely) == ("selfsup", 0, 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(tr.TrainingError, match="no images found"):
        tr.detect_mode(tmp_path / "empty")
    with pytest.raises(tr.TrainingError, match="cannot open folder"):
        tr.detect_mode(tmp_path / "missing")


def test_supervised_split_holds_out_views_between_trained_ones():
    train, val = tr.split_supervised({"a": list(range(10)), "b": list(range(10, 20)), "c": [20, 21, 22]}, 0.5, 1)
    assert sorted(train + val) == list(range(23))
    assert {20, 21, 22} <= set(train)  # too small a class: all trained on
    held_a = [i for i in val if i < 10]
    assert len(held_a) == 5 and all(b - a == 2 for a, b in zip(held_a, held_a[1:]))  # every other view


def test_bad_options_are_refused_with_reasons(classes):
    for kw, words in [({"mode": "labels"}, "mode must be"), ({"image_size": 8}, "image size"),
                      ({"arch": "vgg16"}, "unknown model"), ({"val_fraction": 1.5}, "validation fraction"),
                      ({"metric": "acc"}, "metric must be"), ({"lr": -1.0}, "learning rate")]:
        with pytest.raises(tr.TrainingError, match=words):
            next(tr.train(tr.TrainConfig(str(classes), **{**FAST, **kw})))


def test_supervised_needs_class_folders(tmp_path):
    flat = make_library(tmp_path / "flat", 6)
    with pytest.raises(tr.TrainingError, match="at least two sub-folders"):
        next(tr.train(tr.TrainConfig(str(flat), mode="supervised", **FAST)))


# -- learning -------------------------------------------------------------------------------------
def test_supervised_loss_goes_down_and_checkpoint_is_complete(tmp_path, classes):
    out = tmp_path / "models" / "sup.pt"
    events, done = run(tr.TrainConfig(str(classes), epochs=8, lr=1e-3, patience=0, out=str(out), **FAST))
    ready = of(events, tr.DatasetReady)[0]
    assert ready.mode == "supervised" and ready.classes == ("class0", "class1", "class2")
    assert (ready.n_train, ready.n_val) == (12, 6) and ready.steps_per_epoch == 1
    losses = [e.loss for e in of(events, tr.StepEvent)]
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert done.reason == "finished" and done.epochs_run == 8 and done.best_path == str(out)
    before = of(events, tr.BeforeTraining)[0]
    assert done.before == before.metrics and set(before.metrics) == {"recall@1", "recall@5", "mAP"}

    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["arch"] == "resnet18" and ckpt["dim"] == 512
    assert ckpt["mode"] == "supervised" and ckpt["classes"] == ["class0", "class1", "class2"]
    assert ckpt["base_weights"] == "none" and ckpt["epoch"] == done.best_epoch
    assert ckpt["preprocess"]["crop"] == 32 and ckpt["preprocess"]["resize"] == 37
    assert not any(k.startswith("fc.") for k in ckpt["model"]) and "layer4.1.bn2.weight" in ckpt["model"]
    assert ckpt["metrics"]["best"] == done.best and ckpt["metrics"]["before"] == done.before
    assert ckpt["metrics"]["name"] == "mAP"
    assert len(ckpt["history"]["loss"]) == done.best_epoch  # one step per epoch
    assert [e["epoch"] for e in ckpt["history"]["epochs"]] == list(range(1, done.best_epoch + 1))
    assert ckpt["config"]["image_size"] == 32 and ckpt["config"]["dataset"] == str(classes)
    assert "optimizer" in ckpt and "scheduler" in ckpt and "proxies" in ckpt["criterion"]
    assert [p.name for p in out.parent.iterdir()] == ["sup.pt"]  # no temporary file left behind


def test_selfsup_loss_goes_down(tmp_path):
    lib = make_library(tmp_path / "lib", 10)  # 8 to train on: every step sees all of them
    config = tr.TrainConfig(str(lib), epochs=3, lr=1e-3, patience=0, out=str(tmp_path / "ss.pt"),
                            **{**FAST, "min_steps": 20})
    events, done = run(config)
    ready = of(events, tr.DatasetReady)[0]
    assert ready.mode == "selfsup" and (ready.n_train, ready.n_val) == (8, 2)
    assert ready.val_items == 2 * (1 + len(tr.VAL_EDITS))  # each held-out photo and its edited copies
    assert ready.steps_per_epoch == 20  # a small set is passed over several times per epoch
    losses = [e.loss for e in of(events, tr.StepEvent)]
    assert len(losses) == 60
    # NT-Xent over 16 views starts near log(15) = 2.7
    assert np.mean(losses[-15:]) < np.mean(losses[:15]) - 0.4, losses
    assert done.best is not None and Path(done.best_path).is_file()


def test_unreadable_images_are_skipped_with_a_reason(tmp_path, classes):
    (classes / "class1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (classes / "class2" / "empty.png").write_bytes(b"")
    events, done = run(tr.TrainConfig(str(classes), epochs=1, out=str(tmp_path / "m.pt"), **FAST))
    skipped = dict(of(events, tr.DatasetReady)[0].skipped)
    assert set(map(Path, skipped)) == {classes / "class1" / "broken.jpg", classes / "class2" / "empty.png"}
    assert "empty file" in skipped[str(classes / "class2" / "empty.png")]
    assert done.reason == "finished"


# -- the starting model is the one to beat (the `spoiled` fixture is in tests/conftest.py) ---------
def test_a_run_that_only_makes_the_model_worse_saves_nothing_as_best(tmp_path, spoiled):
    lib = make_library(tmp_path / "lib", 10)  # self-supervised, as in the report that found this
    out = tmp_path / "models" / "worse.pt"
    events, done = run(tr.TrainConfig(str(lib), epochs=2, patience=0, out=str(out), **FAST))
    before = of(events, tr.BeforeTraining)[0].metrics["mAP"]
    ends = of(events, tr.EpochEnd)
    assert 0.5 < before < 1.0 and len(ends) == 2
    assert all(e.metrics["mAP"] < before for e in ends), (before, [e.metrics for e in ends])  # really worse
    assert not any(e.improved for e in ends)
    assert all(e.best_epoch is None and e.best_value == before for e in ends)  # the start is still the bar
    assert not of(events, tr.CheckpointSaved) and not out.exists()
    assert done.reason == "finished" and done.epochs_run == 2 and done.start_better
    assert done.best is None and done.best_epoch is None and done.best_path is None
    assert done.before["mAP"] == before
    text = done.summary()
    assert f"no epoch beat the starting model (mAP {before:.4f})" in text
    assert "nothing was saved as best" in text and "the starting model is better on your photos" in text
    summary = done.to_dict()
    assert summary["start_better"] is True and summary["checkpoint"] is None and summary["best"] is None


def test_a_run_that_improves_saves_only_the_epochs_that_beat_the_best_so_far(tmp_path, classes):
    out = tmp_path / "better.pt"
    events, done = run(tr.TrainConfig(str(classes), epochs=3, lr=1e-3, patience=0, out=str(out), **FAST))
    before = of(events, tr.BeforeTraining)[0].metrics["mAP"]
    ends, saved = of(events, tr.EpochEnd), of(events, tr.CheckpointSaved)
    assert before < 0.5  # the two-picture classes leave the untrained network room to gain
    assert saved and [s.epoch for s in saved] == [e.epoch for e in ends if e.improved]
    bar = before
    for e in ends:  # improved means strictly above the starting model and every better epoch before
        assert e.improved == (e.metrics["mAP"] > bar)
        bar = max(bar, e.metrics["mAP"])
    assert not done.start_better and done.best_path == str(out) and done.best_epoch == saved[-1].epoch
    assert done.best["mAP"] == saved[-1].value == bar > before
    ckpt = tr.load_checkpoint(out)
    assert ckpt["epoch"] == done.best_epoch and ckpt["metrics"]["best"]["mAP"] > ckpt["metrics"]["before"]["mAP"]
    assert f"(before training {before:.4f})" in done.summary()


def test_a_resumed_checkpoint_stays_the_best_when_no_epoch_beats_it(tmp_path, classes, spoiled):
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    spoiled["on"] = False
    assert run(tr.TrainConfig(str(classes), epochs=1, out=str(first), **FAST))[1].best_path == str(first)
    digest = sha(first)
    spoiled["on"] = True
    events, done = run(tr.TrainConfig(str(classes), epochs=1, out=str(second), **{**FAST, "weights": str(first)}))
    assert of(events, tr.DatasetReady)[0].resumed_epoch == 1
    before = of(events, tr.BeforeTraining)[0].metrics["mAP"]
    assert of(events, tr.EpochEnd)[0].metrics["mAP"] < before
    assert done.start_better and done.best_epoch is None and done.best_path == str(first)
    assert sha(first) == digest and not second.exists()
    assert "no epoch beat the starting checkpoint" in done.summary() and "still the best" in done.summary()


# -- stop, schedule, early stopping ----------------------------------------------------------------
def test_stop_flag_ends_training_within_one_step_and_keeps_the_best_checkpoint(tmp_path, classes):
    out = tmp_path / "stop.pt"
    flag = {"stop": False}
    events, saved_sha, steps_after = [], None, 0
    config = tr.TrainConfig(str(classes), epochs=20, lr=1e-3, patience=0, out=str(out), **{**FAST, "batch_size": 4})
    for ev in tr.train(config, lambda: flag["stop"]):
        events.append(ev)
        if isinstance(ev, tr.CheckpointSaved):
            saved_sha = sha(ev.path)
        if isinstance(ev, tr.StepEvent):
            if flag["stop"]:
                steps_after += 1
            elif ev.epoch == 3 and ev.step == 2:
                flag["stop"] = True  # mid-epoch, after a checkpoint exists
    done = events[-1]
    assert isinstance(done, tr.TrainingDone) and done.reason == "stopped" and done.stopped
    assert steps_after == 0
    assert done.epochs_run == 2 and done.last_epoch == 2 and len(of(events, tr.EpochEnd)) == 2
    assert done.best_path == str(out) and sha(out) == saved_sha  # the file is the one written, whole
    ckpt = tr.load_checkpoint(out)
    assert ckpt["epoch"] == done.best_epoch and ckpt["metrics"]["best"] == done.best
    assert "Stopped after 2 epochs" in done.summary() and str(out) in done.summary()
    Embedder("resnet18", str(out), precision="fp32").embed_images([make_photo(1, (48, 40))])


def test_stop_before_any_epoch_writes_nothing(tmp_path, classes):
    out = tmp_path / "none.pt"
    done = run(tr.TrainConfig(str(classes), epochs=3, out=str(out), **FAST), lambda: True)[1]
    assert done.stopped and done.best_path is None and not out.exists()
    assert "no checkpoint" in done.summary()


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def fake_loaders(steps: int = 3):
    gen = torch.Generator().manual_seed(0)
    train = [(torch.randn(4, 3, 8, 8, generator=gen), torch.tensor([0, 1, 0, 1])) for _ in range(steps)]
    a, b = torch.randn(1, 3, 8, 8, generator=gen), torch.randn(1, 3, 8, 8, generator=gen)
    # Two pairs of identical images: retrieval is perfect whatever the weights, so the metric plateaus.
    val = [(torch.cat([a, a, b, b]), ["a", "a", "b", "b"])]
    return train, val


def test_learning_rate_drops_when_the_metric_plateaus_then_early_stop():
    model = Tiny()
    loss = tr.ProxyLoss(2, 8)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss.parameters()), lr=0.01)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
    train, val = fake_loaders()
    events = list(tr.fit(model, train, val, 10, opt, sched, "recall@1", loss_fn=loss, patience=3))
    assert of(events, tr.BeforeTraining)[0].metrics["recall@1"] == 1.0
    ends = of(events, tr.EpochEnd)
    assert [e.metrics["recall@1"] for e in ends] == [1.0] * 3
    assert [e.improved for e in ends] == [False] * 3  # equal to the starting model is no gain
    assert [e.lr for e in ends] == pytest.approx([0.01, 0.005, 0.0025])
    step_lrs = [e.lr for e in of(events, tr.StepEvent)]
    assert step_lrs[:3] == [0.01] * 3 and step_lrs[3:6] == [0.01] * 3 and step_lrs[6:9] == [0.005] * 3
    done = events[-1]
    assert done.reason == "early-stopped" and done.early_stopped and done.epochs_run == 3
    assert done.best_epoch is None and done.start_better


def test_fit_without_patience_runs_every_epoch_and_rejects_a_bad_metric():
    model, loss = Tiny(), tr.ProxyLoss(2, 8)
    opt = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=0.1)
    train, val = fake_loaders(2)
    events = list(tr.fit(model, train, val, 3, opt, None, "mAP", loss_fn=loss))
    assert events[-1].reason == "finished" and len(of(events, tr.StepEvent)) == 6
    with pytest.raises(tr.TrainingError, match="unknown metric"):
        next(tr.fit(model, train, val, 3, opt, None, "accuracy", loss_fn=loss))


# -- checkpoints: the embedder, resume ------------------------------------------------------------
@pytest.fixture
def captured(monkeypatch):
    """Record what train() hands to fit(): the model and the optimizer it trains."""
    seen = {}
    real_fit = tr.fit

    def spy(model, train_loader, val_loader, epochs, optimizer, *args, **kw):
        seen.update(model=model, optimizer=optimizer, step=_adam_step(optimizer))
        yield from real_fit(model, train_loader, val_loader, epochs, optimizer, *args, **kw)

    monkeypatch.setattr(tr, "fit", spy)
    return seen


def _adam_step(optimizer) -> float | None:
    states = [s for s in optimizer.state.values() if "step" in s]
    return float(states[0]["step"]) if states else None


def test_checkpoint_in_the_embedder_gives_the_trained_models_embeddings(tmp_path, classes, captured):
    out = tmp_path / "emb.pt"
    done = run(tr.TrainConfig(classes, epochs=1, out=out, **FAST))[1]  # paths, not strings: stored as text
    assert done.best_epoch == 1  # the checkpoint holds the weights the run ended with
    model = captured["model"].eval()
    embedder = Embedder("resnet18", str(out), precision="fp32", threads=2)
    assert (embedder.preprocess.resize, embedder.preprocess.crop) == (37, 32)
    assert "fine-tuned" in embedder.label
    photos = [make_photo(40 + i, (60, 44)) for i in range(4)]
    got = embedder.embed_images(photos)
    with torch.inference_mode():
        x = torch.stack([embedder.preprocess(p) for p in photos])
        want = nn.functional.normalize(model(x).float(), dim=1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    untrained = Embedder("resnet18", "none", precision="fp32", threads=2)
    untrained.preprocess = embedder.preprocess
    assert np.abs(untrained.embed_images(photos) - got).max() > 1e-3  # it did learn something


def test_resume_continues_at_the_next_epoch_with_its_optimizer_state(tmp_path, classes, captured):
    first = tmp_path / "first.pt"
    run(tr.TrainConfig(str(classes), epochs=2, lr=1e-3, patience=0, out=str(first), **FAST))
    ckpt = tr.load_checkpoint(first)
    saved_epoch, saved_lr = ckpt["epoch"], ckpt["optimizer"]["param_groups"][0]["lr"]
    saved_step = float(next(iter(ckpt["optimizer"]["state"].values()))["step"])
    assert saved_step == saved_epoch  # one step per epoch

    second = tmp_path / "second.pt"
    events, done = run(tr.TrainConfig(str(classes), epochs=2, lr=0.05, patience=0, out=str(second),
                                      **{**FAST, "weights": str(first)}))
    ready = of(events, tr.DatasetReady)[0]
    assert ready.resumed_epoch == saved_epoch and ready.base_weights == "none"
    assert any("resuming" in e.message for e in of(events, tr.Info))
    assert captured["step"] == saved_step  # Adam's moments and step count came back
    steps = of(events, tr.StepEvent)
    assert [s.epoch for s in steps] == [saved_epoch + 1, saved_epoch + 2]
    assert steps[0].lr == pytest.approx(saved_lr)  # the checkpoint's learning rate, not the new --lr
    assert of(events, tr.BeforeTraining)[0].epoch == saved_epoch
    assert done.last_epoch == saved_epoch + 2
    if done.best_epoch is not None:  # an epoch beat the starting checkpoint: it was written
        resumed = tr.load_checkpoint(second)
        assert resumed["epoch"] == done.best_epoch and resumed["resumed_from"] == str(first)
        assert len(resumed["history"]["loss"]) == done.best_epoch
    else:  # none did: the starting checkpoint is still the best
        assert done.best_path == str(first) and not second.exists()


def test_checkpoint_from_another_mode_is_a_starting_point_not_resumed(tmp_path, classes):
    sup, ss = tmp_path / "sup.pt", tmp_path / "ss.pt"
    assert run(tr.TrainConfig(str(classes), epochs=1, out=str(sup), **FAST))[1].best_path == str(sup)
    events, done = run(tr.TrainConfig(str(classes), mode="selfsup", epochs=1, out=str(ss),
                                      **{**FAST, "weights": str(sup)}))
    assert of(events, tr.DatasetReady)[0].resumed_epoch is None
    assert any("without resuming" in e.message and "supervised" in e.message for e in of(events, tr.Info))
    assert of(events, tr.StepEvent)[0].epoch == 1
    # Not resumed, so the starting checkpoint is not this run's result either way.
    if done.best_epoch is not None:
        assert done.best_path == str(ss) and ss.is_file()
    else:
        assert done.start_better and done.best_path is None and not ss.exists()


def test_freeze_trains_only_the_last_stage(tmp_path, classes, captured):
    out = tmp_path / "frozen.pt"
    run(tr.TrainConfig(str(classes), epochs=1, freeze=True, out=str(out), **FAST))
    start = Embedder("resnet18", "none").load().model.state_dict()
    trained = tr.load_checkpoint(out)["model"]
    changed = {k.split(".")[0] for k, v in trained.items() if v.dtype.is_floating_point
               and not torch.equal(v, start[k])}
    assert changed == {"layer4"}


class LiteLike(nn.Module):
    """The top-level layout of the bundled EfficientNet-Lite networks, in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        for k in range(1, 8):
            setattr(self, f"stage{k}", nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
        self.head = nn.Sequential(nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Identity()


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_freeze_keeps_the_last_stage_and_head_of_efficientnet_lite_trainable(arch):
    model = LiteLike()
    frozen = tr.freeze_all_but_last_stage(model, arch)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"stage7", "head"}
    names = {id(m): n for n, m in model.named_children()}
    assert [names[id(m)] for m in frozen] == ["stem"] + [f"stage{k}" for k in range(1, 7)]


def test_freeze_refuses_a_network_without_its_last_stage():
    with pytest.raises(tr.TrainingError, match="layer4"):
        tr.freeze_all_but_last_stage(LiteLike(), "resnet50")


def test_efficientnet_lite_trains(tmp_path, classes, captured):
    pytest.importorskip("simviewer.core.efficientnet_lite")
    config = tr.TrainConfig(str(classes), epochs=1, freeze=True, out=str(tmp_path / "lite.pt"),
                            **{**FAST, "arch": "efficientnet_lite0", "image_size": 64})
    events, done = run(config)
    ready = of(events, tr.DatasetReady)[0]
    assert ready.arch == "efficientnet_lite0" and ready.image_size == 64 and done.epochs_run == 1
    assert np.isfinite(of(events, tr.StepEvent)[0].loss)
    start = Embedder("efficientnet_lite0", "none").load().model.state_dict()
    trained = captured["model"].state_dict()
    changed = {k.split(".")[0] for k, v in trained.items() if v.dtype.is_floating_point
               and not torch.equal(v, start[k])}
    assert changed == {"stage7", "head"}


# -- the starting model ---------------------------------------------------------------------------
@pytest.fixture
def default_model(monkeypatch):
    """embedder.default_model without a look at the network: an untrained ResNet-18, with a reason."""
    calls = []

    def fake():
        calls.append(1)
        return ModelChoice("resnet18", "none", "the test's default")

    monkeypatch.setattr(embedder, "default_model", fake, raising=False)
    return calls


def test_starting_model_uses_the_default_only_when_nothing_is_chosen(tmp_path, default_model):
    chosen = tr.starting_model()
    assert (chosen.arch, chosen.weights, chosen.reason) == ("resnet18", "none", "the test's default")
    assert tr.starting_model(None, "imagenet") == chosen and len(default_model) == 2
    assert tr.starting_model("resnet34") == ModelChoice("resnet34", "imagenet", "")
    assert tr.starting_model(None, "none") == ModelChoice(DEFAULT_ARCH, "none", "")  # untrained: asked for
    assert tr.starting_model("resnet18", "none") == ModelChoice("resnet18", "none", "")
    ckpt = tmp_path / "c.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "resnet34", "model": {}}, ckpt)
    assert tr.starting_model(None, str(ckpt)) == ModelChoice("resnet34", str(ckpt), "")  # its own arch
    plain = tmp_path / "state.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, plain)
    assert tr.starting_model(None, str(plain)).arch == DEFAULT_ARCH
    assert len(default_model) == 2
    assert tr.describe_start(chosen) == "ResNet-18 with untrained weights (the test's default)"
    assert tr.describe_start(ModelChoice("resnet50", "imagenet", "")) == "ResNet-50 with ImageNet weights"


def test_training_without_a_model_or_weights_starts_from_the_default(tmp_path, classes, default_model):
    out = tmp_path / "default.pt"
    events, done = run(tr.TrainConfig(str(classes), epochs=1, out=str(out), **{**FAST, "arch": None, "weights": None}))
    assert len(default_model) == 1
    assert any("the test's default" in e.message for e in of(events, tr.Info))
    ready = of(events, tr.DatasetReady)[0]
    assert (ready.arch, ready.base_weights) == ("resnet18", "none")
    ckpt = tr.load_checkpoint(out)
    assert ckpt["arch"] == "resnet18" and ckpt["config"]["arch"] == "resnet18" and ckpt["config"]["weights"] == "none"


def test_the_default_falls_back_to_the_bundled_model_when_its_weights_do_not_download(tmp_path, classes,
                                                                                      monkeypatch):
    monkeypatch.setattr(embedder, "default_model", lambda: ModelChoice("resnet34", "imagenet", "downloadable"))
    monkeypatch.setattr(embedder, "bundled_fallback",
                        lambda why: ModelChoice("resnet18", "none", f"{why}; using the installed one"))
    real_resolve = tr.resolve

    def offline(arch, spec, *args, **kw):
        resolved = real_resolve(arch, spec, *args, **kw)
        if spec.kind != "imagenet":
            return resolved

        def fail():
            raise WeightsUnavailable(f"ImageNet weights for {arch} could not be downloaded", arch=arch)
        return dataclasses.replace(resolved, build=fail)

    monkeypatch.setattr(tr, "resolve", offline)
    events, _ = run(tr.TrainConfig(str(classes), epochs=1, out=str(tmp_path / "m.pt"),
                                   **{**FAST, "arch": None, "weights": None}))
    assert (of(events, tr.DatasetReady)[0].arch, of(events, tr.DatasetReady)[0].base_weights) == ("resnet18", "none")
    assert any("ResNet-34 ImageNet weights could not be downloaded; using the installed one" in e.message
               for e in of(events, tr.Info))
    with pytest.raises(WeightsUnavailable):  # a model the user chose is not replaced behind their back
        next(tr.train(tr.TrainConfig(str(classes), **{**FAST, "arch": "resnet34", "weights": "imagenet"})))


def test_default_output_goes_to_models_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = tr.default_out_path("/photos/My Trip!", "resnet18", "selfsup")
    assert first == tmp_path / "models" / "My_Trip-resnet18-selfsup.pt"
    first.parent.mkdir()
    first.write_bytes(b"x")
    assert tr.default_out_path("/photos/My Trip!", "resnet18", "selfsup").name == "My_Trip-resnet18-selfsup-2.pt"


def test_duplicate_views_are_square_rgb_and_vary():
    import random

    im = make_photo(3, (90, 60))
    views = [tr.duplicate_view(im, 40, random.Random(s)) for s in range(12)]
    assert all(v.size == (40, 40) and v.mode == "RGB" for v in views)
    arrays = [np.asarray(v, np.float32) for v in views]
    assert min(np.abs(a - b).mean() for i, a in enumerate(arrays) for b in arrays[i + 1:]) > 0.5
    captioned = tr.add_caption(im, "Holiday", 12)
    band = np.asarray(captioned)[62:, :]
    assert captioned.size == (90, 72) and band.mean() > 200 and band.min() < 50  # a white band, some ink


def test_checkpoint_keeps_the_input_transform_of_imagenet_googlenet(tmp_path):
    from simviewer.core.embedder import WeightsSpec, resolve

    net = Embedder("googlenet", "none").load().model
    path = tmp_path / "g.pt"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    for flag in (True, False):
        torch.save({"format": CHECKPOINT_FORMAT, "arch": "googlenet", "model": state, "transform_input": flag}, path)
        assert resolve("googlenet", WeightsSpec("file", str(path))).build().transform_input is flag


# -- checkpoint safety: a killed save, a full disk, a file refused for safety ----------------------
class NotWeights:
    """Stands for any Python object in a pickle: ``torch.load(weights_only=True)`` refuses it."""


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _aged(path: Path, content: bytes = b"", seconds: float = 3600) -> Path:
    """*path* holding *content*, last written *seconds* ago (before this process started)."""
    path.write_bytes(content)
    os.utime(path, (time.time() - seconds, time.time() - seconds))
    return path


def test_temporary_files_of_a_killed_save_are_removed_on_the_next_run_and_nothing_else(tmp_path, classes):
    import os

    folder, dead = tmp_path / "models", _dead_pid()
    folder.mkdir()
    killed = _aged(folder / f".m.pt.tmp-{dead}", b"PK\x03\x04" + bytes(200_000))  # torch.save's zip, cut short
    empty = _aged(folder / f".old.pt.tmp-{dead}")  # killed before a byte was written
    keep = {
        "live": _aged(folder / f".live.pt.tmp-{os.getppid()}", b"PK\x03\x04"),  # its writer still runs
        "text": _aged(folder / f".notes.tmp-{dead}", b"my notes"),  # the user's file, named alike
        "plain": _aged(folder / f"m.pt.tmp-{dead}", b"PK\x03\x04"),  # not simviewer's naming
        "model": _aged(folder / "m.pt", b"PK\x03\x04"),
    }
    keep["recent"] = folder / f".new.pt.tmp-{dead}"  # written after this process started
    keep["recent"].write_bytes(b"PK\x03\x04")
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"PK\x03\x04")
    link = folder / f".link.pt.tmp-{dead}"
    link.symlink_to(outside)
    os.utime(link, (0, 0), follow_symlinks=False)

    events, done = run(tr.TrainConfig(str(classes), epochs=1, out=str(folder / "m.pt"), **FAST), stop=lambda: True)
    assert done.stopped
    notes = [e.message for e in of(events, tr.Info) if "interrupted save" in e.message]
    assert notes == [f"removed 2 unfinished checkpoint files (0.2 MB) that an interrupted save left in {folder}"]
    assert not killed.exists() and not empty.exists()
    assert all(p.exists() for p in keep.values()) and link.is_symlink() and outside.exists()
    assert tr.clean_stale_temporaries(folder) == (0, 0)  # a second run finds nothing more


class _FullDisk:
    """Installed as the checkpoint module's ``open``: files opened for writing take *room* bytes,
    then every write fails with ENOSPC, as on a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, path, mode="r"):
        fh = open(path, mode)  # noqa: SIM115 - closed by the caller, or by _FullFile
        return _FullFile(fh, self) if "w" in mode else fh


class _FullFile:
    def __init__(self, fh, disk: _FullDisk) -> None:
        self.fh, self.disk = fh, disk

    def write(self, data) -> int:
        if len(data) > self.disk.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.disk.room -= len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def fileno(self) -> int:
        return self.fh.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    from simviewer.core.training import checkpoint

    out = tmp_path / "models" / "m.pt"
    tr.save_checkpoint(out, {"format": CHECKPOINT_FORMAT, "epoch": 1, "w": torch.ones(1000)})
    before = sha(out)
    monkeypatch.setattr(checkpoint, "open", _FullDisk(room=1500), raising=False)
    with pytest.raises(tr.TrainingError) as failed:
        tr.save_checkpoint(out, {"format": CHECKPOINT_FORMAT, "epoch": 2, "w": torch.ones(100_000)})
    message = str(failed.value)
    assert message == (f"no room on the disk for the checkpoint in {out.parent} (No space left on device); "
                       f"{out} still holds the previous checkpoint")
    assert "\n" not in message and sha(out) == before and tr.load_checkpoint(out)["epoch"] == 1
    assert [p.name for p in out.parent.iterdir()] == ["m.pt"]  # the partial file is gone
    with pytest.raises(tr.TrainingError, match=r"\(No space left on device\); no checkpoint was written"):
        tr.save_checkpoint(tmp_path / "models" / "new.pt", {"w": torch.ones(100_000)})


def test_a_file_refused_for_safety_is_named_without_torchs_unsafe_advice(tmp_path):
    evil = tmp_path / "whole-model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "resnet18", "model": NotWeights()}, evil)
    with pytest.raises(tr.TrainingError) as refused:
        tr.load_checkpoint(evil)
    with pytest.raises(tr.TrainingError) as refused_by_train:
        next(tr.train(tr.TrainConfig(str(make_library(tmp_path / "lib", 5)), **{**FAST, "weights": str(evil),
                                                                                  "arch": None})))
    for exc in (refused.value, refused_by_train.value):
        text = str(exc)
        assert text.startswith(f"{evil} was refused for safety: it is a PyTorch file that holds Python objects")
        assert "weights_only" not in text and "Weights only" not in text and "\n" not in text


def test_events_are_built_with_keywords_only():
    assert tr.Info(message="a note").message == "a note"
    for kind, args in ((tr.Info, ("a note",)), (tr.Preparing, (1, 2)), (tr.CheckpointSaved, ("m.pt", 1, "mAP", 0.5))):
        with pytest.raises(TypeError):
            kind(*args)
