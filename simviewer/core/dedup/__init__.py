"""Near-duplicate groups, keeper rules, and file actions that can always be undone.

Grouping rule (no chaining): candidate pairs are the Annoy neighbours with cosine >= threshold
(inside the optional [min, max] range, minus pairs marked "not duplicates"). Within each connected
set of candidates, the photo the keeper rules prefer becomes a keeper and takes every photo that
is itself within the threshold of it; the rest of the set is grouped again the same way. So every
member of a group is within the threshold of its keeper: A~B and B~C never put A and C together
unless A~C too (or one of them is the keeper both are close to).

Two levels inside a group: *sure* duplicates (byte-identical to the keeper, or at least as alike
as the calibration's sure level, ``Calibration.sure_level``) and *similar* members, above the
threshold but below that level, which may be another photo of the same subject: those are shown
to be checked and are never planned for removal unless asked for (:func:`plan_removals`).

Neighbours are computed once per index (down to a floor below any threshold the user will try),
so moving the threshold only re-filters and regroups cached pairs.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from ..catalog import Catalog
from ..images import file_digest
from ..index import AnnIndex
from ..system import usable_cores

log = logging.getLogger(__name__)

# How a pair matched: as is, or through a mirrored/rotated copy (see core.images.VARIANTS).
VIA = ("", "mirror", "rot90", "rot180")
DEFAULT_RULES = ("resolution", "size", "oldest", "shortest-path")
RULE_HELP = {
    "resolution": "the most pixels",
    "size": "the largest file",
    "oldest": "the oldest (EXIF date, else file time)",
    "newest": "the newest (EXIF date, else file time)",
    "shortest-path": "the shortest path",
    "folder:DIR": "inside DIR (a preferred folder)",
}


def starting_threshold(calibration, explicit: float | None = None) -> float:
    """The threshold a search starts from: the user's, else the library's calibrated one
    (core.calibration). There is no constant to fall back on: a library without a calibration for
    its model gets one when it is next brought up to date."""
    if explicit is not None:
        return explicit
    if calibration is None:
        raise DedupError("this library has no calibrated duplicate threshold for its model yet; index it again, "
                         "or give a threshold")
    return calibration.threshold


def threshold_floor(threshold: float) -> float:
    """How far down to cache neighbours, so a threshold slider can move without new Annoy
    queries: four times the threshold's distance from 1 (0.95 -> 0.80, 0.997 -> 0.988)."""
    return max(0.0, 1.0 - 4.0 * (1.0 - threshold))


class DedupError(Exception):
    """A refused or failed action; the message says why and what is safe."""


@dataclass(frozen=True)
class Item:
    key: str  # library-relative path
    path: Path
    hash: str
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    taken_at: float | None

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


@dataclass(frozen=True)
class Member:
    item: Item
    score: float  # cosine to the keeper (1.0 for the keeper itself)
    exact: bool  # byte-identical to the keeper
    via: str = ""  # "" or the variant (mirror, rot90, rot180) through which it matched the keeper


@dataclass(frozen=True)
class Group:
    members: tuple[Member, ...]  # the keeper first, then by score

    @property
    def keeper(self) -> Item:
        return self.members[0].item

    @property
    def reclaimable(self) -> int:
        """Bytes freed by removing every member but the keeper."""
        return sum(m.item.size for m in self.members[1:])

    @property
    def exact(self) -> bool:
        return all(m.exact for m in self.members[1:])

    def sure(self, sure_level: float | None) -> list[Member]:
        """The members but the keeper that are sure duplicates of it (see :func:`is_sure`)."""
        return [m for m in self.members[1:] if is_sure(m, sure_level)]

    def to_check(self, sure_level: float | None) -> list[Member]:
        """The members but the keeper that are only similar: to be checked by eye."""
        return [m for m in self.members[1:] if not is_sure(m, sure_level)]


def is_sure(member: Member, sure_level: float | None) -> bool:
    """Whether *member* is a sure duplicate of its keeper: byte-identical to it, or scoring at
    least *sure_level* (``Calibration.sure_level``). Without a sure level only exact copies are.
    The rest of a group is above the threshold but may be a different photo of the same subject."""
    return member.exact or (sure_level is not None and member.score >= sure_level)


# -- neighbours ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeighbourProgress:
    done: int
    total: int


