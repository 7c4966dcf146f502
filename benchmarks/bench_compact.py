"""Compact vectors: what float16 storage or a PCA projection costs in retrieval and dedup quality.

For a labelled folder (CSV path,group), every photo is embedded with the chosen model (float32),
then every variant of the vectors is scored with simviewer's own evaluation (dedup pair F1 at the best
threshold, recall@1, recall@5, mAP) and against the full vectors' exact neighbours (recall@10):

  float32   the network's output (the reference)
  float16   rounded to half precision, as the catalog stores them (half the bytes)
  pca-K     centred and projected on the K main axes of the library's own vectors, re-normalised
            (K x 4 bytes; the projection is fitted on the folder itself)

    python benchmarks/bench_compact.py benchmarks/out/neardup --labels benchmarks/out/neardup/labels.csv \
        --model resnet50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from simviewer.core import dedup, evaluate
from simviewer.core.embedder import Embedder
from simviewer.core.images import ImageError, load_image


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pca(x: np.ndarray, k: int) -> np.ndarray:
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return unit(centred @ vt[:k].T)


def recall_at(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Share of each photo's k exact neighbours (by the reference vectors) that *other* ranks top k."""
    def top(s: np.ndarray) -> np.ndarray:
        s = s.copy()
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1)[:, :k]

    a, b = top(reference @ reference.T), top(other @ other.T)
    return float(np.mean([len(set(r) & set(o)) / k for r, o in zip(a, b)]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--pca", type=int, nargs="+", default=[256, 128])
    args = ap.parse_args(argv)
    labels = evaluate.read_labels(args.labels)
    # Embedded here in float32 (not read from a catalog, which stores float16) so that the
    # reference is the network's own output.
    embedder = Embedder(args.model, args.weights, precision="fp32")
    items, vecs = [], []
    keys = sorted(labels)
    for start in range(0, len(keys), 32):
        batch = []
        for key in keys[start : start + 32]:
            path = args.folder / key
            try:
                decoded = load_image(path, embedder.preprocess.min_side)
            except ImageError as exc:
                print(f"  skipped {key}: {exc}")
                continue
            st = path.stat()
            items.append(dedup.Item(key, path, key, st.st_size, st.st_mtime_ns, decoded.width, decoded.height, None))
            batch.append(decoded.image)
        if batch:
            vecs.append(embedder.embed_images(batch))
    x = unit(np.concatenate(vecs).astype(np.float64))
    groups = np.array([labels[it.key] for it in items])
    dim = x.shape[1]
    variants = {"float32": (x, dim * 4), "float16": (unit(x.astype(np.float16).astype(np.float64)), dim * 2)}
    for k in args.pca:
        if k < min(dim, len(x)):
            variants[f"pca-{k}"] = (pca(x, k), k * 4)
    print(f"{args.folder}: {len(items)} labelled photos, {args.model} ({args.weights}), {dim}-d vectors")
    print(f"  {'variant':10s} {'bytes/photo':>11s}  {'best F1':>7s} {'at':>9s}  {'R@1':>5s} {'R@5':>5s} {'mAP':>5s}  "
          f"{'recall@10 vs float32':>20s}")
    for name, (v, nbytes) in variants.items():
        r = evaluate.evaluate_method(name, items, v @ v.T, groups, 1.0)  # best F1 only
        print(f"  {name:10s} {nbytes:11d}  {r.best.f1:7.3f} {r.best.threshold:9.5f}  {r.retrieval.recall_at_1:5.3f} "
              f"{r.retrieval.recall_at_5:5.3f} {r.retrieval.mean_ap:5.3f}  {recall_at(x, v):20.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
