"""Shared fixtures of the window tests: a window on a private settings file and index folder."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QSettings  # noqa: E402

from simviewer.core import embedder as embedding  # noqa: E402
from simviewer.gui import workers  # noqa: E402
from simviewer.gui.main_window import MainWindow  # noqa: E402

POOL_GRACE_MS = 5000
SMALL_MODEL = embedding.ModelChoice("resnet18", "none", "a small untrained network keeps the window tests fast")


@pytest.fixture(autouse=True)
def no_worker_left_behind():
    """No worker thread, and no runnable of a thread pool, outlives its test.

    Pools (the global one and every pool made with workers.make_pool) get a few seconds to
    finish what a closing window left them, as napari's dangling-qthread-pool check does.
    """
    yield
    assert workers.running_workers() == [], "a worker thread outlived its test"
    busy = workers.busy_pools(wait_ms=POOL_GRACE_MS)
    assert busy == [], f"{len(busy)} thread pool(s) still ran runnables {POOL_GRACE_MS} ms after the test"


@pytest.fixture
def small_default(monkeypatch):
    """New libraries get an untrained ResNet-18 instead of the real default (a pretrained model)."""
    monkeypatch.setattr(embedding, "default_model", lambda: SMALL_MODEL)
    return SMALL_MODEL


def make_window(qtbot, tmp_path, settings: QSettings | None = None) -> MainWindow:
    settings = settings or QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, index_root=tmp_path / "indexes")
    w.exec_dialog = lambda box: None  # message boxes are recorded in last_error, not shown
    qtbot.addWidget(w)
    w.show()
    return w


@pytest.fixture
def window(qtbot, tmp_path, small_default):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("model/arch", "resnet18")
    settings.setValue("model/weights", "none")
    w = make_window(qtbot, tmp_path, settings)
    yield w
    w.close()


def wait_indexed(qtbot, w, timeout=120_000):
    s = w.session
    qtbot.waitUntil(lambda: s.worker is not None and not s.indexing and not s.loading, timeout=timeout)
    assert s.index is not None
