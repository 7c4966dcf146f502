"""Synthetic photos for the tests: made in tmp_path, never downloaded."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path_factory, monkeypatch):
    """Keep every library index out of the real per-user data folder."""
    monkeypatch.setenv("SIMVIEWER_DATA_DIR", str(tmp_path_factory.mktemp("userdata")))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """Tests never touch the network, and do not see weights a developer has cached: the default
    model is chosen as on a fresh machine offline."""
    monkeypatch.setenv("SIMVIEWER_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))


def make_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A photo-like picture: a gradient sky, a few solid shapes, sensor noise. Distinct per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    angle = rng.uniform(0, 1)
    ramp = (t * angle + np.linspace(0, 1, w)[None, :, None] * (1 - angle))
    arr = (c0 * (1 - ramp) + c1 * ramp).astype(np.float32)
    im = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(4, 9)):
        x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
        x1, y1 = x0 + rng.integers(15, w // 2), y0 + rng.integers(15, h // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            pts = [(int(x), int(y)) for x, y in zip(rng.integers(0, w, 3), rng.integers(0, h, 3))]
            draw.polygon(pts, fill=colour)
    noise = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray((np.asarray(im, np.float32) + noise).clip(0, 255).astype(np.uint8))


def jpeg_bytes(im: Image.Image, quality: int = 90, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


EDITS = {
    "resized": lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS),
    "recompressed": lambda im: Image.open(io.BytesIO(jpeg_bytes(im, quality=35))).convert("RGB"),
    "cropped": lambda im: im.crop((im.width // 16, im.height // 16, im.width * 15 // 16, im.height * 15 // 16)),
    "flipped": ImageOps.mirror,
    "bordered": lambda im: ImageOps.expand(im, border=12, fill=(255, 255, 255)),
}


def write_jpeg(path: Path, im: Image.Image, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(im, quality))
    return path


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Twelve distinct photos in two sub-folders."""
    root = tmp_path / "photos"
    for i in range(12):
        write_jpeg(root / ("trips" if i % 2 else "home") / f"photo{i:02d}.jpg", make_photo(i))
    return root


def bump_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


@pytest.fixture
def spoiled(monkeypatch):
    """Training that can only make the model worse: each step climbs the loss instead of descending
    it. Switch it off with ``spoiled["on"] = False``."""
    import torch

    from simviewer.core import training as tr

    state = {"on": True}
    real_fit = tr.fit

    def ascend(optimizer):
        def step(closure=None):
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.add_(p.grad.sign(), alpha=0.05)
        return step

    def spy(model, train_loader, val_loader, epochs, optimizer, *args, **kw):
        if state["on"]:
            optimizer.step = ascend(optimizer)
        yield from real_fit(model, train_loader, val_loader, epochs, optimizer, *args, **kw)

    monkeypatch.setattr(tr, "fit", spy)
    return state


@pytest.fixture
def private_trash(tmp_path, monkeypatch):
    """The system trash of a private home on the same volume, so tests never touch the real one."""
    from send2trash import plat_other

    home = tmp_path / "xdg"
    monkeypatch.setattr(plat_other, "XDG_DATA_HOME", os.fsencode(home))
    monkeypatch.setattr(plat_other, "HOMETRASH_B", os.fsencode(home / "Trash"))
    monkeypatch.setattr(plat_other, "get_dev", lambda path: 0)  # same volume: use the home trash
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home / "Trash"