@dataclass
class Neighbours:
    """Candidate pairs (i < j) with their cosine, for every pair at or above ``floor``."""

    items: list[Item]
    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    floor: float
    via: np.ndarray | None = None  # per pair: index into VIA ("" = as is, else the variant matched)

    def __post_init__(self) -> None:
        if self.via is None:
            self.via = np.zeros(len(self.i), np.int8)

    @classmethod
    def compute(cls, index: AnnIndex, items: list[Item], floor: float = 0.80, k: int = 16,
                should_stop: Callable[[], bool] | None = None,
                variants: dict[str, dict[str, np.ndarray]] | None = None,
                threads: int | None = None) -> Neighbours:
        """Ask Annoy for each item's neighbours, widening k while they are all above the floor.

        *variants* (kind -> content hash -> vector, from ``Library.variant_vectors``) adds the
        neighbours of each photo's mirrored and rotated copies: flip/rotation-invariant matching.
        Annoy releases the GIL while it searches, so *threads* (default: every core) search at
        once: 1.9x on two cores. The result does not depend on how many.
        """
        *_, result = cls.search(index, items, floor, k, should_stop, variants, threads)
        return result

    @classmethod
    def search(cls, index: AnnIndex, items: list[Item], floor: float = 0.80, k: int = 16,
               should_stop: Callable[[], bool] | None = None,
               variants: dict[str, dict[str, np.ndarray]] | None = None,
               threads: int | None = None) -> Iterator[NeighbourProgress | Neighbours]:
        """:meth:`compute`, yielding how many photos are done as it goes; ends with the Neighbours."""
        pos = {it.key: n for n, it in enumerate(items)}
        # Annoy item ids are positions in the index's key list: one read instead of one per key.
        key_of_item = dict(enumerate(index.all_keys()))
        item_of_key = {key: item for item, key in key_of_item.items()}
        abandoned = False  # the caller closed this generator: the threads stop too
        stopped = (lambda: abandoned or should_stop()) if should_stop else (lambda: abandoned)

        def widen(search: Callable[[int], tuple[list, list[float]]]) -> tuple[list, list[float]]:
            kk = k
            while True:
                found, cosines = search(kk)
                if len(found) < kk or not cosines or cosines[-1] < floor or kk >= 1024:
                    return found, cosines
                kk *= 4

        def pairs_of(chunk: list[tuple[str, int]]) -> list[tuple[int, int, float, int]]:
            out: list[tuple[int, int, float, int]] = []

            def add(n: int, m: int | None, score: float, via: int) -> None:
                if m is not None and m != n and score >= floor:
                    out.append((min(n, m), max(n, m), score, via))

            for key, n in chunk:
                if stopped():
                    break
                a = item_of_key.get(key)
                if a is None:
                    continue
                nbrs, cosines = widen(lambda kk, a=a: index.item_neighbours(a, kk))
                for b, sc in zip(nbrs, cosines):
                    other = key_of_item.get(b)
                    add(n, pos.get(other) if other is not None else None, sc, 0)
                for kind, by_hash in (variants or {}).items():
                    vec = by_hash.get(items[n].hash)
                    if vec is None:
                        continue

                    def by_vector(kk: int, vec=vec) -> tuple[list, list[float]]:
                        found = index.query_vector(vec, kk)
                        return [f[0] for f in found], [f[1] for f in found]

                    found, cosines = widen(by_vector)
                    for other, sc in zip(found, cosines):
                        add(n, pos.get(other), sc, VIA.index(kind))
            return out

        todo = list(pos.items())
        chunks = [todo[c : c + 256] for c in range(0, len(todo), 256)]
        workers = max(1, min(threads or usable_cores(), len(chunks)))
        found_pairs: list[list[tuple[int, int, float, int]]] = []
        yield NeighbourProgress(0, len(todo))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="simviewer-neighbours")
        try:
            futures = [pool.submit(pairs_of, c) for c in chunks]
            done = 0
            for chunk, fut in zip(chunks, futures):  # in chunk order: the same result every time
                found_pairs.append(fut.result())
                done += len(chunk)
                yield NeighbourProgress(done, len(todo))
        finally:
            abandoned = True
            pool.shutdown(wait=True, cancel_futures=True)
        ii, jj, ss, vv = [], [], [], []
        for part in found_pairs:
            for a, b, sc, v in part:
                ii.append(a)
                jj.append(b)
                ss.append(sc)
                vv.append(v)
        # Byte-identical files share one vector: make their pairs exact 1.0 whatever Annoy said.
        by_hash: dict[str, list[int]] = {}
        for n, it in enumerate(items):
            by_hash.setdefault(it.hash, []).append(n)
        for same in by_hash.values():
            for x in range(len(same)):
                for y in range(x + 1, len(same)):
                    ii.append(same[x])
                    jj.append(same[y])
                    ss.append(1.0)
                    vv.append(0)
        i, j, s = np.array(ii, np.int64), np.array(jj, np.int64), np.array(ss, np.float64)
        via = np.array(vv, np.int8)
        # A pair can come from both ends (and from several variants): keep its highest score once.
        if len(i):
            direct = {(a, b): sc for a, b, sc, v in zip(ii, jj, ss, vv) if v == 0}
            order = np.lexsort((-s, j, i))
            i, j, s, via = i[order], j[order], s[order], via[order]
            first = np.ones(len(i), bool)
            first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
            i, j, s, via = i[first], j[first], s[first], via[first]
            # Say "mirrored"/"rotated" only where the variant clearly explains the match: closing
            # at least a quarter of the direct pair's distance to 1, not a hair's breadth of noise.
            for n in np.flatnonzero(via):
                d = direct.get((int(i[n]), int(j[n])))
                if d is not None and s[n] - d < 0.25 * (1.0 - d):
                    via[n] = 0
        yield cls(items, i, j, np.minimum(s, 1.0), floor, via)


