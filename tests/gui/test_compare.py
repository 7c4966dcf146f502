"""The compare view alone: loading, stepping, swapping, a photo that cannot be shown."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402

from simviewer.gui.models import FileRow  # noqa: E402
from simviewer.gui.widgets.compare_view import CompareDialog, ImageLoad, LoadSignals  # noqa: E402

from ..conftest import make_photo, write_jpeg  # noqa: E402


def row(path, score):
    st = path.stat()
    return FileRow(path, st.st_size, st.st_mtime_ns, None, None, score)


@pytest.fixture
def pair(tmp_path):
    query = write_jpeg(tmp_path / "query.jpg", make_photo(60, size=(300, 200)))
    matches = [write_jpeg(tmp_path / f"m{i}.jpg", make_photo(61 + i, size=(200, 300))) for i in range(2)]
    return query, [row(matches[0], 0.91), row(matches[1], 0.5)]


def test_it_shows_both_photos_steps_and_swaps(qtbot, pair):
    query, matches = pair
    dlg = CompareDialog(query, matches, 0)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitUntil(lambda: not dlg.left.item.pixmap().isNull() and not dlg.right.item.pixmap().isNull(),
                    timeout=20_000)
    assert dlg.left.item.pixmap().width() == 300 and dlg.right.item.pixmap().height() == 300
    assert dlg.score_label.text() == "Match 1 of 2: 91.0 % similar" and not dlg.heat_box.isEnabled()
    assert dlg.left_caption.text() == "query: query.jpg" and dlg.right_caption.text().startswith("match: m0.jpg — ")
    qtbot.keyClick(dlg, Qt.Key.Key_Right)
    qtbot.keyClick(dlg, Qt.Key.Key_Right)  # already the last match: stays
    assert dlg.current == 1 and dlg.sides() == (str(query), str(matches[1].path))
    qtbot.keyClick(dlg, Qt.Key.Key_S)
    assert dlg.sides() == (str(matches[1].path), str(query)) and dlg.left_caption.text().startswith("match: m1")
    dlg.close()
    assert dlg.pool.activeThreadCount() == 0


def test_a_photo_that_cannot_be_decoded_says_so(qtbot, pair, tmp_path):
    query, matches = pair
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    dlg = CompareDialog(query, [row(broken, 0.8)], 0)
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: "cannot show it" in dlg.right_caption.text(), timeout=20_000)
    assert dlg.right_caption.text().startswith("broken.jpg: cannot show it (")
    dlg.close()


def test_image_load_is_usable_on_its_own(qtbot, pair, tmp_path):
    query, _ = pair
    signals = LoadSignals()
    with qtbot.waitSignal(signals.loaded, timeout=10_000) as loaded:
        ImageLoad(str(query), signals).run()
    path, image, photo, error = loaded.args
    assert path == str(query) and image.width() == 300 and photo.size == (300, 200) and error == ""
