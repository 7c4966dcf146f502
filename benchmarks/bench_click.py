"""Click-to-results in the window at N photos: from a click on a photo to its look-alikes painted.

naive: exact search, the clicked photo's vector against every vector of the library (numpy, all
       vectors in memory), then the same results list.
ours:  what the window does on a click: an Annoy lookup by item (the Library tab's query_indexed),
       then the look-alikes panel filled and painted.

The library is N hard links to a few real JPEGs with synthetic 512-d vectors (clusters of five)
written to the catalog, so no photo has to be embedded; the index is built by the library's own
update. Times are for the whole click, painting included, over 100 clicks spread over the grid.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_click.py --source ../shared/data/ukbench_subset56 -n 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from simviewer.core.catalog import Catalog, FileRecord
from simviewer.core.embedder import Embedder
from simviewer.core.images import walk_images
from simviewer.core.library import Library, default_index_dir, final_summary
from simviewer.gui.main_window import MainWindow

CLICKS = 100


def make_library(folder: Path, index_root: Path, sources: list[str], n: int) -> Library:
    folder.mkdir()
    embedder = Embedder("resnet18", "none")
    lib = Library(folder, index_root / default_index_dir(folder).name)
    rng = np.random.default_rng(0)
    with Catalog(lib.catalog_path) as cat:
        chunk = 10_000
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            centres = rng.normal(size=((stop - start + 4) // 5, embedder.dim))
            v = np.repeat(centres, 5, axis=0)[: stop - start] + rng.normal(scale=0.35, size=(stop - start, 512))
            v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
            records, vectors = [], []
            for i in range(start, stop):
                p = folder / f"img{i:07d}.jpg"
                os.link(sources[i % len(sources)], p)
                st = p.stat()
                h = f"{i:032x}"
                records.append(FileRecord(p.name, st.st_size, st.st_mtime_ns, h, 640, 480, "JPEG", "ok", None))
                vectors.append((h, v[i - start]))
            cat.write_batch(records, embedder.fingerprint, vectors)
    summary = final_summary(lib.update(embedder))  # nothing to embed: builds the index
    assert summary.embedded == 0 and summary.indexed == n, summary
    return lib


def pump(app: QApplication, cond, timeout: float = 600) -> None:
    end = time.time() + timeout
    while not cond() and time.time() < end:
        app.processEvents()
        time.sleep(0.005)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("-n", type=int, default=100_000)
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    sources = sorted(e.path for e in walk_images(args.source))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        lib = make_library(tmp / "photos", tmp / "indexes", sources, args.n)
        print(f"{args.n} photos: library and index made in {time.perf_counter() - t:.1f} s")
        settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("model/arch", "resnet18")
        settings.setValue("model/weights", "none")
        w = MainWindow(settings=settings, index_root=tmp / "indexes")
        w.resize(1280, 800)
        w.show()
        w.open_folder(lib.folder)
        session, tab = w.session, w.library_tab
        pump(app, lambda: session.worker is not None and not session.indexing and not session.loading
             and session.index is not None)
        assert tab.grid_model.rowCount() == args.n
        picks = [lib.folder / f"img{i:07d}.jpg" for i in np.linspace(0, args.n - 1, CLICKS).astype(int)]
        k = tab.panel.k_spin.value()
        fingerprint = session.index.model_fingerprint

        def painted() -> None:
            tab.panel.view.viewport().repaint()
            app.processEvents()

        ours, ours_top = [], []
        for p in picks:
            t = time.perf_counter()
            tab.query_indexed(str(p))
            painted()
            ours.append(time.perf_counter() - t)
            ours_top.append({r.path for r in tab.panel.rows[:4]})

        # naive: every vector in memory, exact cosine against all of them on each click.
        with lib.open_catalog() as cat:
            keys = [key for key, _ in cat.indexed_keys(fingerprint)]
            x = np.stack(list(cat.indexed_vectors(fingerprint)))
        row_of = {key: r for r, key in enumerate(keys)}
        naive, found = [], 0
        for p, top4 in zip(picks, ours_top):
            t = time.perf_counter()
            q = x[row_of[p.name]]
            s = x @ q
            top = np.argpartition(-s, k + 1)[: k + 1]
            top = [i for i in top[np.argsort(-s[top])] if keys[i] != p.name][:k]
            tab.show_results([(lib.path_for(keys[i]), float(s[i])) for i in top])
            painted()
            naive.append(time.perf_counter() - t)
            found += len(top4 & {r.path for r in tab.panel.rows[:4]})
        w.close()

    def stats(ts: list[float]) -> str:
        a = np.array(ts) * 1000
        return f"p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms, worst {a.max():.1f} ms"

    print(f"  naive click (exact search over {args.n} vectors + paint): {stats(naive)}")
    print(f"  ours  click (Annoy lookup + paint):                   {stats(ours)}")
    print(f"  the index found {found / (4 * len(picks)):.1%} of each photo's four cluster mates (exact top 4)")
    print(f"  ratio: {np.median(naive) / np.median(ours):.1f}x (p50, naive / ours)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
