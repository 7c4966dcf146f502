"""Neighbour search and keeper-centred groups (see the package docstring for the rule)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..catalog import Catalog
from ..index import AnnIndex
from ..system import usable_cores
from .pairs import shots
from .rules import rule_key
from .types import DEFAULT_RULES, VIA, DedupError, Group, Item, Member, NeighbourProgress

Pair = tuple[int, int, float, int]  # (i, j, cosine, index into VIA), i < j


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


# -- neighbours ---------------------------------------------------------------------------------
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

        *variants* (kind -> content hash -> vector, from :func:`core.dedup.finder.variant_vectors`)
        adds the neighbours of each photo's mirrored and rotated copies: flip/rotation-invariant
        matching. Annoy releases the GIL while it searches, so *threads* (default: every core)
        search at once: 1.9x on two cores. The result does not depend on how many.
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
        abandoned = False  # the caller closed this generator: the threads stop too
        stopped = (lambda: abandoned or should_stop()) if should_stop else (lambda: abandoned)
        search = _ChunkSearch(index, items, pos, floor, k, variants or {}, stopped)
        todo = list(pos.items())
        chunks = [todo[c : c + 256] for c in range(0, len(todo), 256)]
        workers = max(1, min(threads or usable_cores(), len(chunks)))
        found_pairs: list[list[Pair]] = []
        yield NeighbourProgress(0, len(todo))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="simviewer-neighbours")
        try:
            futures = [pool.submit(search.pairs_of, c) for c in chunks]
            done = 0
            for chunk, fut in zip(chunks, futures):  # in chunk order: the same result every time
                found_pairs.append(fut.result())
                done += len(chunk)
                yield NeighbourProgress(done, len(todo))
        finally:
            abandoned = True
            pool.shutdown(wait=True, cancel_futures=True)
        i, j, s, via = _merge_pairs(items, [p for part in found_pairs for p in part])
        yield cls(items, i, j, np.minimum(s, 1.0), floor, via)


def _widen(search: Callable[[int], tuple[list, list[float]]], k: int, floor: float) -> tuple[list, list[float]]:
    """Ask for k neighbours, then 4k, ... while every one found is still above the floor."""
    kk = k
    while True:
        found, cosines = search(kk)
        if len(found) < kk or not cosines or cosines[-1] < floor or kk >= 1024:
            return found, cosines
        kk *= 4


@dataclass
class _ChunkSearch:
    """The Annoy queries of one chunk of photos, run on a worker thread."""

    index: AnnIndex
    items: list[Item]
    pos: dict[str, int]
    floor: float
    k: int
    variants: dict[str, dict[str, np.ndarray]]
    stopped: Callable[[], bool]

    def __post_init__(self) -> None:
        # Annoy item ids are positions in the index's key list: one read instead of one per key.
        self.key_of_item = dict(enumerate(self.index.all_keys()))
        self.item_of_key = {key: item for item, key in self.key_of_item.items()}

    def pairs_of(self, chunk: list[tuple[str, int]]) -> list[Pair]:
        out: list[Pair] = []

        def add(n: int, m: int | None, score: float, via: int) -> None:
            if m is not None and m != n and score >= self.floor:
                out.append((min(n, m), max(n, m), score, via))

        for key, n in chunk:
            if self.stopped():
                break
            a = self.item_of_key.get(key)
            if a is None:
                continue
            nbrs, cosines = _widen(lambda kk, a=a: self.index.item_neighbours(a, kk), self.k, self.floor)
            for b, sc in zip(nbrs, cosines):
                other = self.key_of_item.get(b)
                add(n, self.pos.get(other) if other is not None else None, sc, 0)
            for kind, by_hash in self.variants.items():
                vec = by_hash.get(self.items[n].hash)
                if vec is None:
                    continue

                def by_vector(kk: int, vec=vec) -> tuple[list, list[float]]:
                    found = self.index.query_vector(vec, kk)
                    return [f[0] for f in found], [f[1] for f in found]

                found, cosines = _widen(by_vector, self.k, self.floor)
                for other, sc in zip(found, cosines):
                    add(n, self.pos.get(other), sc, VIA.index(kind))
        return out


def _merge_pairs(items: list[Item], pairs: list[Pair]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pairs found from both ends and through several variants, each once with its best score."""
    ii, jj, ss, vv = ([p[c] for p in pairs] for c in range(4))
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
    return i, j, s, via


