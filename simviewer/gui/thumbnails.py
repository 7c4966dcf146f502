"""Thumbnails decoded on a thread pool, cached on disk and in memory, shared by every view.

A :class:`ThumbnailService` is what the tabs are given: ``get(path)`` answers from the in-memory
cache, ``request(path)`` asks the pool for a missing one, and ``ready(path, image)`` says it has
arrived (and is in the cache by then).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QObject, QRunnable, Signal
from PySide6.QtGui import QImage, QPixmap

from ..core.images import ImageError, load_image
from .workers import make_pool

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
        self.pool = make_pool(self, 2)
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


class PixmapCache:
    """A bounded LRU of thumbnails as QPixmap (made on the GUI thread from worker QImages)."""

    def __init__(self, capacity: int = 4000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, QPixmap] = OrderedDict()

    def get(self, key: str) -> QPixmap | None:
        pm = self._items.get(key)
        if pm is not None:
            self._items.move_to_end(key)
        return pm

    def put(self, key: str, image: QImage) -> None:
        self._items[key] = QPixmap.fromImage(image)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class ThumbnailService(QObject):
    """The pixmap cache and the background loader behind every thumbnail the window shows."""

    ready = Signal(str, QImage)  # path, image: already in the cache when this arrives

    def __init__(self, cache_dir: Path | None = None, parent=None, capacity: int = 4000) -> None:
        super().__init__(parent)
        self.cache = PixmapCache(capacity)
        self.loader = ThumbnailLoader(cache_dir, self)
        self.loader.ready.connect(self._arrived)

    def _arrived(self, path: str, image: QImage) -> None:
        self.cache.put(path, image)
        self.ready.emit(path, image)

    def set_cache_dir(self, cache_dir: Path | None) -> None:
        """Where thumbnails are kept on disk (the open library's index folder)."""
        self.loader.cache_dir = cache_dir

    def get(self, path: str) -> QPixmap | None:
        return self.cache.get(path)

    def request(self, path: str) -> None:
        self.loader.request(path)

    def pixmap(self, path: str) -> QPixmap | None:
        """The cached thumbnail, or None after asking for it (``ready`` follows)."""
        pm = self.cache.get(path)
        if pm is None:
            self.loader.request(path)
        return pm

    def shutdown(self) -> None:
        self.loader.shutdown()
