"""What simviewer asks of the machine: how many cores it may use, and durable file writes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in *path* durable; a no-op where folders cannot be fsynced (some platforms)."""
    with contextlib.suppress(OSError):
        fsync_file(Path(path))
