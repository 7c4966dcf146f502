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
import shutil
import subprocess
import sys
import tempfile
import threading
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


class MemoryWatch:
    """Peak resident memory of this process, split into anonymous memory (what the system must
    keep) and file-backed pages (page cache it can drop and re-read), sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak_anon = self.peak_file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        fields = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("RssAnon:", "RssFile:")):
                    name, value = line.split(":")
                    fields[name] = int(value.split()[0]) * 1024
        self.peak_anon = max(self.peak_anon, fields.get("RssAnon", 0))
        self.peak_file = max(self.peak_file, fields.get("RssFile", 0))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def build_child(vectors: Path, index_dir: Path, naive: bool) -> dict:
    """naive: every vector in RAM at once and the forest built in RAM (simviewer before streaming);
    ours: vectors streamed row by row (from a memory map here, from the catalog in the app) and the
    forest built in its file when it is large (AnnIndex's on-disk build)."""
    from simviewer.core import index as index_module

    with MemoryWatch() as mem:
        if naive:
            index_module.ON_DISK_BUILD_BYTES = float("inf")
            x = np.load(vectors)
            source = x
        else:
            x = np.load(vectors, mmap_mode="r")
            source = (x[i] for i in range(len(x)))
        keys = [f"p{i:07d}.jpg" for i in range(len(x))]
        model = {"fingerprint": "bench", "label": "synthetic", "arch": "none", "weights": "none", "dim": x.shape[1]}
        t = time.perf_counter()
        index = AnnIndex.build_and_save(index_dir, source, keys, model)
        seconds = time.perf_counter() - t
        trees = index.trees
        index.close()
    size = sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file())
    return {"seconds": seconds, "peak_anon": mem.peak_anon, "peak_file": mem.peak_file, "bytes": size,
            "trees": trees}


def percentiles(times: list[float]) -> tuple[float, float]:
    a = np.array(times) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run_size(n: int, dim: int, queries: int, tmp: Path, compare_build: bool) -> None:
    vec_path = tmp / f"vectors-{n}-{dim}.npy"
    t = time.perf_counter()
    make_vectors(vec_path, n, dim)
    print(f"\n{n:,} vectors of {dim} dims ({n * dim * 4 / 2**30:.2f} GiB as float32), made in "
          f"{time.perf_counter() - t:.1f} s")
    index_dir = tmp / f"index-{n}"
    for naive in ((True, False) if compare_build else (False,)):
        shutil.rmtree(index_dir, ignore_errors=True)
        out = subprocess.run([sys.executable, __file__, "--build-child", str(vec_path), str(index_dir),
                              "naive" if naive else "ours"], capture_output=True, text=True, check=True)
        built = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {'naive' if naive else 'ours '} build: {built['seconds']:.1f} s, {built['trees']} trees, index "
              f"{built['bytes'] / 2**20:.0f} MiB on disk; peak memory {built['peak_anon'] / 2**20:.0f} MiB "
              f"anonymous + {built['peak_file'] / 2**20:.0f} MiB page cache")

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
    default_sk = index._search_k(k)

    def measure(search_k: int) -> tuple[float, float, float, float]:
        index._search_k = lambda _k: search_k
        times, hits, hits5 = [], 0, 0
        for q, ex in zip(qs, exact):
            t = time.perf_counter()
            res = index.query_vector(q, k)
            times.append(time.perf_counter() - t)
            got = [int(key[1:8]) for key, _ in res]
            hits += len(set(got) & set(ex.tolist()))
            hits5 += len(set(got[:5]) & set(ex[:5].tolist()))
        return (*percentiles(times), hits / (queries * k), hits5 / (queries * 5))

    n50, n99 = percentiles(naive_t)
    print(f"  naive query (exact, numpy): p50 {n50:.2f} ms, p99 {n99:.2f} ms")
    results = {}
    for factor in (1, 2, 4, 8):
        results[factor] = measure(default_sk * factor)
        o50, o99, r10, r5 = results[factor]
        label = "ours  query" if factor == 1 else f"      search_k x{factor}"
        print(f"  {label} (Annoy, search_k {default_sk * factor}, {queries} queries, k={k}): p50 {o50:.2f} ms, "
              f"p99 {o99:.2f} ms, recall@10 vs exact {r10:.3f}, recall@5 {r5:.3f} (the query's own cluster of five)")
    index.close()
    print(f"  ratio: {n50 / results[1][0]:.1f}x (p50 query, naive / ours)")
    vec_path.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: the system's)")
    ap.add_argument("--compare-build", action="store_true",
                    help="also build the naive way (all vectors in RAM, forest in RAM) to compare memory")
    ap.add_argument("--build-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build_child:
        vec, out_dir, how = args.build_child
        print(json.dumps(build_child(Path(vec), Path(out_dir), how == "naive")))
        return 0
    print(f"machine: {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in args.n:
            run_size(n, args.dim, min(args.queries, n), Path(tmp), args.compare_build)
    return 0


if __name__ == "__main__":
    sys.exit(main())
