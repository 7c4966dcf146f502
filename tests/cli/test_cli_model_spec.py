"""The command line with a checkpoint named alone, and with an index folder that was tampered with."""

from __future__ import annotations

import json

import torch
from torchvision import models

from simviewer.core.embedder import CHECKPOINT_FORMAT

from ..conftest import make_photo, write_jpeg
from .test_cli import simviewer


def _photos(root):
    for i in range(4):
        write_jpeg(root / f"p{i}.jpg", make_photo(80 + i, (120, 90)))
    return root


def test_weights_of_a_checkpoint_without_model_use_its_architecture(tmp_path):
    net = models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    ckpt = tmp_path / "models" / "x.pt"
    ckpt.parent.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "arch": "resnet18", "model": net.state_dict()}, ckpt)
    photos = _photos(tmp_path / "photos")
    out = simviewer("index", photos, "--weights", ckpt, "--index-dir", tmp_path / "idx", "--json")
    summary = json.loads(out.stdout)
    assert summary["indexed"] == 4 and summary["model"].startswith("ResNet-18") and "x.pt" in summary["model"]

    wrong = simviewer("index", photos, "--model", "resnet34", "--weights", ckpt, "--index-dir", tmp_path / "idx",
                      check=False)
    assert wrong.returncode == 1 and "resnet18 checkpoint, not resnet34; use --model resnet18" in wrong.stderr


def test_a_tampered_index_is_reported_in_one_line_and_repaired_by_indexing(tmp_path):
    photos = _photos(tmp_path / "photos")
    idx = tmp_path / "idx"
    simviewer("index", photos, "--model", "resnet18", "--weights", "none", "--index-dir", idx)
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest["generation"] = "../outside_gen"
    (idx / "manifest.json").write_text(json.dumps(manifest))

    query = simviewer("query", photos / "p1.jpg", "--folder", photos, "--index-dir", idx, check=False)
    assert query.returncode == 1 and "Traceback" not in query.stderr
    assert query.stderr.count("\n") == 1 and "not a simviewer generation name" in query.stderr
    assert "re-index" in query.stderr

    fixed = simviewer("index", photos, "--model", "resnet18", "--weights", "none", "--index-dir", idx, "--json")
    assert "Traceback" not in fixed.stderr and "outside_gen" in fixed.stderr  # what was wrong, said once
    assert json.loads(fixed.stdout)["index_rebuilt"] is True
    out = simviewer("query", photos / "p1.jpg", "--folder", photos, "--index-dir", idx, "-k", "2", "--json")
    assert len(json.loads(out.stdout)) == 2
