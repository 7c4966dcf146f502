"""Pictures for checking Grad-CAM: unrelated backgrounds that share one distinctive patch.

Used by the tests and by benchmarks/bench_gradcam_checks.py, which prints the same figures.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from simviewer.core.gradcam import CropGeometry, upsample


def background(seed: int, size: int = 224) -> Image.Image:
    """A smooth two-colour gradient with sensor noise: a photo with nothing in it."""
    rng = np.random.default_rng(seed)
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform()
    ramp = np.linspace(0, 1, size)[:, None, None] * angle + np.linspace(0, 1, size)[None, :, None] * (1 - angle)
    arr = c0 * (1 - ramp) + c1 * ramp + rng.normal(0, 3, (size, size, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def patch(side: int = 64) -> Image.Image:
    yy, xx = np.mgrid[0:side, 0:side]
    board = (((yy // 8) + (xx // 8)) % 2 * 255).astype(np.uint8)
    noise = np.random.default_rng(77).integers(0, 255, (side, side), dtype=np.uint8)
    return Image.fromarray(np.stack([board, 255 - board, noise], 2))


def patched_pairs(n=8, side=64, size=224):
    """Unrelated pictures that share one distinctive patch, at different places."""
    rng = np.random.default_rng(0)
    for i in range(n):
        a, b = background(1000 + i, size), background(2000 + i, size)
        pa = tuple(int(v) for v in rng.integers(0, size - side, 2))
        pb = tuple(int(v) for v in rng.integers(0, size - side, 2))
        a.paste(patch(side), pa)
        b.paste(patch(side), pb)
        yield a, b, pb


def heat_in_photo(cam: np.ndarray, g: CropGeometry, size: int) -> np.ndarray:
    side = int(round(g.size))
    up = upsample(cam, side, side)
    full = np.zeros((size, size))
    x0, y0 = int(round(g.left)), int(round(g.top))
    full[max(y0, 0) : y0 + side, max(x0, 0) : x0 + side] = up[max(-y0, 0) : size - y0, max(-x0, 0) : size - x0]
    return full


def patch_masses(explainer, n: int = 8) -> list[float]:
    """Share of the map on B that falls on the patch, for each of n pairs."""
    masses = []
    for a, b, (x, y) in patched_pairs(n):
        e = explainer.explain(a, b)
        heat = heat_in_photo(e.cam_b, e.geometry_b, 224)
        masses.append(float(heat[y : y + 64, x : x + 64].sum() / max(heat.sum(), 1e-12)))
    return masses


def deletion_drops(explainer, n: int = 8, share: float = 0.1, draws: int = 10) -> tuple[list[float], list[float]]:
    """Similarity lost when the hottest *share* of B is masked, and when random blocks of the same
    area are (mean of *draws*), for each of n pairs. Masked pixels get the dataset mean colour."""
    import torch

    embedder = explainer.embedder
    rng = np.random.default_rng(1)
    top_drops, random_drops = [], []
    for a, b, _ in patched_pairs(n):
        xa, xb = embedder.preprocess(a), embedder.preprocess(b)
        fa = embedder.embed_tensors(xa[None])[0]

        def similarity(mask, xb=xb, fa=fa):
            x = xb.clone()
            x[:, torch.from_numpy(mask)] = 0  # zero after normalisation = the mean colour
            return float(embedder.embed_tensors(x[None])[0] @ fa)

        side = xb.shape[-1]
        base = similarity(np.zeros((side, side), bool))
        heat = upsample(explainer.explain(a, b).cam_b, side, side)
        k = int(share * side * side)
        top = np.zeros(side * side, bool)
        top[np.argsort(-heat.ravel())[:k]] = True
        top_drops.append(base - similarity(top.reshape(side, side)))
        drops = []
        for _ in range(draws):
            mask = np.zeros((side, side), bool)
            while mask.sum() < k:
                y, x = rng.integers(0, side - 32, 2)
                mask[y : y + 32, x : x + 32] = True
            drops.append(base - similarity(mask))
        random_drops.append(float(np.mean(drops)))
    return top_drops, random_drops
