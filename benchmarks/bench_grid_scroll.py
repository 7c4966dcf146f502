"""Library grid at 100k photos: set-up time and time per scrolled frame.

naive: a QListWidget with one QListWidgetItem (name + placeholder icon) per photo.
ours:  simviewer's LibraryGridModel in a QListView (uniform item sizes, batched
       layout, thumbnails requested only for the rows painted, decoded on a pool).

Both grids scroll the same way: 200 jumps spread from top to bottom, each painted synchronously.
The photos are N hard links to a few real JPEGs, so every row has a distinct path and a real file.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_grid_scroll.py --source ../shared/data/ukbench_subset56 -n 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSize
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QApplication, QListView, QListWidget, QListWidgetItem

from simviewer.core.images import walk_images
from simviewer.gui.models import FileRow, LibraryGridModel
from simviewer.gui.thumbnails import THUMB_SIZE, ThumbnailService

FRAMES = 200


def configure(view: QListView) -> None:
    view.setViewMode(QListView.ViewMode.IconMode)
    view.setResizeMode(QListView.ResizeMode.Adjust)
    view.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
    view.setGridSize(QSize(THUMB_SIZE + 24, THUMB_SIZE + 36))
    view.setMovement(QListView.Movement.Static)
    view.resize(1000, 800)


def scroll_frames(app: QApplication, view: QListView) -> list[float]:
    bar = view.verticalScrollBar()
    times = []
    for i in range(FRAMES):
        bar.setValue(int(bar.maximum() * i / (FRAMES - 1)))
        t = time.perf_counter()
        view.viewport().repaint()
        app.processEvents()
        times.append((time.perf_counter() - t) * 1000)
    return sorted(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("-n", type=int, default=100_000)
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    sources = sorted(e.path for e in walk_images(args.source))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        rows = []
        for i in range(args.n):
            p = folder / f"img{i:07d}.jpg"
            os.link(sources[i % len(sources)], p)
            st = p.stat()
            rows.append(FileRow(p, st.st_size, st.st_mtime_ns, 640, 480))

        # naive
        t = time.perf_counter()
        naive = QListWidget()
        configure(naive)
        placeholder = QPixmap(THUMB_SIZE, THUMB_SIZE)
        placeholder.fill(QColor(60, 60, 60))
        icon = QIcon(placeholder)
        for r in rows:
            naive.addItem(QListWidgetItem(icon, r.path.name))
        naive.show()
        app.processEvents()
        naive_setup = time.perf_counter() - t
        naive_frames = scroll_frames(app, naive)
        naive.close()
        del naive

        # ours
        t = time.perf_counter()
        thumbnails = ThumbnailService(Path(tmp) / "thumbs")
        model = LibraryGridModel(thumbnails)
        view = QListView()
        configure(view)
        view.setUniformItemSizes(True)
        view.setLayoutMode(QListView.LayoutMode.Batched)
        view.setBatchSize(200)
        view.setModel(model)
        model.set_library_rows(rows)
        view.show()
        app.processEvents()
        ours_setup = time.perf_counter() - t
        ours_frames = scroll_frames(app, view)
        thumbnails.shutdown()
        view.close()

    def line(name, setup, frames):
        return (f"  {name}: set-up {setup:6.2f} s, frame p50 {frames[len(frames) // 2]:6.1f} ms, "
                f"p99 {frames[int(len(frames) * 0.99) - 1]:6.1f} ms, worst {frames[-1]:6.1f} ms")

    print(f"{args.n} photos in the grid, {FRAMES} scroll jumps top to bottom, offscreen")
    print(line("naive QListWidget        ", naive_setup, naive_frames))
    print(line("simviewer model/view grid", ours_setup, ours_frames))
    print(f"  ratio: set-up {naive_setup / ours_setup:.1f}x, worst frame "
          f"{naive_frames[-1] / max(ours_frames[-1], 0.01):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
