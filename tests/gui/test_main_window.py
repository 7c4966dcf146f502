"""The explorer window, driven like a user would, offscreen."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QSettings, Qt  # noqa: E402

from simviewer.gui import workers  # noqa: E402
from simviewer.gui.main_window import EMPTY_TEXT, MainWindow  # noqa: E402
from simviewer.gui.models import PathRole  # noqa: E402

from ..conftest import EDITS, make_photo, write_jpeg  # noqa: E402


@pytest.fixture(autouse=True)
def no_worker_left_behind():
    yield
    assert workers.running_workers() == [], "a worker thread outlived its test"


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("model/arch", "resnet18")
    settings.setValue("model/weights", "none")
    w = MainWindow(settings=settings, index_root=tmp_path / "indexes")
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for i in range(8):
        write_jpeg(root / f"photo{i}.jpg", make_photo(200 + i))
    write_jpeg(root / "edits" / "photo3_small.jpg", EDITS["resized"](make_photo(203)))
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def wait_indexed(qtbot, w, timeout=120_000):
    qtbot.waitUntil(lambda: w.index_worker is not None and not w.indexing, timeout=timeout)
    assert w.index is not None


def click_row(qtbot, w, name):
    for r in range(w.proxy.rowCount()):
        idx = w.proxy.index(r, 0)
        if idx.data(PathRole).endswith(name):
            w.grid.scrollTo(idx)
            rect = w.grid.visualRect(idx)
            qtbot.mouseClick(w.grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
            return
    raise AssertionError(f"{name} not in the grid")


def test_first_start_invites_to_open_a_folder(window):
    assert window.stack.currentWidget() is window.empty and window.empty.text() == EMPTY_TEXT


def test_open_index_click_lists_edited_copy_first(qtbot, window, folder):
    window.open_folder(folder)
    wait_indexed(qtbot, window)
    assert window.grid_model.rowCount() == 9
    assert window.skipped_button.isVisible() and "1" in window.skipped_button.text()
    assert "UNTRAINED" in window.model_label.text()
    click_row(qtbot, window, "edits/photo3_small.jpg")
    assert window.results_model.rowCount() >= 1
    assert window.results_model.rows[0].path == folder / "photo3.jpg"
    assert "(untrained)" in window.results_model.index(0).data()
    # Thumbnails arrive from the pool and replace the placeholders.
    qtbot.waitUntil(lambda: window.cache.get(str(folder / "photo3.jpg")) is not None, timeout=20_000)


def test_dropped_external_file_gives_results(qtbot, window, folder, tmp_path):
    window.open_folder(folder)
    wait_indexed(qtbot, window)
    outside = write_jpeg(tmp_path / "elsewhere" / "query.jpg", EDITS["recompressed"](make_photo(205)))
    window.handle_dropped([str(outside)])
    qtbot.waitUntil(lambda: window.query_worker is not None and not window.searching, timeout=60_000)
    assert window.results_model.rows[0].path == folder / "photo5.jpg"
    assert window.grid_model.rowCount() == 9  # not added to the library


def test_dropping_a_non_image_says_so(qtbot, window, folder, tmp_path):
    window.open_folder(folder)
    wait_indexed(qtbot, window)
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    window.handle_dropped([str(note)])
    assert window.last_error[0] == "Not an image" and "notes.txt" in window.last_error[1]


def test_cancel_keeps_the_last_index_usable(qtbot, window, folder):
    window.open_folder(folder)
    wait_indexed(qtbot, window)
    for i in range(80):
        write_jpeg(folder / "more" / f"extra{i:02d}.jpg", make_photo(600 + i))
    window.start_indexing()
    qtbot.waitUntil(lambda: window.progress.maximum() > 1, timeout=30_000)
    window.cancel_button.click()
    wait_indexed(qtbot, window, timeout=60_000)
    assert window.last_summary is not None and window.last_summary.cancelled
    assert window.index.count == 9 and window.grid_model.rowCount() == 9
    click_row(qtbot, window, "edits/photo3_small.jpg")
    assert window.results_model.rows[0].path == folder / "photo3.jpg"


def test_closing_during_indexing_exits_cleanly(qtbot, window, folder):
    window.open_folder(folder)
    qtbot.waitUntil(lambda: window.index_worker is not None and window.index_worker.isRunning(), timeout=5000)
    window.close()
    assert workers.running_workers() == []


def test_filter_and_sort(qtbot, window, folder):
    import os

    window.open_folder(folder)
    wait_indexed(qtbot, window)
    window.filter_edit.setText("SMALL")
    assert window.proxy.rowCount() == 1
    window.filter_edit.setText("")
    window.sort_box.setCurrentText("Size")
    sizes = [window.proxy.index(r, 0).data(PathRole) for r in range(window.proxy.rowCount())]
    assert [os.path.getsize(p) for p in sizes] == sorted(os.path.getsize(p) for p in sizes)