def load_items(catalog: Catalog, index: AnnIndex, root: Path) -> list[Item]:
    """The indexed files with the facts the keeper rules need."""
    files = catalog.files()
    items = []
    for key in index.all_keys():
        r = files.get(key)
        if r is not None and r.status == "ok" and r.hash:
            items.append(Item(key, root / key, r.hash, r.size, r.mtime_ns, r.width, r.height, r.taken_at))
    return items


# -- keeper rules -------------------------------------------------------------------------------
def rule_key(rules: Sequence[str], reference: Sequence[Path] = ()) -> Callable[[Item], tuple]:
    """Sort key: the smallest key is the keeper. Reference folders win first; ties fall to the
    next rule, and finally to the path, so the choice is always the same."""
    parts: list[Callable[[Item], object]] = [lambda it: 0 if in_folders(it.path, reference) else 1]
    for rule in rules:
        if rule == "resolution":
            parts.append(lambda it: -it.pixels)
        elif rule == "size":
            parts.append(lambda it: -it.size)
        elif rule == "oldest":
            parts.append(lambda it: it.taken_at if it.taken_at is not None else it.mtime_ns / 1e9)
        elif rule == "newest":
            parts.append(lambda it: -(it.taken_at if it.taken_at is not None else it.mtime_ns / 1e9))
        elif rule == "shortest-path":
            parts.append(lambda it: len(str(it.path)))
        elif rule.startswith("folder:"):
            folder = [Path(rule.split(":", 1)[1]).expanduser().resolve()]
            parts.append(lambda it, f=folder: 0 if in_folders(it.path, f) else 1)
        else:
            raise DedupError(f"unknown keeper rule {rule!r}; rules: {', '.join(RULE_HELP)}")
    return lambda it: (*(p(it) for p in parts), str(it.path))


