"""Index scale: Annoy build time, index size, build memory and query latency at N items.

naive: exact search, one matrix-vector product over every vector per query (numpy, float32, all
       vectors in memory), which is what "compare with everything" costs.
ours:  simviewer's AnnIndex (Annoy forest, memory-mapped, trees_for(N) trees), queried through
       AnnIndex.query_vector exactly as a click in the app does. recall@10 against the exact search.

Vectors are synthetic: N/5 clusters of five noisy copies (so true neighbours exist), L2-normalised.
The build runs in a child process so its peak memory is its own.

    python benchmarks/bench_ann.py -n 100000 1000000 --dim 512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simviewer.core.index import AnnIndex


def make_vectors(path: Path, n: int, dim: int, seed: int = 0) -> None:
    """Write N unit vectors to a .npy in chunks (1M x 2048 never has to fit twice). A chunk holds
    whole clusters of five, so each cluster's centre is drawn once."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    chunk = 50_000
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        centres = rng.normal(size=((stop - start + 4) // 5, dim))
        v = np.repeat(centres, 5, axis=0)[: stop - start] + rng.normal(scale=0.35, size=(stop - start, dim))
        out[start:stop] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    out.flush()


def build_child(vectors: Path, index_dir: Path) -> dict:
    x = np.load(vectors, mmap_mode="r")
    keys = [f"p{i:07d}.jpg" for i in range(len(x))]
    model = {"fingerprint": "bench", "label": "synthetic", "arch": "none", "weights": "none", "dim": x.shape[1]}
    t = time.perf_counter()
    index = AnnIndex.build_and_save(index_dir, x, keys, model)
    seconds = time.perf_counter() - t
    trees = index.trees
    index.close()
    size = sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file())
    return {"seconds": seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "bytes": size, "trees": trees}


def percentiles(times: list[float]) -> tuple[float, float]:
    a = np.array(times) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run_size(n: int, dim: int, queries: int, tmp: Path) -> None:
    vec_path = tmp / f"vectors-{n}-{dim}.npy"
    t = time.perf_counter()
    make_vectors(vec_path, n, dim)
    print(f"\n{n:,} vectors of {dim} dims ({n * dim * 4 / 2**30:.2f} GiB as float32), made in "
          f"{time.perf_counter() - t:.1f} s")
    index_dir = tmp / f"index-{n}"
    out = subprocess.run([sys.executable, __file__, "--build-child", str(vec_path), str(index_dir)],
                         capture_output=True, text=True, check=True)
    built = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  ours  build: {built['seconds']:.1f} s, {built['trees']} trees, index {built['bytes'] / 2**20:.0f} MiB "
          f"on disk, peak memory of the build {built['peak_rss'] / 2**20:.0f} MiB")

    rng = np.random.default_rng(1)
    picks = rng.choice(n, size=queries, replace=False)
    x = np.load(vec_path)  # the naive way holds every vector in memory
    qs = x[picks] + rng.normal(scale=0.02, size=(queries, dim)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    k = 10
    naive_t, exact = [], []
    for q in qs:
        t = time.perf_counter()
        s = x @ q
        top = np.argpartition(-s, k)[:k]
        top = top[np.argsort(-s[top])]
        naive_t.append(time.perf_counter() - t)
        exact.append(top)
    del x
    index = AnnIndex.load(index_dir)
    ours_t, hits, hits5 = [], 0, 0
    for q, ex in zip(qs, exact):
        t = time.perf_counter()
        res = index.query_vector(q, k)
        ours_t.append(time.perf_counter() - t)
        got = [int(key[1:8]) for key, _ in res]
        hits += len(set(got) & set(ex.tolist()))
        hits5 += len(set(got[:5]) & set(ex[:5].tolist()))
    index.close()
    n50, n99 = percentiles(naive_t)
    o50, o99 = percentiles(ours_t)
    print(f"  naive query (exact, numpy): p50 {n50:.2f} ms, p99 {n99:.2f} ms")
    print(f"  ours  query (Annoy, {queries} queries, k={k}): p50 {o50:.2f} ms, p99 {o99:.2f} ms, "
          f"recall@10 vs exact {hits / (queries * k):.3f}, recall@5 {hits5 / (queries * 5):.3f} (the query's "
          "own cluster of five)")
    print(f"  ratio: {n50 / o50:.1f}x (p50 query, naive / ours)")
    vec_path.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: the system's)")
    ap.add_argument("--build-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build_child:
        print(json.dumps(build_child(*args.build_child)))
        return 0
    print(f"machine: {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in args.n:
            run_size(n, args.dim, min(args.queries, n), Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
