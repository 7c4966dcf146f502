"""Re-index with nothing changed, at N files: simviewer's stat-and-compare against re-reading.

naive: what a tool without a catalog does to be sure nothing changed: read and hash every file.
ours:  Library.update on an up-to-date library (stat, compare with the catalog, digest, no rebuild).

The library is N copies (under distinct names) of the photos in SOURCE; copies share content, so the
first index embeds each distinct photo once and the setup stays quick.

    python benchmarks/bench_reindex.py --source ../shared/data/coil100_subset17 -n 10000
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from simviewer.core.embedder import Embedder
from simviewer.core.images import walk_images
from simviewer.core.library import Library, final_summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    sources = sorted(e.path for e in walk_images(args.source))
    with tempfile.TemporaryDirectory() as tmp:
        folder, index_dir = Path(tmp) / "photos", Path(tmp) / "index"
        for i in range(args.n):
            dest = folder / f"d{i // 1000:03d}" / f"img{i:06d}{Path(sources[i % len(sources)]).suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sources[i % len(sources)], dest)
        lib = Library(folder, index_dir)
        t = time.perf_counter()
        first = final_summary(lib.update(Embedder(args.model, "none")))
        print(f"first index of {first.total} files: {time.perf_counter() - t:.1f} s "
              f"({first.embedded} embedded, {first.reused} reused)")

        ours = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            s = final_summary(lib.update(Embedder(args.model, "none")))
            ours.append(time.perf_counter() - t)
            assert s.embedded == 0 and not s.index_rebuilt
        naive = []
        files = [e.path for e in walk_images(folder)]
        for _ in range(args.repeat):
            t = time.perf_counter()
            for f in files:
                hashlib.blake2b(Path(f).read_bytes(), digest_size=16).digest()
            naive.append(time.perf_counter() - t)
    o, nv = min(ours), min(naive)
    print(f"re-index with nothing changed, {args.n} files (best of {args.repeat}, warm file cache):")
    print(f"  naive (read + hash every file): {nv:.3f} s")
    print(f"  simviewer Library.update:       {o:.3f} s")
    print(f"  ratio: {nv / o:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
