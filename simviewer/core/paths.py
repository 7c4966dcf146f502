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


def key_to_db(key: str) -> str | bytes:
    """A library key (a relative path, as ``os.fsdecode`` gives it) as SQLite stores it.

    A name that is valid UTF-8 stays text. A name that is not (``caf\\xe9.png`` from a Latin-1
    system reads as ``'caf\\udce9.png'``) cannot be text in SQLite: it is stored as the file
    name's own bytes, so it is kept losslessly and the file can be opened again.
    """
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape")
    return key


def key_from_db(value: str | bytes) -> str:
    """The key stored by :func:`key_to_db`."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


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
