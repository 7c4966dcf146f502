"""File actions that can always be undone: an append-only journal written before each move,
moves to the system trash or to a folder, and undo."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..images import file_digest
from .rules import in_folders
from .types import DedupError, PlannedMove


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


class Journal:
    """An append-only JSON-lines record of moves, written (and flushed to disk) before each move."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, folder: Path, mode: str, root: Path) -> Journal:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}-{mode}.jsonl")
        j = cls(path)
        j._append({"journal": 1, "mode": mode, "root": str(root), "created": time.time()})
        return j

    def _append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def intend(self, n: int, src: Path, dst: Path | None, hash_: str) -> None:
        self._append({"n": n, "op": "move", "src": str(src), "dst": str(dst) if dst else None, "hash": hash_})

    def done(self, n: int, dst: Path | None) -> None:
        self._append({"n": n, "done": True, "dst": str(dst) if dst else None})

    def entries(self) -> list[dict]:
        """Moves with their final destination; ones that never completed are marked so."""
        moves: dict[int, dict] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if "op" in rec:
                moves[rec["n"]] = {**rec, "done": False}
            elif rec.get("done"):
                moves[rec["n"]].update(done=True, dst=rec["dst"])
            elif rec.get("undone"):
                moves[rec["n"]]["undone"] = True
        return [moves[n] for n in sorted(moves)]

    def undone(self, n: int) -> None:
        self._append({"n": n, "undone": True})

    def hashes(self) -> set[str]:
        """Content hashes of every file this journal moved or set out to move. A line cut short
        (the process ended while writing it) is passed over: the lines before it still count."""
        found: set[str] = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and "hash" in rec:
                    found.add(rec["hash"])
        return found


def execute(plan: Sequence[PlannedMove], mode: str, journal_dir: Path, root: Path,
            move_to: Path | None = None, should_stop: Callable[[], bool] | None = None
            ) -> Iterator[ActionProgress | ActionResult]:
    """Move the planned files to the system trash (mode "trash") or under *move_to* keeping their
    paths relative to *root* (mode "move"). Files changed since indexing are left alone."""
    if mode not in ("trash", "move"):
        raise DedupError(f"unknown action {mode!r}")
    if mode == "move":
        if move_to is None:
            raise DedupError("moving needs a destination folder")
        move_to = move_to.expanduser().resolve()
        if in_folders(move_to, [root]):
            raise DedupError(f"the destination {move_to} is inside the library; choose a folder outside it")
    journal = Journal.create(journal_dir, mode, root)
    moved, skipped, total_bytes = [], [], 0
    for n, pm in enumerate(plan):
        if should_stop is not None and should_stop():
            break
        it = pm.item
        src = it.path
        try:
            st = src.stat()
        except OSError as exc:
            skipped.append((str(src), f"cannot read it: {exc.strerror or exc}"))
            continue
        if st.st_size != it.size or st.st_mtime_ns != it.mtime_ns:
            skipped.append((str(src), "changed since it was indexed; re-index and look again"))
            continue
        if not pm.group_keeper.path.exists():
            skipped.append((str(src), f"its keeper {pm.group_keeper.path} is gone; nothing removed"))
            continue
        digest = file_digest(src)
        if digest != it.hash:
            skipped.append((str(src), "its content changed since it was indexed"))
            continue
        dst = move_to / it.key if mode == "move" else None
        journal.intend(n, src, dst, digest)
        try:
            if mode == "move":
                assert dst is not None
                dst.parent.mkdir(parents=True, exist_ok=True)
                if dst.exists():
                    raise OSError(f"{dst} already exists")
                shutil.move(str(src), str(dst))
            else:
                dst = _trash(src)
        except OSError as exc:
            skipped.append((str(src), f"could not move it: {exc}"))
            continue
        journal.done(n, dst)
        moved.append((str(src), str(dst) if dst else "the system trash"))
        total_bytes += it.size
        yield ActionProgress(len(moved) + len(skipped), len(plan), str(src))
    yield ActionResult(journal.path, moved, skipped, total_bytes)


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


def undo(journal_path: Path) -> Iterator[ActionProgress | ActionResult]:
    """Put back every file a journal moved, checking each restored file's content hash."""
    journal = Journal(journal_path)
    entries = [e for e in journal.entries() if e["done"] and not e.get("undone")]
    restored, problems, total = [], [], 0
    for k, e in enumerate(entries):
        src = Path(e["src"])
        dst = Path(e["dst"]) if e.get("dst") else locate_in_trash(src)
        if dst is None or not dst.exists():
            problems.append((str(src), "not found where it was moved; restore it from the system trash"))
            continue
        if src.exists():
            problems.append((str(src), "a file is back at this path already; left both as they are"))
            continue
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dst), str(src))
        info = dst.parent.parent / "info" / (dst.name + ".trashinfo")
        if dst.parent.name == "files" and info.is_file():
            info.unlink()
        if file_digest(src) != e["hash"]:
            problems.append((str(src), "restored, but its content differs from what was moved"))
        journal.undone(e["n"])
        restored.append((str(dst), str(src)))
        total += src.stat().st_size
        yield ActionProgress(k + 1, len(entries), str(src))
    yield ActionResult(journal.path, restored, problems, total)


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
