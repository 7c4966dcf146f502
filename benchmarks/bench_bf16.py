"""Does bf16 autocast change what simviewer finds? fp32 against bf16 on a labelled folder.

Prints, for each precision: images/s in the network, retrieval recall@1 and mAP (same-group images
are relevant, the query itself left out), and the cosine between each image's two vectors.

    python benchmarks/bench_bf16.py ../shared/data/ukbench_subset56 --model resnet50
    python benchmarks/bench_bf16.py ../shared/data/coil100_subset17 --model resnet18 --every 3

FOLDER must hold ground_truth.csv with columns path,group (path relative to FOLDER).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from simviewer.core.embedder import Embedder


def retrieval(vectors: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)[:, :-1]  # the query itself sorts last
    relevant = groups[order] == groups[:, None]
    recall1 = float(relevant[:, 0].mean())
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    counts = relevant.sum(1)
    ap = (hits / ranks * relevant).sum(1)[counts > 0] / counts[counts > 0]
    return recall1, float(ap.mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--every", type=int, default=1, help="use every N-th labelled image")
    args = ap.parse_args(argv)
    with open(args.folder / "ground_truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:: args.every]
    files = [args.folder / r["path"] for r in rows]
    groups = np.array([r["group"] for r in rows])
    vecs = {}
    print(f"{args.folder}: {len(files)} images, {args.model} ({args.weights})")
    for precision in ("fp32", "bf16"):
        e = Embedder(args.model, args.weights, precision=precision).load()
        e.embed_paths(files[:4])  # warm-up
        t = time.perf_counter()
        vecs[precision] = e.embed_paths(files)
        dt = time.perf_counter() - t
        r1, m = retrieval(vecs[precision], groups)
        print(f"  {precision}: {len(files) / dt:6.1f} images/s (decode included), recall@1 {r1:.3f}, mAP {m:.3f}")
    cos = (vecs["fp32"] * vecs["bf16"]).sum(1)
    print(f"  cosine(fp32, bf16) per image: min {cos.min():.6f}, mean {cos.mean():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
