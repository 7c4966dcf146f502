"""The Training tab: start, watch points arrive on the plot, Stop within a step, find the checkpoint;
the recommended starting model; a run that does not beat its start offers nothing to use."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("PySide6.QtCharts")

import torch  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402

from simviewer.core import training  # noqa: E402
from simviewer.core.embedder import CHECKPOINT_FORMAT, Embedder  # noqa: E402
from simviewer.gui.session import LibrarySession  # noqa: E402
from simviewer.gui.tabs.training_tab import TrainingTab  # noqa: E402

from ..conftest import make_photo, write_jpeg  # noqa: E402
from ..core.test_training import make_classes  # noqa: E402


class Feedback:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def ask(self, title, text, yes, no="Cancel", *, informative="", details=""):
        return False

    def error(self, title, text):
        self.errors.append((title, text))


@pytest.fixture
def tab(qtbot, tmp_path, small_default):
    """The Training tab as the window builds it: from the session and an ask()/error() feedback."""
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    session = LibrarySession(settings, tmp_path / "indexes")
    t = TrainingTab(session, Feedback())
    qtbot.addWidget(t)
    t.show()
    yield t
    t.stop()
    session.close()


def wait_indexed(qtbot, session, timeout=120_000):
    qtbot.waitUntil(lambda: session.worker is not None and not session.indexing and not session.loading
                    and session.index is not None, timeout=timeout)


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    for i in range(16):
        write_jpeg(root / f"p{i:02d}.jpg", make_photo(300 + i, size=(96, 72)))
    return root


def test_train_plot_stop_and_use_the_checkpoint(qtbot, tab, photos, tmp_path):
    session = tab.session
    session.open(photos)
    wait_indexed(qtbot, session)
    form = tab.form
    form.library_button.click()
    qtbot.waitUntil(lambda: form.detected is not None, timeout=10_000)
    assert form.detected[0] == "selfsup" and "no labels" in form.detected_label.text()
    # Labelled photos of the same kind of scene: an untrained network has room to gain on them in one
    # epoch, so a checkpoint is written (only an epoch that beats the starting model is).
    form.set_dataset(str(make_classes(tmp_path / "labelled")))
    qtbot.waitUntil(lambda: form.detected is not None, timeout=10_000)
    assert form.detected[0] == "supervised"
    form.arch_box.setCurrentText("resnet18")
    form.weights_box.setCurrentIndex(form.weights_box.findData("none"))
    form.size_spin.setValue(32)
    form.batch_spin.setValue(4)
    form.epochs_spin.setValue(200)  # far more than the test waits for: only Stop ends it
    form.patience_spin.setValue(0)
    form.threads_spin.setValue(2)
    out = tmp_path / "models" / "mine.pt"
    form.out_edit.setText(str(out))

    tab.start_button.click()
    assert tab.running and not tab.start_button.isEnabled() and tab.stop_button.isEnabled()
    # Loss points arrive on the plot, then the first epoch's validation and its checkpoint.
    qtbot.waitUntil(lambda: tab.chart.loss.count() >= 3, timeout=120_000)
    assert tab.chart.smooth.count() == tab.chart.loss.count()
    # before training + epoch 1
    qtbot.waitUntil(lambda: "recall@1" in tab.chart.metrics and tab.chart.metrics["recall@1"].count() >= 2,
                    timeout=120_000)
    qtbot.waitUntil(lambda: out.is_file(), timeout=30_000)
    assert tab.progress.maximum() > 0 and "left" in tab.progress_label.text()

    with qtbot.waitSignal(tab.model_trained, timeout=60_000) as trained:  # the window offers it as a model
        qtbot.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not tab.running, timeout=60_000)
    assert trained.args == [str(out)]
    assert tab.steps_after_stop <= 1, "Stop must take effect within one step"
    done = tab.done
    assert done is not None and done.stopped and done.best_path == str(out)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["arch"] == "resnet18"
    assert tab.results.rowCount() >= 1 and tab.results.item(0, 1).text() != "—"
    assert str(out) in tab.log.toPlainText()

    # "Use this model for the library" asks the window to re-index the open library with the
    # checkpoint; the session does it (as the window does) and the checkpoint is usable.
    assert tab.use_button.isEnabled()
    with qtbot.waitSignal(tab.use_model_requested) as wanted:
        tab.use_button.click()
    assert wanted.args == ["resnet18", str(out)]
    session.use_model(Embedder(*wanted.args))
    wait_indexed(qtbot, session)
    assert session.index.manifest["model"]["weights"] == str(out.resolve())
    assert session.index.count == 16


def test_the_recommended_starting_model_is_the_default_and_says_why(qtbot, tab, small_default, tmp_path):
    form = tab.form
    assert form.weights_box.currentData() == "default"
    # shown: the recommended model is worked out on a worker
    qtbot.waitUntil(lambda: small_default.reason in form.model_label.text(), timeout=10_000)
    assert "ResNet-18" in form.model_label.text() and form.arch_box.currentText() == "resnet18"
    assert not form.arch_box.isEnabled()  # the recommendation brings its own model
    form.dataset_edit.setText(str(tmp_path))
    cfg = form.config()
    assert cfg.arch is None and cfg.weights is None  # core.training.starting_model decides, as in the CLI

    form.weights_box.setCurrentIndex(form.weights_box.findData("none"))
    assert form.arch_box.isEnabled() and "untrained" in form.model_label.text()
    assert (form.config().arch, form.config().weights) == ("resnet18", "none")


def test_a_run_that_did_not_beat_its_start_offers_no_model(qtbot, tab):
    tab.use_button.setEnabled(True)
    before = {"recall@1": 1.0, "recall@5": 1.0, "mAP": 0.809}
    done = training.TrainingDone(reason="finished", metric="mAP", before=before, best=None, best_epoch=None,
                                 best_path=None, epochs_run=1, last_epoch=1, seconds=3.0, seconds_per_epoch=(2.5,),
                                 start_better=True)
    tab._event(done)
    assert not tab.use_button.isEnabled()
    text = tab.progress_label.text()
    assert "no epoch beat the starting model (mAP 0.8090)" in text and "starting model is better" in text
    assert "no epoch beat the starting model" in tab.log.toPlainText()
    assert [tab.results.item(2, c).text() for c in range(4)] == ["mAP", "0.809", "—", "—"]


def test_at_1024_by_700_the_starting_model_and_mode_texts_are_whole(qtbot, tab):
    """Issue: at 1024x700 the form cut the starting model's reason (and the mode found) to a few lines."""
    from PySide6.QtWidgets import QScrollArea

    form = tab.form
    page = QScrollArea()  # as the window shows it
    qtbot.addWidget(page)
    page.setWidget(tab)
    page.setWidgetResizable(True)
    page.resize(1024, 420)  # little height: the form must not squeeze the labels to fit it
    page.show()
    reason = ("Recommended: EfficientNet-Lite0 with ImageNet weights (ResNet-50 ImageNet weights are not cached "
              "and cannot be downloaded (offline?); using the pretrained EfficientNet-Lite0 installed with "
              "simviewer). It is small and fast, and a fine start for fine-tuning on your own photos; a run "
              "that does not beat it saves nothing, so nothing is lost by trying.")
    form.model_label.setText(reason)
    form.detected_label.setText("33 photos in 4 labelled sub-folders: supervised (photos of a class end up close "
                                "together)")
    qtbot.wait(50)
    for label in (form.model_label, form.detected_label):
        assert label.height() >= label.heightForWidth(label.width()) > label.fontMetrics().lineSpacing()
    page.takeWidget()  # the fixture closes the tab itself


def test_at_1024_px_a_running_page_needs_no_sideways_scrolling(qtbot, tab):
    """Issue: at 1024x700 the run's progress line made the page wider than the window, so the chart,
    its legend and the log were cut at the right edge behind a horizontal scroll bar."""
    from PySide6.QtWidgets import QScrollArea

    page = QScrollArea()  # as the window shows it
    qtbot.addWidget(page)
    page.setWidget(tab)
    page.setWidgetResizable(True)
    page.resize(1024, 620)
    page.show()
    tab.progress_label.setText("epoch 1, step 14/20 · loss 1.6857 · lr 0.0001 · 6.2 img/s · about 21 s left "
                               "· validation mAP 0.812 after the last epoch")
    tab.chart.add_metrics(0, {"mAP": 0.8, "recall@1": 0.9, "recall@5": 0.95})
    qtbot.wait(50)
    assert tab.minimumSizeHint().width() <= page.viewport().width()
    assert not page.horizontalScrollBar().isVisible()
    page.takeWidget()  # the fixture closes the tab itself
