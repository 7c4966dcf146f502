"""Old import path of the compare view, kept while the duplicates tab moves to gui.widgets."""

from .widgets.compare_view import CompareDialog, ImageLoad, ImagePane, LoadSignals

_Load, _Signals = ImageLoad, LoadSignals

__all__ = ["CompareDialog", "ImageLoad", "ImagePane", "LoadSignals", "_Load", "_Signals"]
