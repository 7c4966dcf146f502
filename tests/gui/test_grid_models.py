"""The grid and results item models, and the thumbnail service, without a window."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage, QPixmap  # noqa: E402

from simviewer.gui.models import (  # noqa: E402
    FileRow,
    LibraryGridModel,
    PathRole,
    PixmapCache,
    ResultListModel,
    ScoreRole,
    SizeRole,
)
from simviewer.gui.thumbnails import THUMB_SIZE, ThumbnailService  # noqa: E402

from ..conftest import make_photo, write_jpeg  # noqa: E402

DECO, DISPLAY = Qt.ItemDataRole.DecorationRole, Qt.ItemDataRole.DisplayRole


def rows():
    return [
        FileRow(Path("/p/b/Beach.jpg"), 300, 20, 640, 480),
        FileRow(Path("/p/a/alps.jpg"), 100, 30, None, None),
        FileRow(Path("/p/c/city.png"), 200, 10, 800, 600),
    ]


@pytest.fixture
def thumbnails(qapp, tmp_path):
    service = ThumbnailService(tmp_path / "thumbs")
    yield service
    service.shutdown()


def names(model):
    return [model.index(r).data(PathRole).rsplit("/", 1)[1] for r in range(model.rowCount())]


def test_grid_filters_by_name_and_sorts_both_ways(thumbnails):
    model = LibraryGridModel(thumbnails)
    model.set_library_rows(rows())
    assert names(model) == ["alps.jpg", "Beach.jpg", "city.png"]  # by name, case-insensitive
    model.sort_by("Date")
    assert names(model) == ["city.png", "Beach.jpg", "alps.jpg"]
    model.sort_by("Size", descending=True)
    assert names(model) == ["Beach.jpg", "city.png", "alps.jpg"]
    model.set_filter("  JPG ")
    assert names(model) == ["Beach.jpg", "alps.jpg"]
    model.set_filter("")
    assert model.rowCount() == 3 and model.index(0).data(SizeRole) == 300


def test_grid_sort_direction_toggles_and_survives_a_change_of_sort(thumbnails):
    model = LibraryGridModel(thumbnails)
    model.set_library_rows(rows())
    model.set_descending(True)
    assert names(model) == ["city.png", "Beach.jpg", "alps.jpg"]  # names reversed
    model.sort_by("Size")  # another key keeps the direction chosen
    assert [model.index(r).data(SizeRole) for r in range(3)] == [300, 200, 100]  # largest first
    model.set_filter("jpg")
    assert names(model) == ["Beach.jpg", "alps.jpg"]
    model.set_descending(False)
    assert names(model) == ["alps.jpg", "Beach.jpg"]


def test_a_row_asks_for_its_thumbnail_once_and_shows_it_when_it_arrives(qtbot, thumbnails, tmp_path):
    photo = write_jpeg(tmp_path / "one.jpg", make_photo(1, size=(320, 240)))
    model = LibraryGridModel(thumbnails)
    model.set_library_rows([FileRow(photo, photo.stat().st_size, photo.stat().st_mtime_ns, 320, 240)])
    idx = model.index(0)
    placeholder = idx.data(DECO)
    assert placeholder.width() == THUMB_SIZE and thumbnails.get(str(photo)) is None
    with qtbot.waitSignal(model.dataChanged, timeout=10_000) as changed:
        pass
    assert changed.args[0].row() == 0 and DECO in changed.args[2]
    shown = idx.data(DECO)
    assert shown.cacheKey() == thumbnails.get(str(photo)).cacheKey() and shown.width() == THUMB_SIZE
    assert any(p.suffix == ".jpg" for p in (tmp_path / "thumbs").iterdir())  # kept on disk too
    assert "320×240" in idx.data(Qt.ItemDataRole.ToolTipRole)


def test_results_label_score_untrained_and_computing(thumbnails):
    model = ResultListModel(thumbnails)
    r = FileRow(Path("/p/x.jpg"), 2048, 1, 10, 20, score=0.987)
    model.set_rows([r])
    idx = model.index(0)
    assert idx.data(DISPLAY).splitlines() == ["98.7 %", "x.jpg", "2.0 KB · 10×20"]
    assert idx.data(ScoreRole) == pytest.approx(0.987)
    model.untrained = True
    assert idx.data(DISPLAY).startswith("98.7 % (untrained)")
    model.show_overlays = True
    model.set_computing({"/p/x.jpg"})
    assert "heat map…" in idx.data(DISPLAY)
    overlay = QPixmap(8, 8)
    overlay.fill(QColor("red"))
    model.set_overlay("/p/x.jpg", overlay)  # arrives: no longer computing, and shown
    assert "heat map…" not in idx.data(DISPLAY) and idx.data(DECO).cacheKey() == overlay.cacheKey()
    model.show_overlays = False
    assert idx.data(DECO).cacheKey() != overlay.cacheKey()


def test_pixmap_cache_keeps_the_most_recently_used(qapp):
    cache = PixmapCache(capacity=2)
    img = QImage(4, 4, QImage.Format.Format_RGB888)
    cache.put("a", img)
    cache.put("b", img)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", img)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
