"""What the clean-up's safety checks cost: N byte-identical copies (SIZE KiB each) moved to a folder
on the same file system, or replaced by hard links, then put back by undo.

Each move hashes the duplicate and (once) its keeper, and writes two signed, fsynced journal lines.

    python benchmarks/bench_cleanup.py [N] [SIZE_KIB]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simviewer.core import dedup
from simviewer.core.images import file_digest


def item(root: Path, key: str) -> dedup.Item:
    p = root / key
    st = p.stat()
    return dedup.Item(key, p, file_digest(p), st.st_size, st.st_mtime_ns, 1, 1, None)


def library(root: Path, n: int, size: int) -> list[dedup.PlannedMove]:
    (root / "copies").mkdir(parents=True)
    plan = []
    for i in range(n):
        data = np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8).tobytes()
        (root / f"k{i}.jpg").write_bytes(data)
        (root / "copies" / f"c{i}.jpg").write_bytes(data)
        plan.append(dedup.PlannedMove(item(root, f"copies/c{i}.jpg"), item(root, f"k{i}.jpg")))
    return plan


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    size = (int(sys.argv[2]) if len(sys.argv) > 2 else 1024) * 1024
    for hardlink in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            os.environ["SIMVIEWER_DATA_DIR"] = str(d / "data")
            plan = library(d / "lib", n, size)
            t = time.perf_counter()
            result = list(dedup.execute(plan, "move", d / "journal", d / "lib", d / "out", hardlink=hardlink))[-1]
            clean = time.perf_counter() - t
            assert len(result.moved) == n and not result.skipped, result.skipped
            t = time.perf_counter()
            back = list(dedup.undo(result.journal))[-1]
            undo = time.perf_counter() - t
            assert len(back.moved) == n and not back.skipped, back.skipped
        what = "hard links" if hardlink else "moves"
        print(f"{what}: {n} files of {size // 1024} KiB: clean-up {clean:.2f} s ({clean / n * 1000:.1f} ms/file), "
              f"undo {undo:.2f} s ({undo / n * 1000:.1f} ms/file)")


if __name__ == "__main__":
    main()
