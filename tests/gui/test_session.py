"""The library session alone, without a window: opening, indexing, loading, switching models."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QSettings  # noqa: E402

from simviewer.core.embedder import Embedder  # noqa: E402
from simviewer.core.library import IndexSummary  # noqa: E402
from simviewer.gui.session import KEPT_REASON, LibrarySession, ModelInUse  # noqa: E402

from ..conftest import make_photo, write_jpeg  # noqa: E402


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    for i in range(5):
        write_jpeg(root / f"p{i}.jpg", make_photo(300 + i, size=(128, 96)))
    return root


@pytest.fixture
def session(tmp_path, small_default):
    s = LibrarySession(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), tmp_path / "indexes")
    yield s
    s.close()


def wait_ready(qtbot, session, timeout=120_000):
    qtbot.waitUntil(lambda: session.worker is not None and not session.indexing and not session.loading,
                    timeout=timeout)


def test_open_indexes_then_signals_the_index_and_rows(qtbot, session, photos):
    seen = {"opened": [], "indexing": [], "ready": [], "rows": [], "events": []}
    session.opened.connect(seen["opened"].append)
    session.indexing_changed.connect(seen["indexing"].append)
    session.index_ready.connect(seen["ready"].append)
    session.rows_changed.connect(seen["rows"].append)
    session.event.connect(seen["events"].append)
    library = session.open(photos)
    wait_ready(qtbot, session)
    assert seen["opened"] == [library] and seen["indexing"] == [True, False]
    assert seen["ready"][0] is None and seen["ready"][-1] is session.index and session.index.count == 5
    assert sorted(r.path.name for r in seen["rows"][-1]) == [f"p{i}.jpg" for i in range(5)]
    assert isinstance(seen["events"][0], ModelInUse) and isinstance(seen["events"][-1], IndexSummary)
    assert session.recent() == [str(photos)]


def test_reopening_keeps_the_library_model_and_use_model_switches(qtbot, session, photos):
    session.open(photos)
    wait_ready(qtbot, session)
    events = []
    session.event.connect(events.append)
    session.open(photos)
    wait_ready(qtbot, session)
    assert events[0].reason == KEPT_REASON and events[-1].embedded == 0
    session.use_model(Embedder("resnet34", "none"))
    assert session.indexing
    wait_ready(qtbot, session)
    assert session.index.manifest["model"]["arch"] == "resnet34"


def test_a_second_start_while_running_restarts_after_the_first_stops(qtbot, session, photos):
    changes = []
    session.indexing_changed.connect(changes.append)
    session.open(photos)
    session.reindex_with_default_model()  # asked while the first run is going
    wait_ready(qtbot, session)
    assert changes == [True, False, True, False]
    assert session.index is not None and session.index.count == 5