def in_folders(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


# -- grouping -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupingOptions:
    threshold: float
    min_score: float | None = None  # digiKam-style range: keep pairs with min <= cosine <= max
    max_score: float | None = None  # e.g. 0.999 to leave exact copies out
    rules: tuple[str, ...] = DEFAULT_RULES
    reference: tuple[Path, ...] = ()
    ignored: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # sorted hash pairs


def group(nb: Neighbours, opts: GroupingOptions) -> list[Group]:
    """Groups of near-duplicates, largest reclaimable space first. Cheap: no index access."""
    if opts.threshold < nb.floor - 1e-9:
        raise DedupError(f"threshold {opts.threshold} is below the neighbour floor {nb.floor}; recompute")
    items = nb.items
    keep = nb.score >= opts.threshold
    if opts.min_score is not None:
        keep &= nb.score >= opts.min_score
    if opts.max_score is not None:
        keep &= nb.score <= opts.max_score
    i, j, s, v = nb.i[keep], nb.j[keep], nb.score[keep], nb.via[keep]
    adj: dict[int, dict[int, float]] = {}
    via: dict[tuple[int, int], int] = {}
    for a, b, sc, how in zip(i.tolist(), j.tolist(), s.tolist(), v.tolist()):
        ha, hb = items[a].hash, items[b].hash
        if ha != hb and (min(ha, hb), max(ha, hb)) in opts.ignored:
            continue
        adj.setdefault(a, {})[b] = sc
        adj.setdefault(b, {})[a] = sc
        if how:
            via[a, b] = how

    # Connected sets of candidates (iterative DFS).
    seen: set[int] = set()
    components = []
    for start in adj:
        if start in seen:
            continue
        stack, comp = [start], []
        seen.add(start)
        while stack:
            x = stack.pop()
            comp.append(x)
            for y in adj[x]:
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        components.append(comp)

    key = rule_key(opts.rules, opts.reference)
    groups = []
    for comp in components:
        remaining = sorted(comp, key=lambda n: key(items[n]))
        while len(remaining) > 1:
            keeper = remaining[0]
            taken = [n for n in remaining[1:] if n in adj[keeper]]
            remaining = [n for n in remaining[1:] if n not in adj[keeper]]
            if not taken:
                continue
            members = [Member(items[keeper], 1.0, True)] + sorted(
                (Member(items[n], adj[keeper][n], items[n].hash == items[keeper].hash,
                        VIA[via.get((min(n, keeper), max(n, keeper)), 0)]) for n in taken),
                key=lambda m: (-m.score, str(m.item.path)),
            )
            groups.append(Group(tuple(members)))
    groups.sort(key=lambda g: (-g.reclaimable, str(g.keeper.path)))
    return groups


# -- reports ------------------------------------------------------------------------------------
def report_dict(groups: Sequence[Group], threshold: float, sure_level: float | None = None) -> dict:
    """The contract's JSON: items list the whole group, keeper included; paths absolute. Each item
    says whether it is a sure duplicate of the keeper (:func:`is_sure`; the keeper: true)."""
    return {
        "threshold": threshold,
        "groups": [
            {"keep": str(g.keeper.path),
             "items": [{"path": str(m.item.path), "score": round(m.score, 6), "sure": is_sure(m, sure_level)}
                       for m in g.members]}
            for g in groups
        ],
    }


def write_json(groups: Sequence[Group], threshold: float, path: str | os.PathLike,
               sure_level: float | None = None) -> None:
    _atomic_write(Path(path), json.dumps(report_dict(groups, threshold, sure_level), indent=2))


def write_csv(groups: Sequence[Group], path: str | os.PathLike, sure_level: float | None = None) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["group", "path", "keep", "score", "exact", "bytes", "width", "height", "matched_as", "sure"])
    for n, g in enumerate(groups, 1):
        for m in g.members:
            it = m.item
            w.writerow([n, str(it.path), int(m.item is g.keeper), f"{m.score:.6f}", int(m.exact), it.size,
                        it.width or "", it.height or "", m.via or "as is", int(is_sure(m, sure_level))])
    _atomic_write(Path(path), buf.getvalue())


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- actions ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedMove:
    item: Item
    group_keeper: Item


def plan_removals(groups: Sequence[Group], selected: dict[str, set[str]] | None = None,
                  reference: Sequence[Path] = (), *, sure_level: float | None = None,
                  include_similar: bool = False) -> list[PlannedMove]:
    """What would be moved: by default the sure duplicates of each keeper (:func:`is_sure`: exact
    copies, and members scoring at least *sure_level*; without one, exact copies only), or every
    member but the keeper with *include_similar*; never one in a reference folder.

    *selected* maps a keeper's key to the member keys the user chose instead (sure or not).
    Refused: removing a whole group, and a chosen file inside a reference folder.
    """
    plan = []
    for g in groups:
        if selected is None:
            keys = {m.item.key for m in g.members[1:] if not in_folders(m.item.path, reference)
                    and (include_similar or is_sure(m, sure_level))}
        else:
            keys = selected.get(g.keeper.key, set())
        chosen = [m.item for m in g.members if m.item.key in keys]
        if len(chosen) >= len(g.members):
            raise DedupError(f"refused: that would remove every copy of {g.keeper.path.name}; keep at least one")
        for it in chosen:
            if in_folders(it.path, reference):
                raise DedupError(f"refused: {it.path} is in a protected reference folder")
            plan.append(PlannedMove(it, g.keeper))
    return plan


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
