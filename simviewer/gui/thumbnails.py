"""Thumbnails decoded on a thread pool, cached on disk, handed to the GUI as QImage."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from ..core.images import ImageError, load_image

log = logging.getLogger(__name__)

THUMB_SIZE = 160


def pil_to_qimage(im: Image.Image) -> QImage:
    im = im.convert("RGB")
    data = im.tobytes()
    return QImage(data, im.width, im.height, 3 * im.width, QImage.Format.Format_RGB888).copy()


def cache_name(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha1(f"{path}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape")).hexdigest() + ".jpg"


def make_thumbnail(path: str, cache_dir: Path | None) -> QImage:
    """Decode (or read from the disk cache) a THUMB_SIZE-bounded thumbnail of *path*."""
    st = os.stat(path)
    cached = cache_dir / cache_name(path, st.st_size, st.st_mtime_ns) if cache_dir else None
    if cached is not None and cached.is_file():
        img = QImage(str(cached))
        if not img.isNull():
            return img
    im = load_image(path, min_side=THUMB_SIZE).image
    im.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR, reducing_gap=2.0)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".tmp{os.getpid()}")
            im.save(tmp, "JPEG", quality=85)
            os.replace(tmp, cached)
        except OSError as exc:
            log.debug("thumbnail cache write failed: %s", exc)
    return pil_to_qimage(im)


class _Job(QRunnable):
    def __init__(self, loader: ThumbnailLoader, path: str) -> None:
        super().__init__()
        self.loader, self.path = loader, path

    def run(self) -> None:
        try:
            img = make_thumbnail(self.path, self.loader.cache_dir)
        except (ImageError, OSError) as exc:
            self.loader.failed.emit(self.path, str(exc))
            return
        self.loader.ready.emit(self.path, img)


class ThumbnailLoader(QObject):
    """Asks for each path once; ``ready(path, QImage)`` arrives on the GUI thread."""

    ready = Signal(str, QImage)
    failed = Signal(str, str)

    def __init__(self, cache_dir: Path | None, parent=None) -> None:
        super().__init__(parent)
        self.cache_dir = cache_dir
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self._requested: set[str] = set()
        self._serial = 0
        self._failed: set[str] = set()  # never retried: a file that failed once fails again
        self.ready.connect(lambda p, _img: self._requested.discard(p))
        self.failed.connect(self._on_failed)

    # Beyond this many queued decodes the user has scrolled past them: drop the backlog (rows
    # still on screen ask again when they are painted).
    MAX_BACKLOG = 400

    def _on_failed(self, path: str, reason: str) -> None:
        self._requested.discard(path)
        self._failed.add(path)
        log.info("no thumbnail for %s: %s", path, reason)

    def request(self, path: str) -> None:
        if path in self._requested or path in self._failed:
            return
        if len(self._requested) >= self.MAX_BACKLOG:
            self.pool.clear()
            self._requested.clear()
        self._requested.add(path)
        self._serial += 1
        self.pool.start(_Job(self, path), self._serial)  # newest first: what is on screen now

    def shutdown(self) -> None:
        self.pool.clear()
        self.pool.waitForDone(10_000)
