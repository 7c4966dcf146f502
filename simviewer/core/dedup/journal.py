"""The clean-up journal: one JSON line per intent, per finished move and per undo, each signed with
a key only this user can read, so that undo acts on nothing simviewer did not do itself.

Each line carries ``mac``: HMAC-SHA256 (key: ``journal.key`` in simviewer's per-user data folder,
32 random bytes, mode 0600) of the journal's random id and the line's other fields. A journal
written by anyone else, an edited line, or a line moved from another journal fails the check.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from pathlib import Path

from ..paths import data_root
from .types import DedupError

KEY_NAME = "journal.key"
VERSION = 2
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def journal_key() -> bytes:
    """This user's journal key, made on first use (32 random bytes, readable by the user only)."""
    folder = data_root()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEY_NAME
    if not os.path.lexists(path):
        tmp = folder / f".{KEY_NAME}.{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # never replaces a key another simviewer made meanwhile
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links
                if not os.path.lexists(path):
                    os.rename(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError as exc:
        raise DedupError(f"cannot read the journal key {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        foreign = hasattr(os, "getuid") and st.st_uid != os.getuid()
        if not stat.S_ISREG(st.st_mode) or foreign or stat.S_IMODE(st.st_mode) & 0o077:
            raise DedupError(f"the journal key {path} must be a plain file of yours that only you can read "
                             "(mode 0600); nothing was moved. Remove it to get a new key (older journals "
                             "can then no longer be undone)")
        key = fh.read(4096)
    if len(key) < 32:
        raise DedupError(f"the journal key {path} is damaged; remove it to get a new one")
    return key


class Journal:
    """An append-only JSON-lines record: the header, then for each file the intent (written and
    flushed to disk before the file is touched), "done" once it is moved, "undone" once back."""

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.path = path
        self._key = key
        self.id: str | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = journal_key()
        return self._key

    @classmethod
    def create(cls, folder: Path, mode: str, root: Path, move_to: Path | None = None,
               hardlink: bool = False) -> Journal:
        key = journal_key()
        folder.mkdir(parents=True, exist_ok=True)
        while True:  # a new file each time, named so that the newest sorts last
            now = time.time()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now % 1 * 1e6):06d}"
            path = folder / f"{stamp}-{os.getpid()}-{mode}.jsonl"
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600))
                break
            except FileExistsError:
                continue
        j = cls(path, key)
        j.id = secrets.token_hex(16)
        j._append({"journal": VERSION, "id": j.id, "mode": mode, "root": str(root),
                   "move_to": str(move_to) if move_to else None, "hardlink": hardlink, "created": time.time()})
        return j

    def _mac(self, record: dict, journal_id: str) -> str:
        text = journal_id + "\n" + json.dumps(record, sort_keys=True)
        return hmac.new(self.key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def _append(self, record: dict) -> None:
        assert self.id is not None
        line = json.dumps({**record, "mac": self._mac(record, self.id)}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "surrogatepass"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def intend(self, n: int, op: str, src: Path, dst: Path | None, tmp: Path | None, hash_: str,
               keeper: Path, keeper_hash: str) -> None:
        self._append({"n": n, "op": op, "src": str(src), "dst": str(dst) if dst else None,
                      "tmp": str(tmp) if tmp else None, "hash": hash_, "keeper": str(keeper),
                      "keeper_hash": keeper_hash, "t": time.time()})

    def done(self, n: int, dst: Path | None) -> None:
        self._append({"n": n, "done": True, "dst": str(dst) if dst else None})

    def undone(self, n: int) -> None:
        self._append({"n": n, "undone": True})

    def read(self) -> tuple[dict | None, list[dict], list[tuple[str, str]]]:
        """(header, moves, refusals): the header and the moves whose every line carries this user's
        checksum; each refused line or journal is named with its reason. A last line cut short
        (the process ended while writing it) is passed over: its file was not touched yet."""
        refusals: list[tuple[str, str]] = []
        try:
            fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                lines = fh.read().decode("utf-8", "surrogatepass").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            return None, [], [(str(self.path), f"refused: cannot read this journal ({exc})")]
        header, moves = None, {}
        for lineno, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError:
                if lineno < len(lines):
                    refusals.append((f"{self.path}:{lineno}", "refused: not a journal line"))
                continue
            mac = rec.pop("mac", None)
            if header is None:
                if rec.get("journal") != VERSION or not isinstance(rec.get("id"), str) or \
                        not isinstance(mac, str) or not hmac.compare_digest(mac, self._mac(rec, rec["id"])):
                    return None, [], [(str(self.path), "refused: this journal was not written by simviewer for "
                                       "this user (no valid checksum); nothing in it was touched")]
                header, self.id = rec, rec["id"]
                continue
            if not isinstance(mac, str) or not hmac.compare_digest(mac, self._mac(rec, header["id"])):
                refusals.append((str(rec.get("src") or f"{self.path}:{lineno}"),
                                 "refused: this journal line was changed or not written by simviewer; left as it is"))
                continue
            _merge(moves, rec)
        return header, [moves[n] for n in sorted(moves)], refusals

    def entries(self) -> list[dict]:
        """The signed moves, each with ``done`` (its move finished) and ``undone`` flags."""
        return self.read()[1]

    def hashes(self) -> set[str]:
        """Content hashes of every file this journal moved or set out to move. A line cut short
        (the process ended while writing it) is passed over: the lines before it still count."""
        found: set[str] = set()
        for line in self.path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and "hash" in rec:
                    found.add(rec["hash"])
        return found


def _merge(moves: dict[int, dict], rec: dict) -> None:
    n = rec.get("n")
    if not isinstance(n, int):
        return
    if "op" in rec:
        moves[n] = {**rec, "done": False, "undone": False}
    elif n in moves and rec.get("done"):
        moves[n].update(done=True, dst=rec.get("dst"))
    elif n in moves and rec.get("undone"):
        moves[n]["undone"] = True
