"""Longest event-loop stall while the window indexes a folder: naive against simviewer's worker.

A 5 ms QTimer ticks throughout; a stall is the longest gap between two ticks beyond 5 ms, i.e.
how long the window could not repaint or answer a click.

naive: Library.update driven on the GUI thread, with processEvents() after every event (the usual
       first attempt at "keeping the window alive").
ours:  MainWindow.open_folder: the window's LibrarySession runs Library.update on a worker thread
       (decoding in worker processes), forwards its events as signals, and loads the index and the
       grid rows on a worker too. The new library gets MODEL as its default model (the same network
       as naive), where the window would otherwise pick a pretrained one.

The folder is COUNT distinct photos written as JPEGs from SOURCE (each source photo also mirrored
and rotated, to make more distinct pictures than the source holds).

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_stall.py --source ../shared/data/coil100_subset17 --count 3000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps
from PySide6.QtCore import QElapsedTimer, QSettings, QTimer
from PySide6.QtWidgets import QApplication

from simviewer.core import embedder as embedding
from simviewer.core.embedder import Embedder
from simviewer.core.images import walk_images
from simviewer.core.library import Library
from simviewer.gui.main_window import MainWindow

TICK_MS = 5


class StallMeter:
    def __init__(self) -> None:
        self.clock = QElapsedTimer()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []

    def start(self) -> None:
        self.gaps.clear()
        self.clock.start()
        self.last = 0
        self.timer.start()

    def _tick(self) -> None:
        now = self.clock.elapsed()
        self.gaps.append(now - self.last)
        self.last = now

    def stop(self) -> tuple[float, float]:
        self.timer.stop()
        self._tick()
        gaps = sorted(self.gaps)
        worst = max(0.0, gaps[-1] - TICK_MS)
        p99 = max(0.0, gaps[int(len(gaps) * 0.99) - 1] - TICK_MS) if gaps else 0.0
        return worst, p99


def make_folder(out: Path, source: Path, count: int) -> None:
    files = sorted(e.path for e in walk_images(source))
    variants = [lambda im: im, ImageOps.mirror, lambda im: im.rotate(90, expand=True), ImageOps.flip]
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        src = files[i % len(files)]
        edit = variants[(i // len(files)) % len(variants)]
        with Image.open(src) as im:
            edit(im.convert("RGB")).save(out / f"img{i:05d}.jpg", "JPEG", quality=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--model", default="resnet18")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication(sys.argv[:1])

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_folder(tmp / "photos", args.source, args.count)
        meter = StallMeter()

        # naive: the generator on the GUI thread.
        lib = Library(tmp / "photos", tmp / "naive-index")
        meter.start()
        t = time.perf_counter()
        for _ in lib.update(Embedder(args.model, "none")):
            app.processEvents()
        naive_s = time.perf_counter() - t
        naive_worst, naive_p99 = meter.stop()

        # ours: the window, its new library given the same model as naive.
        embedding.default_model = lambda: embedding.ModelChoice(args.model, "none", "the benchmark's model")
        settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("model/arch", args.model)
        settings.setValue("model/weights", "none")
        w = MainWindow(settings=settings, index_root=tmp / "window-index")
        w.show()
        meter.start()
        t = time.perf_counter()
        w.open_folder(tmp / "photos")
        session = w.session
        while session.worker is None or session.indexing or session.loading or session.index is None:
            app.processEvents()
            time.sleep(0.001)
        ours_s = time.perf_counter() - t
        ours_worst, ours_p99 = meter.stop()
        assert session.embedder.fingerprint == Embedder(args.model, "none").fingerprint, session.embedder
        rows = w.library_tab.grid_model.rowCount()
        w.close()

    print(f"{args.count} photos, {args.model} untrained, offscreen; {rows} in the grid at the end")
    print(f"  naive (update on the GUI thread + processEvents): worst stall {naive_worst:7.1f} ms, "
          f"p99 {naive_p99:5.1f} ms, {naive_s:.1f} s")
    print(f"  simviewer window (worker threads):                worst stall {ours_worst:7.1f} ms, "
          f"p99 {ours_p99:5.1f} ms, {ours_s:.1f} s")
    print(f"  ratio: {naive_worst / max(ours_worst, 0.1):.1f}x shorter worst stall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
