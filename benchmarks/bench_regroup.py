"""Regrouping duplicates after a threshold change, at N photos.

naive: ask the Annoy index for every photo's neighbours again, one search at a time, then group
       (what a tool without a neighbour cache does on every slider move).
ours:  Neighbours computed once (down to a floor), then dedup.group() re-filters cached pairs.

Also times that first neighbour search ("Find duplicates") in one thread and in one per core.

Vectors are synthetic: N/5 clusters of five noisy copies in 512 dimensions, so groups exist at
every threshold tried. Item facts (sizes, resolutions) are synthetic too; grouping does not read
files.

    python benchmarks/bench_regroup.py -n 10000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simviewer.core import dedup
from simviewer.core.index import AnnIndex
from simviewer.core.system import usable_cores

THRESHOLDS = (0.90, 0.93, 0.95, 0.97, 0.99)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(max(1, args.n // 5), args.dim))
    vecs = np.repeat(centres, 5, axis=0)[: args.n] + rng.normal(scale=0.25, size=(args.n, args.dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    keys = [f"img{i:07d}.jpg" for i in range(args.n)]
    items = [dedup.Item(k, Path("/photos") / k, f"h{i}", int(rng.integers(1e5, 5e6)), i, 4000, 3000, None)
             for i, k in enumerate(keys)]
    model = {"fingerprint": "bench", "label": "synthetic", "arch": "none", "weights": "none", "dim": args.dim}
    with tempfile.TemporaryDirectory() as tmp:
        index = AnnIndex.build_and_save(tmp, vecs, keys, model)
        t = time.perf_counter()
        nb = dedup.Neighbours.compute(index, items, floor=min(THRESHOLDS))
        first = time.perf_counter() - t
        t = time.perf_counter()
        dedup.Neighbours.compute(index, items, floor=min(THRESHOLDS), threads=1)
        first_one = time.perf_counter() - t
        ours, naive, counts = [], [], []
        for th in THRESHOLDS:
            t = time.perf_counter()
            groups = dedup.group(nb, dedup.GroupingOptions(threshold=th))
            ours.append(time.perf_counter() - t)
            counts.append(len(groups))
        for th in THRESHOLDS[:2]:  # the naive way is slow: two moves are enough to time it
            t = time.perf_counter()
            dedup.group(dedup.Neighbours.compute(index, items, floor=th, threads=1),
                        dedup.GroupingOptions(threshold=th))
            naive.append(time.perf_counter() - t)
        index.close()
    print(f"{args.n} photos, {args.dim}-d vectors, thresholds {THRESHOLDS} -> groups {counts}")
    print(f"  neighbours, once: one thread {first_one:.2f} s, {usable_cores()} threads {first:.2f} s "
          f"({first_one / first:.2f}x)")
    print(f"  naive regroup (neighbours again + group): {np.mean(naive):.3f} s per threshold change")
    print(f"  simviewer regroup (cached neighbours):    {np.mean(ours):.3f} s per threshold change "
          f"(worst {max(ours):.3f} s)")
    print(f"  ratio: {np.mean(naive) / np.mean(ours):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
