"""Where simviewer keeps its per-user data, and where fine-tuned checkpoints are looked for."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATA_DIR_ENV = "SIMVIEWER_DATA_DIR"


def data_root() -> Path:
    """Per-user data folder (``SIMVIEWER_DATA_DIR`` overrides it, for tests and portable set-ups)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else platformdirs.user_data_path("simviewer", appauthor=False)


def checkpoint_dirs() -> list[Path]:
    """``models/`` in the working folder (the project's default output) and in the data folder."""
    return [Path.cwd() / "models", data_root() / "models"]


def find_checkpoints() -> list[Path]:
    found: dict[Path, None] = {}
    for d in checkpoint_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.pt")):
                found[p.resolve()] = None
    return list(found)
