"""Guards against Qt-binding bugs that would crash the app after a while, not at once."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QObject, Signal  # noqa: E402


class _Emitter(QObject):
    fired = Signal(str)


def test_emitting_signals_does_not_leak_references_to_true(qapp):
    # PySide6 6.12.0 returned a borrowed True from emit(): each emit dropped one reference to
    # True, and the process aborted once a few thousand signals had fired.
    e = _Emitter()
    e.fired.connect(lambda _text: None)
    before = sys.getrefcount(True)
    for _ in range(2000):
        e.fired.emit("x")
    assert abs(sys.getrefcount(True) - before) < 50
