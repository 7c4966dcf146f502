"""Seconds per explained pair: one batched forward/backward for both maps against two passes.

naive: the usual single-image Grad-CAM run twice, once per photo (map on B with A's embedding as
       the target, then map on A with B's), each with its own forward and backward pass; plus
       the forward pass that gives the target embedding.
ours:  Explainer.explain: A and B in one batch; the target cos(f_A, sg(f_B)) + cos(sg(f_A), f_B)
       gives both maps in one backward pass.
batch: the window's heat maps (simviewer.gui.explain.explain_batch): --batch pairs in one pass.

    python benchmarks/bench_explain.py ../shared/data/ukbench_subset56 --model resnet50 --pairs 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from simviewer.core.embedder import Embedder
from simviewer.core.gradcam import Explainer, grad_cam
from simviewer.core.images import load_image, walk_images


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="photos to pair up (consecutive files form a pair)")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4, help="pairs per pass, as the window explains them")
    args = ap.parse_args(argv)
    embedder = Embedder(args.model, "none", precision="fp32")
    explainer = Explainer(embedder)
    pre, model, layer = embedder.preprocess, embedder.model, explainer.layer
    files = sorted(e.path for e in walk_images(args.folder))[: 2 * args.pairs]
    photos = [load_image(f, pre.resize).image for f in files]
    pairs = list(zip(photos[::2], photos[1::2]))
    explainer.explain(*pairs[0])  # warm-up

    t = time.perf_counter()
    for a, b in pairs:
        xa, xb = pre(a), pre(b)
        with torch.inference_mode():
            fa, fb = model(torch.stack([xa, xb]))
        grad_cam(model, xb[None], layer, lambda out, f=fa: nn.functional.cosine_similarity(out[0], f, dim=0))
        grad_cam(model, xa[None], layer, lambda out, f=fb: nn.functional.cosine_similarity(out[0], f, dim=0))
    naive = (time.perf_counter() - t) / len(pairs)

    t = time.perf_counter()
    for a, b in pairs:
        explainer.explain(a, b)
    ours = (time.perf_counter() - t) / len(pairs)

    from simviewer.gui.explain import explain_batch

    t = time.perf_counter()
    for i in range(0, len(pairs), args.batch):
        explain_batch(explainer, pairs[i : i + args.batch])
    batched = (time.perf_counter() - t) / len(pairs)

    print(f"{args.model}, {len(pairs)} pairs from {args.folder}, {torch.get_num_threads()} threads, fp32")
    print(f"  naive (two single-image passes + target embedding): {naive:.3f} s per pair")
    print(f"  simviewer Explainer (one batched pass):            {ours:.3f} s per pair")
    print(f"  ratio: {naive / ours:.2f}x")
    print(f"  window, {args.batch} pairs per pass:                 {batched:.3f} s per pair")
    return 0


if __name__ == "__main__":
    sys.exit(main())
