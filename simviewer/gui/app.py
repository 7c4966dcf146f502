"""``simviewer [FOLDER]``: start the desktop app."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

log = logging.getLogger(__name__)


def icon_path() -> Path | None:
    """The app icon: in the source tree, or where a wheel install put it (share/icons)."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "resources" / "simviewer.svg",
        Path(sys.prefix) / "share" / "icons" / "hicolor" / "scalable" / "apps" / "simviewer.svg",
    ):
        if candidate.is_file():
            return candidate
    return None


def main(folder: str | None = None) -> int:
    try:
        from PySide6.QtWidgets import QApplication, QMessageBox
    except ImportError as exc:
        print(f"simviewer: error: the desktop app needs PySide6 ({exc}); install it with "
              "`pip install PySide6-Essentials`", file=sys.stderr)
        return 1
    from .main_window import MainWindow, schedule_open

    app = QApplication.instance() or QApplication(sys.argv[:1])
    if app is None:  # pragma: no cover
        return 1
    app.setApplicationName("simviewer")
    app.setOrganizationName("simviewer")
    app.setDesktopFileName("simviewer")
    if (icon := icon_path()) is not None:
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))
    window = MainWindow()

    def excepthook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        log.error("unexpected error:\n%s", text)
        box = QMessageBox(QMessageBox.Icon.Critical, "simviewer: unexpected error",
                          f"{value}\n\nYour photos are untouched. Please report this with the details below.",
                          parent=window)
        box.setDetailedText(text)
        box.exec()

    sys.excepthook = excepthook
    window.show()
    schedule_open(window, folder)
    return app.exec()
