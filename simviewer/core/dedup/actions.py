"""File actions that can always be undone: moves to the system trash or to a folder, duplicates
replaced by hard links to their keeper, and undo.

Before each file is touched: it is a plain file (not a symbolic link) whose real path is inside
the library and outside every protected folder, it is not the keeper's own file under another
name, it and its keeper still hold the content the plan compared, and the intent is on disk in
the journal (:mod:`.journal`). A move across file systems copies, verifies size and hash, and only
then removes the original; a failed copy is removed and the run stops. Undo checks both places
of every intent, so a move cut short by a kill is found too, and puts a file back only from the
place simviewer moved it to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..images import file_digest
from .journal import Journal
from .rules import in_folders
from .types import DedupError, Item, PlannedMove

PARTIAL = ".simviewer-partial-"  # the name of a copy not yet verified
# What execute() takes: "hardlink" is the trash (or move_to, when given) with hardlink=True.
ACTION_MODES = ("trash", "move", "hardlink")


@dataclass(frozen=True)
class ActionProgress:
    done: int
    total: int
    path: str


@dataclass(frozen=True)
class ActionResult:
    journal: Path | None
    moved: list[tuple[str, str]]  # (from, to)
    skipped: list[tuple[str, str]]  # (path, reason)
    bytes_moved: int
    error: str | None = None  # why the run stopped before the end (a full disk...); None when it did not


class _Stop(Exception):
    """A failure that ends the run: the next move would fail the same way."""


class _Refused(Exception):
    """This file is left as it was; the message says why."""


def inside(path: Path, root: Path) -> bool:
    """Whether the real path of *path* (symbolic links resolved) is inside the real *root*."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real != top and os.path.commonpath([real, top]) == top


def execute(plan: Sequence[PlannedMove], mode: str, journal_dir: Path, root: Path,
            move_to: Path | None = None, should_stop: Callable[[], bool] | None = None, *,
            hardlink: bool = False, reference: Sequence[Path] = ()) -> Iterator[ActionProgress | ActionResult]:
    """Move the planned files to the system trash (mode "trash") or under *move_to* keeping their
    paths relative to *root* (mode "move"). With *hardlink*, each moved duplicate's path then
    becomes a hard link to its keeper (byte-identical duplicates on the keeper's file system only).
    Files that changed, whose keeper changed, that are links or lie outside the library or inside
    a *reference* folder are left alone with the reason. Mode "hardlink" is "trash" (or "move" when
    *move_to* is given) with *hardlink*."""
    if mode == "hardlink":
        mode, hardlink = ("move" if move_to is not None else "trash"), True
    root = Path(os.path.abspath(Path(root).expanduser()))  # as given: the journal's paths are under it
    move_to = _check_action(mode, root, move_to)
    journal = Journal.create(journal_dir, mode, root, move_to, hardlink)
    keepers = _KeeperCheck()
    moved, skipped, total, error = [], [], 0, None
    for n, pm in enumerate(plan):
        if should_stop is not None and should_stop():
            break
        src = pm.item.path
        try:
            _refuse_unsafe(pm, root, reference, keepers, hardlink)
            where = _act(journal, n, pm, mode, move_to, hardlink)
        except _Refused as exc:
            skipped.append((str(src), str(exc)))
        except _Stop as exc:
            error = f"{exc}. Stopped: nothing else was moved"
            break
        except OSError as exc:
            skipped.append((str(src), f"could not move it: {exc.strerror or exc}"))
        else:
            moved.append((str(src), where))
            total += pm.item.size
        yield ActionProgress(len(moved) + len(skipped), len(plan), str(src))
    yield ActionResult(journal.path, moved, skipped, total, error)


def _check_action(mode: str, root: Path, move_to: Path | None) -> Path | None:
    if mode not in ("trash", "move"):
        raise DedupError(f"unknown action {mode!r}")
    if mode == "trash":
        return None
    if move_to is None:
        raise DedupError("moving needs a destination folder")
    move_to = Path(os.path.realpath(Path(move_to).expanduser()))
    if str(move_to) == os.path.realpath(root) or inside(move_to, root):
        raise DedupError(f"the destination {move_to} is inside the library; choose a folder outside it")
    return move_to


