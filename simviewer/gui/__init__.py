"""The PySide6 desktop app: it only adapts simviewer.core to windows, models and worker threads."""
