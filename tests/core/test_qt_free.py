"""The core must never import Qt: it runs under the CLI, in tests and in worker threads alike."""

import subprocess
import sys


def test_core_never_imports_pyside6():
    code = (
        "import sys, pkgutil, importlib, simviewer.core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'simviewer.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "import simviewer.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'PyQt5', 'PyQt6'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt modules imported by the core: {out.stdout}"