class _KeeperCheck:
    """Whether a keeper still holds the content the plan saw: hashed once, then trusted while its
    inode, size, modification and change times stay the same."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple] = {}

    def unchanged(self, keeper: Item, st: os.stat_result) -> bool:
        if st.st_size != keeper.size:
            return False
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._seen.get(str(keeper.path)) == ident:
            return True
        try:
            same = file_digest(keeper.path) == keeper.hash
        except OSError:
            return False
        if same:
            self._seen[str(keeper.path)] = ident
        return same


def _refuse_unsafe(pm: PlannedMove, root: Path, reference: Sequence[Path], keepers: _KeeperCheck,
                   hardlink: bool) -> None:
    """Raise :class:`_Refused` with the reason when *pm* must not be acted on."""
    it, keeper = pm.item, pm.group_keeper
    src = it.path
    if os.path.islink(src):
        raise _Refused(f"a symbolic link (to {os.readlink(src)}): moving it would free nothing; left as it is")
    if not inside(src, root):
        raise _Refused(f"its real path {os.path.realpath(src)} is outside the library {root}; "
                       "simviewer acts on nothing there")
    if reference and in_folders(src, reference):
        raise _Refused("it is in a protected reference folder")
    try:
        st = os.stat(src)
    except OSError as exc:
        raise _Refused(f"cannot read it: {exc.strerror or exc}") from exc
    if st.st_size != it.size or st.st_mtime_ns != it.mtime_ns:
        raise _Refused("changed since it was indexed; re-index and look again")
    try:
        kst = os.stat(keeper.path)
    except OSError as exc:
        raise _Refused(f"its keeper {keeper.path} is gone ({exc.strerror or exc}); left where it is") from exc
    if (kst.st_dev, kst.st_ino) == (st.st_dev, st.st_ino):
        raise _Refused(f"the same file as its keeper {keeper.path} under another name (a link): "
                       "moving it would free nothing")
    if hardlink:
        _refuse_unlinkable(it, keeper, st, kst)
    if not keepers.unchanged(keeper, kst):
        raise _Refused(f"its keeper {keeper.path} changed since the duplicates were found (it no longer holds "
                       "the photo compared); left where it is")
    if file_digest(src) != it.hash:
        raise _Refused("its content changed since it was indexed")


def _refuse_unlinkable(it: Item, keeper: Item, st: os.stat_result, kst: os.stat_result) -> None:
    if it.hash != keeper.hash:
        raise _Refused("not byte-identical to its keeper: a hard link would change the photo this path "
                       "shows; move it instead")
    if st.st_dev != kst.st_dev:
        raise _Refused(f"on another file system than its keeper {keeper.path}: a hard link is not possible")
    probe = it.path.parent / f"{PARTIAL}link-{os.getpid()}"
    try:
        os.link(keeper.path, probe)
    except OSError as exc:
        raise _Refused(f"a hard link to its keeper is not possible here ({exc.strerror or exc}); "
                       "left as it is") from exc
    os.unlink(probe)


def _act(journal: Journal, n: int, pm: PlannedMove, mode: str, move_to: Path | None, hardlink: bool) -> str:
    """Journal the intent, move the file (and link it), journal that it is done; where it went."""
    it = pm.item
    src = it.path
    dst = tmp = None
    if mode == "move":
        assert move_to is not None
        dst = move_to / it.key
        if os.path.lexists(dst):
            raise _Refused(f"could not move it: {dst} already exists")
        tmp = dst.parent / f"{PARTIAL}{journal.id}-{n}"
    journal.intend(n, "hardlink" if hardlink else "move", src, dst, tmp, it.hash, pm.group_keeper.path,
                   pm.group_keeper.hash)
    if mode == "move":
        assert dst is not None and tmp is not None
        dst.parent.mkdir(parents=True, exist_ok=True)
        transfer(src, dst, tmp, it.hash, it.size)
    else:
        dst = _trash(src)
    if hardlink:
        try:
            os.link(pm.group_keeper.path, src)
        except OSError as exc:
            if dst is None:
                raise _Stop(f"{src} went to the system trash but no hard link could be made in its place "
                            f"({exc.strerror or exc}); restore it from the trash") from exc
            transfer(dst, src, src.parent / f"{PARTIAL}{journal.id}-{n}", it.hash, it.size)
            raise _Refused(f"a hard link to its keeper is not possible here ({exc.strerror or exc}); "
                           "left as it was") from exc
    journal.done(n, dst)
    return str(dst) if dst else "the system trash"


def transfer(src: Path, dst: Path, tmp: Path, digest: str, size: int) -> None:
    """Move *src* to *dst* (which must not exist). Across file systems: copy to *tmp* beside
    *dst*, make it durable, check its size and hash, rename it to *dst*, then remove *src*. A
    failed copy is removed and raises :class:`_Stop`; *src* is then untouched."""
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    try:
        _copy_verified(src, tmp, digest, size)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _Stop(f"could not copy {src} to {dst}: {exc.strerror or exc}; the partial copy was removed "
                    f"and {src.name} is where it was") from exc
    os.rename(tmp, dst)
    _sync_folder(dst.parent)
    try:
        os.unlink(src)
    except OSError:
        os.unlink(dst)  # the original stays: so does nothing else
        raise


def _copy_verified(src: Path, tmp: Path, digest: str, size: int) -> None:
    with open(src, "rb") as fi, open(tmp, "xb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
        fo.flush()
        os.fsync(fo.fileno())
    with contextlib.suppress(OSError):  # times and mode; some file systems keep neither
        shutil.copystat(src, tmp)
    if os.stat(tmp).st_size != size or file_digest(tmp) != digest:
        raise OSError(errno.EIO, "the copy differs from the original (size or content hash)")


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _trash(src: Path) -> Path | None:
    """Send *src* to the system trash; returns where it went when that can be known (Linux)."""
    from send2trash import send2trash

    before = time.time()
    send2trash(str(src))
    return locate_in_trash(src, since=before - 2)


def trash_dirs(src: Path) -> list[tuple[Path, Path]]:
    """Freedesktop trash folders that may hold *src*, each with the folder its info paths are
    relative to: the home trash, then the trash of the volume *src* was on."""
    if not sys.platform.startswith("linux"):
        return []
    found: list[tuple[Path, Path]] = []
    with contextlib.suppress(ImportError, AttributeError):
        from send2trash import plat_other

        found.append((Path(os.fsdecode(plat_other.HOMETRASH_B)), Path(os.fsdecode(plat_other.XDG_DATA_HOME))))
    data = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    if (data / "Trash", data) not in found:
        found.append((data / "Trash", data))
    mount = src.parent
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    found += [(mount / ".Trash" / str(os.getuid()), mount), (mount / f".Trash-{os.getuid()}", mount)]
    return found


def locate_in_trash(src: Path, since: float = 0.0) -> Path | None:
    """Find the trashed copy of *src* through its .trashinfo file (the newest if several)."""
    best: tuple[float, Path] | None = None
    for trash, topdir in trash_dirs(src):
        info_dir = trash / "info"
        if not info_dir.is_dir():
            continue
        for info in info_dir.glob("*.trashinfo"):
            try:
                mtime = info.stat().st_mtime
                if mtime < since:
                    continue
                text = info.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if not line.startswith("Path="):
                    continue
                p = Path(unquote(line[5:]))
                if (p if p.is_absolute() else topdir / p) == src:
                    f = trash / "files" / info.name[: -len(".trashinfo")]
                    if f.exists() and (best is None or mtime > best[0]):
                        best = (mtime, f)
    return best[1] if best else None


def in_trash(path: Path, src: Path) -> bool:
    """Whether *path* is an entry of one of the trash folders *src* may have gone to."""
    real = Path(os.path.realpath(path))
    return any(real.parent == Path(os.path.realpath(trash / "files")) for trash, _ in trash_dirs(src))


class _Problem(Exception):
    """This entry is not (fully) put back; the message says why."""


def undo(journal_path: Path, root: Path | None = None) -> Iterator[ActionProgress | ActionResult]:
    """Put back every file a journal moved. *root*: the library the caller expects the journal to
    belong to (a journal of another library is refused)."""
    journal = Journal(Path(journal_path))
    header, moves, problems = journal.read()
    if header is not None and root is not None and \
            os.path.realpath(Path(root).expanduser()) != os.path.realpath(header["root"]):
        problems.append((str(journal.path), f"refused: this journal belongs to another library ({header['root']})"))
        moves = []
    pending = [m for m in moves if not m["undone"]]
    restored, total = [], 0
    for k, e in enumerate(pending):
        try:
            back = _undo_one(header, e)
        except _Problem as exc:
            problems.append((e["src"], str(exc)))
        except (OSError, _Stop) as exc:
            problems.append((e["src"], f"could not put it back: {getattr(exc, 'strerror', None) or exc}"))
        else:
            journal.undone(e["n"])
            if back is not None:
                restored.append((str(back), e["src"]))
                total += os.stat(e["src"]).st_size
        yield ActionProgress(k + 1, len(pending), e["src"])
    yield ActionResult(journal.path, restored, problems, total)


def _where_it_went(header: dict, e: dict) -> tuple[Path | None, Path | None]:
    """The place this entry's file was sent to and its unfinished copy's name, both checked to be
    places simviewer sends files to; raises :class:`_Problem` otherwise."""
    src, root = Path(e["src"]), Path(header["root"])
    if not inside(src, root):
        raise _Problem(f"refused: {src} is not inside the library {root}")
    if header["mode"] == "move":
        move_to = Path(header["move_to"])
        dst = Path(e["dst"])
        expected = move_to / src.relative_to(root) if src.is_relative_to(root) else None
        tmp = Path(e["tmp"]) if e.get("tmp") else None
        if dst != expected or not inside(dst, move_to) or \
                (tmp is not None and (tmp.parent != dst.parent or not tmp.name.startswith(PARTIAL))):
            raise _Problem(f"refused: {dst} is not where simviewer moved this file")
        return dst, tmp
    dst = Path(e["dst"]) if e.get("dst") else locate_in_trash(src, since=float(e.get("t", 0)) - 2)
    if dst is not None and not in_trash(dst, src):
        raise _Problem(f"refused: {dst} is not in a trash folder")
    return dst, None


def _undo_one(header: dict, e: dict) -> Path | None:
    """Put one entry back; returns where it came back from, or None when nothing had moved."""
    src = Path(e["src"])
    dst, tmp = _where_it_went(header, e)
    back_tmp = src.parent / f"{PARTIAL}undo-{header['id'][:12]}-{e['n']}"
    for partial in (tmp, back_tmp):  # copies cut short: their originals were never removed
        if partial is not None and os.path.lexists(partial):
            os.unlink(partial)
    src_there = os.path.lexists(src)
    dst_there = dst is not None and os.path.lexists(dst)
    if not dst_there:
        if src_there and not _is_link_to_keeper(e) and _digest(src) == e["hash"]:
            return None  # never moved, or already back
        where = "the system trash" if dst is None else dst
        raise _Problem(f"not found where it was moved ({where}); nothing was put back")
    assert dst is not None
    if file_digest(dst) != e["hash"]:
        raise _Problem(f"refused: {dst} is not the file that was moved (its content differs); left as it is")
    if src_there:
        if e["op"] == "hardlink" and _is_link_to_keeper(e):
            os.unlink(src)  # the keeper holds these bytes: the link goes, the duplicate's own file comes back
        elif _digest(src) == e["hash"]:
            os.unlink(dst)  # the library holds these very bytes (a copy whose original was never removed)
            _drop_trash_info(header, dst)
            return None
        else:
            raise _Problem(f"another file is at {src} now; left it and {dst} as they are")
    src.parent.mkdir(parents=True, exist_ok=True)
    transfer(dst, src, back_tmp, e["hash"], os.stat(dst).st_size)
    _drop_trash_info(header, dst)
    return dst


def _drop_trash_info(header: dict, dst: Path) -> None:
    info = dst.parent.parent / "info" / (dst.name + ".trashinfo")
    if header["mode"] == "trash" and info.is_file():
        with contextlib.suppress(OSError):
            info.unlink()


def _digest(path: Path) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


def _is_link_to_keeper(e: dict) -> bool:
    """Whether the library path now holds a hard link to the keeper, which still exists."""
    src, keeper = Path(e["src"]), Path(e.get("keeper") or "")
    try:
        return e["op"] == "hardlink" and not os.path.islink(src) and os.path.samefile(src, keeper)
    except OSError:
        return False


def latest_journal(journal_dir: Path) -> Path | None:
    journals = sorted(journal_dir.glob("*.jsonl")) if journal_dir.is_dir() else []
    return journals[-1] if journals else None


def journalled_hashes(journal_dir: Path) -> set[str]:
    """Content hashes of the files moved by every clean-up journalled in *journal_dir*: what an
    undo may bring back. A journal that cannot be read is passed over."""
    hashes: set[str] = set()
    for path in sorted(journal_dir.glob("*.jsonl")) if journal_dir.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):  # unreadable, or not text
            hashes |= Journal(path).hashes()
    return hashes
