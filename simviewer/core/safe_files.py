"""Files in an index folder, created without following links planted there.

An index folder holds simviewer's own files only (lock, library.json, manifest, catalog, index
generations). Each is created with ``O_NOFOLLOW`` (a symbolic link in its place is refused, never
written through) and temporary files with ``O_EXCL`` as well, and the folder itself must be the
user's own plain directory, so a link planted there cannot make simviewer truncate or overwrite a
file elsewhere.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import stat
from pathlib import Path

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Temporary names simviewer itself gives files in an index folder: ".NAME.tmp-PID".
TEMP_NAME = re.compile(r"^\.(gen-\d{6,9}|manifest\.json|calibration\.json|library\.json)\.tmp-\d{1,10}$")


class UnsafeIndexFolder(OSError):
    """An index folder, or a file in it, that simviewer will not write through; the message says why."""


def _refuse(path: Path, what: str) -> UnsafeIndexFolder:
    return UnsafeIndexFolder(f"refusing to use {path} as an index folder: {what}; remove it or choose another "
                             "folder with --index-dir")


def check_index_folder(path: str | os.PathLike, create: bool = False, owner: bool = True) -> Path:
    """*path* as an index folder: a plain directory, not a link, and (*owner*) the user's own; created
    if *create*. Writers check all three; a reader accepts a folder it may only read (a shared one)."""
    path = Path(path)
    if create and not os.path.lexists(path):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "it is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "it is not a folder")
    if owner and hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise _refuse(path, f"it belongs to another user (uid {st.st_uid})")
    return path


def unresolved_index_folder(path: str | os.PathLike) -> Path:
    """A user-given index folder made absolute, refused where it is a link (before resolving hides it)
    or not a folder; whose it is matters only to writers (:func:`check_index_folder`)."""
    path = Path(path).expanduser()
    check_index_folder(path, owner=False)
    return path.resolve()


def _open(path: Path, flags: int) -> int:
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeIndexFolder(f"{path} is a symbolic link; simviewer does not write through links in "
                                    "an index folder (remove the link)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeIndexFolder(f"{path} is not a plain file; remove it")
    return fd


def open_lock_file(path: str | os.PathLike):
    """The lock file opened for writing, neither truncated nor followed if a link; a binary file object."""
    return os.fdopen(_open(Path(path), os.O_WRONLY | os.O_CREAT), "wb")


def write_new(path: str | os.PathLike, data: bytes, sync: bool = True) -> None:
    """Create *path* (which must not exist yet, as a file or a link) holding *data*."""
    fd = _open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str | os.PathLike, data: bytes, sync: bool = True) -> None:
    """Write *path* atomically: a new temporary file beside it (exclusive, not followed), then renamed
    over it. A link at *path* is replaced by the file, its target left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    remove_entry(tmp)
    try:
        write_new(tmp, data, sync)
        os.replace(tmp, path)
    except BaseException:
        remove_entry(tmp)
        raise


def remove_entry(path: str | os.PathLike) -> None:
    """Delete a file, a link (not its target) or a folder tree; nothing if absent."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike, keep_pid: int | None = None) -> list[str]:
    """Delete what killed saves left in *folder*: only names :data:`TEMP_NAME` matches, never those of
    process *keep_pid*. Call it where no other process can be saving (under the library lock)."""
    removed = []
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if TEMP_NAME.match(entry.name) and not (keep_pid and entry.name.endswith(f".tmp-{keep_pid}")):
            remove_entry(folder / entry.name)
            removed.append(entry.name)
    return removed


# The catalog's files, which sqlite opens by name (following links): a link there is refused.
CATALOG_FILES = ("catalog.sqlite", "catalog.sqlite-journal", "catalog.sqlite-wal", "catalog.sqlite-shm")
# Files simviewer only ever replaces whole (replace_file): a link there is removed, its target left alone.
REPLACED_FILES = ("manifest.json", "calibration.json", "library.json")


def refuse_planted_links(folder: str | os.PathLike) -> list[str]:
    """UnsafeIndexFolder if a link stands in place of the catalog; links in place of
    :data:`REPLACED_FILES` are removed (never their targets). Returns the names of links removed."""
    for name in CATALOG_FILES:
        path = Path(folder) / name
        if path.is_symlink():
            raise UnsafeIndexFolder(f"{path} is a symbolic link; simviewer does not write through links in an "
                                    "index folder (remove the link)")
    removed = []
    for name in REPLACED_FILES:
        if (Path(folder) / name).is_symlink():
            (Path(folder) / name).unlink()
            removed.append(name)
    return removed


def read_own_file(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of one of simviewer's files, not followed if a link; OSError if over *limit* bytes."""
    fd = _open(Path(path), os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk or quota, or sqlite's "database or disk is full"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return False