def load_items(catalog: Catalog, index: AnnIndex, root: Path) -> list[Item]:
    """The indexed files with the facts the keeper rules need."""
    files = catalog.files()
    items = []
    for key in index.all_keys():
        r = files.get(key)
        if r is not None and r.status == "ok" and r.hash:
            items.append(Item(key, root / key, r.hash, r.size, r.mtime_ns, r.width, r.height, r.taken_at))
    return items


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
    key = rule_key(opts.rules, opts.reference)
    lead, partners = _shot_leads(items, key)  # a RAW+JPEG shot is one item: its lead file stands for it
    adj: dict[int, dict[int, float]] = {}
    via: dict[tuple[int, int], int] = {}
    alias = same_files(items)  # a link and its target are one photo: only one of them is grouped
    for a, b, sc, how in zip(i.tolist(), j.tolist(), s.tolist(), v.tolist()):
        if a in alias or b in alias:
            continue
        ha, hb = items[a].hash, items[b].hash
        if ha != hb and (min(ha, hb), max(ha, hb)) in opts.ignored:
            continue
        a, b = min(lead.get(a, a), lead.get(b, b)), max(lead.get(a, a), lead.get(b, b))
        if a == b or sc <= adj.get(a, {}).get(b, -2.0):  # one shot's own files; or a better pair seen
            continue
        adj.setdefault(a, {})[b] = sc
        adj.setdefault(b, {})[a] = sc
        via[a, b] = how

    # Reference folders first, then a shot before a lone file (the shot holds the RAW), then the rules.
    def order(n: int) -> tuple:
        return key(items[n])[0], 0 if n in partners else 1, key(items[n])

    groups = []
    for comp in _components(adj):
        remaining = sorted(comp, key=order)
        while len(remaining) > 1:
            keeper = remaining[0]
            taken = [n for n in remaining[1:] if n in adj[keeper]]
            remaining = [n for n in remaining[1:] if n not in adj[keeper]]
            if taken:
                groups.append(_group_of(items, keeper, taken, adj, via, partners))
    groups.sort(key=lambda g: (-g.reclaimable, str(g.keeper.path)))
    return groups


def _shot_leads(items: Sequence[Item], key: Callable[[Item], tuple]) -> tuple[dict[int, int], dict[int, list[int]]]:
    """(file -> its shot's lead, lead -> the shot's other files) for every RAW+JPEG shot; the lead
    is the file the keeper rules prefer."""
    by_shot: dict[int, list[int]] = {}
    for n, shot in shots(items).items():
        by_shot.setdefault(shot, []).append(n)
    lead: dict[int, int] = {}
    partners: dict[int, list[int]] = {}
    for files in by_shot.values():
        files.sort(key=lambda n: key(items[n]))
        partners[files[0]] = files[1:]
        lead.update((n, files[0]) for n in files)
    return lead, partners


def _group_of(items: Sequence[Item], keeper: int, taken: list[int], adj: dict[int, dict[int, float]],
              via: dict[tuple[int, int], int], partners: dict[int, list[int]]) -> Group:
    """The group of *keeper* and the photos *taken* by it. A member is exact when it is
    byte-identical to a file of the keeper's shot (or to the keeper); a shot brings its partners."""
    keeper_hashes = {items[n].hash for n in [keeper, *partners.get(keeper, ())]}

    def member(n: int) -> Member:
        files = [n, *partners.get(n, ())]
        return Member(items[n], adj[keeper][n], any(items[f].hash in keeper_hashes for f in files),
                      VIA[via.get((min(n, keeper), max(n, keeper)), 0)], tuple(items[p] for p in files[1:]))

    keep = Member(items[keeper], 1.0, True, partners=tuple(items[p] for p in partners.get(keeper, ())))
    return Group((keep, *sorted((member(n) for n in taken), key=lambda m: (-m.score, str(m.item.path)))))


def same_files(items: Sequence[Item]) -> set[int]:
    """Items that are another item's file under a second name (a symbolic link to it, or a hard
    link): moving one would free nothing, and moving the target would break the link. The name
    kept is the one that is not a symbolic link, then the shortest. Only byte-identical items can
    be one file, so only those are looked at."""
    by_hash: dict[str, list[int]] = {}
    for n, it in enumerate(items):
        by_hash.setdefault(it.hash, []).append(n)
    aliases: set[int] = set()
    for same in by_hash.values():
        if len(same) < 2:
            continue
        seen: set[tuple[int, int]] = set()
        for n in sorted(same, key=lambda n: (os.path.islink(items[n].path), len(str(items[n].path)),
                                             str(items[n].path))):
            try:
                st = os.stat(items[n].path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                aliases.add(n)
            seen.add((st.st_dev, st.st_ino))
    return aliases


def _components(adj: dict[int, dict[int, float]]) -> list[list[int]]:
    """Connected sets of candidates (iterative DFS)."""
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
    return components
