"""`simviewer train` end to end, through real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

from simviewer import cli
from simviewer.core import embedder
from simviewer.core.embedder import ModelChoice

from ..conftest import make_photo, write_jpeg
from .test_cli import simviewer

SMALL = ("--image-size", "32", "--batch-size", "4", "--threads", "2", "--precision", "fp32", "--min-steps", "1")
FAST = ("--model", "resnet18", "--weights", "none", *SMALL)


def labelled(root):
    """Three kinds, each photographed from two sides taken in turn: an untrained network ranks a
    held-out photo's kind-mates poorly, so the first epoch has something to gain."""
    for c in range(3):
        for i in range(5):
            write_jpeg(root / f"kind{c}" / f"{i}.jpg", make_photo(300 + c + 10 * (i % 2), (56, 44)).rotate(i * 10))
    return root


def library(root, n=10):
    for i in range(n):
        write_jpeg(root / f"photo{i:02d}.jpg", make_photo(700 + i, (64, 48)))
    return root


def test_train_json_writes_a_checkpoint_that_index_loads(tmp_path, capsys):
    data = labelled(tmp_path / "data")
    proc = simviewer("train", data, *FAST, "--epochs", "2", "--patience", "0", "--json", cwd=tmp_path)
    summary = json.loads(proc.stdout)
    ckpt = tmp_path / "models" / "data-resnet18-supervised.pt"  # the default: models/ in the working folder
    assert summary["checkpoint"] == str(ckpt) and ckpt.is_file()
    assert summary["mode"] == "supervised" and summary["classes"] == ["kind0", "kind1", "kind2"]
    assert summary["reason"] == "finished" and not summary["stopped"] and summary["epochs_run"] == 2
    assert summary["start_better"] is False and summary["model_reason"] == ""  # model and weights were given
    assert set(summary["before"]) == set(summary["best"]) == {"recall@1", "recall@5", "mAP"}
    assert len(summary["seconds_per_epoch"]) == 2 and summary["train_images"] + summary["val_images"] == 15
    assert "epoch 1/2  step 1/" in proc.stderr and "before training: recall@1" in proc.stderr
    assert "epoch 2/2: loss" in proc.stderr
    assert torch.load(ckpt, weights_only=True)["arch"] == "resnet18"

    capsys.readouterr()
    assert cli.main(["index", str(data), "--model", "resnet18", "--weights", str(ckpt), "--index-dir",
                     str(tmp_path / "idx"), "--json", "--threads", "2"]) == 0
    indexed = json.loads(capsys.readouterr().out)
    assert indexed["indexed"] == 15 and "fine-tuned" in indexed["model"]


def test_train_text_summary(tmp_path, capsys):
    data = labelled(tmp_path / "data")
    out = tmp_path / "m.pt"
    assert cli.main(["train", str(data), *FAST, "--epochs", "1", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("Finished after 1 epoch: best mAP")
    assert "before" in stdout and f"--weights {out}" in stdout and out.is_file()


def test_folder_without_images_fails_with_a_clear_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["train", str(tmp_path / "empty"), *FAST]) == 1
    assert "simviewer: error: no images found in" in capsys.readouterr().err
    assert cli.main(["train", str(tmp_path / "missing"), *FAST]) == 1
    assert "cannot open folder" in capsys.readouterr().err


def test_bad_usage_exits_2(tmp_path):
    assert simviewer("train", tmp_path, "--mode", "labels", check=False).returncode == 2
    assert simviewer("train", tmp_path, "--epochs", "0", check=False).returncode == 2
    assert simviewer("train", check=False).returncode == 2


def test_ctrl_c_stops_keeps_the_best_checkpoint_and_exits_0(tmp_path):
    data = labelled(tmp_path / "data")
    out = tmp_path / "stopped.pt"
    proc = subprocess.Popen([sys.executable, "-m", "simviewer", "train", str(data), *FAST, "--epochs", "200",
                             "--patience", "0", "--out", str(out), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # wait for a checkpoint, then for the next epoch to be under way
            if "saved" in line:
                break
            assert time.monotonic() < deadline, "no checkpoint was written"
        for line in proc.stderr:
            if " step " in line:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["stopped"] and summary["reason"] == "stopped" and summary["checkpoint"] == str(out)
    assert summary["epochs_run"] < 200 and "stopping after this step" in stderr
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["epoch"] == summary["best_epoch"] and round(ckpt["metrics"]["best"]["mAP"], 4) == summary["best"]["mAP"]


def test_a_run_that_does_not_beat_the_starting_model_saves_nothing_and_says_so(tmp_path, capsys, spoiled):
    photos = library(tmp_path / "photos")
    out = tmp_path / "worse.pt"
    assert cli.main(["train", str(photos), *FAST, "--epochs", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    first = captured.out.splitlines()[0]
    assert first.startswith("Finished after 1 epoch: no epoch beat the starting model (mAP ")
    assert "nothing was saved as best" in first and "the starting model is better on your photos" in first
    assert "use it" not in captured.out and "saved" not in captured.err and not out.exists()


def test_without_model_or_weights_training_starts_from_the_default_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(embedder, "default_model", lambda: ModelChoice("resnet18", "none", "the test's default"))
    data = labelled(tmp_path / "data")
    out = tmp_path / "default.pt"
    assert cli.main(["train", str(data), *SMALL, "--epochs", "1", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["arch"] == "resnet18" and summary["base_weights"] == "none"
    assert summary["model_reason"] == "the test's default"
    reason = [line for line in captured.err.splitlines() if "the test's default" in line]
    assert reason == ["note: starting from ResNet-18 with untrained weights (the test's default)"]
    assert captured.err.index(reason[0]) < captured.err.index("before training:")


def test_a_full_disk_during_training_is_one_line_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    from simviewer.core.training import checkpoint

    from ..core.test_training import _FullDisk

    data = labelled(tmp_path / "data")
    out = tmp_path / "models" / "m.pt"
    monkeypatch.setattr(checkpoint, "open", _FullDisk(room=0), raising=False)
    assert cli.main(["train", str(data), *FAST, "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("simviewer: error")] == [
        f"simviewer: error: no room on the disk for the checkpoint in {out.parent} (No space left on device); "
        "no checkpoint was written"]
    assert "Traceback" not in err and list(out.parent.iterdir()) == []


def test_weights_refused_for_safety_are_named_without_torchs_unsafe_advice(tmp_path, capsys):
    from ..core.test_training import NotWeights

    evil = tmp_path / "whole-model.pt"
    torch.save({"model": NotWeights()}, evil)
    assert cli.main(["train", str(library(tmp_path / "photos")), "--weights", str(evil), *SMALL]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"simviewer: error: {evil} was refused for safety: it is a PyTorch file that holds")
    assert "weights_only" not in err and len(err.splitlines()) == 1
