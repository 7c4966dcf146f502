"""RAW+JPEG shots: a camera's RAW file and the JPEG it wrote beside it (same folder, same name but
for the suffix, in any letter case) are one shot, not duplicates. Grouping never puts one of them
against the other (:func:`shots`); the keep rules "raw" and "jpeg" prefer one kind, and
:func:`plan_shot_removals` sends one kind of each shot away when the user asks for it."""

from __future__ import annotations

from collections.abc import Sequence

from ..images import RAW_EXTENSIONS
from .types import DedupError, Group, Item, Member, PlannedMove

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
KINDS = ("raw", "jpeg")


def kind_of(item: Item) -> str | None:
    """"raw", "jpeg", or None for any other file."""
    suffix = item.path.suffix.lower()
    return "raw" if suffix in RAW_EXTENSIONS else "jpeg" if suffix in JPEG_SUFFIXES else None


def shots(items: Sequence[Item]) -> dict[int, int]:
    """Item index -> shot number, for every item of a RAW+JPEG shot (a folder and name with at least
    one RAW and one JPEG file). Items that are no part of such a shot are left out."""
    by_name: dict[tuple[str, str], dict[str, list[int]]] = {}
    for n, it in enumerate(items):
        kind = kind_of(it)
        if kind is not None:
            by_name.setdefault(shot_name(it), {}).setdefault(kind, []).append(n)
    found: dict[int, int] = {}
    shot_files = [kinds for kinds in by_name.values() if len(kinds) == 2]
    for shot, kinds in enumerate(shot_files):
        for members in kinds.values():
            for n in members:
                found[n] = shot
    return found


def plan_shot_removals(items: Sequence[Item], keep: str) -> list[PlannedMove]:
    """For each RAW+JPEG shot, the files of the other kind than *keep* ("raw" or "jpeg"), each with
    the shot's first file of the kept kind as its keeper. Lone RAW or JPEG files are not planned."""
    if keep not in KINDS:
        raise DedupError(f"keep 'raw' or 'jpeg' of each RAW+JPEG pair, not {keep!r}")
    by_shot: dict[int, list[Item]] = {}
    for n, shot in shots(items).items():
        by_shot.setdefault(shot, []).append(items[n])
    plan = []
    for files in by_shot.values():
        files.sort(key=lambda it: str(it.path))
        keeper = next(it for it in files if kind_of(it) == keep)
        plan += [PlannedMove(it, keeper) for it in files if kind_of(it) != keep]
    return plan


def shot_name(item: Item) -> tuple[str, str]:
    """What the files of one shot share: the folder and the name without suffix, in lower case."""
    return str(item.path.parent), item.path.stem.lower()


def pairs_group(items: Sequence[Item]) -> Group | None:
    """Every RAW+JPEG shot of *items* as one list (``Group.pair``): the files of each shot side by
    side, the RAW first; None without any shot. None of them is a duplicate of another."""
    files = [items[n] for n in shots(items)]
    if not files:
        return None
    files.sort(key=lambda it: (shot_name(it), 0 if kind_of(it) == "raw" else 1, str(it.path)))
    return Group(tuple(Member(it, 1.0, False) for it in files), pair=True)


def shot_keys(g: Group, key: str) -> list[str]:
    """The keys of the files of *g* in the same shot as *key* (itself included)."""
    name = next((shot_name(m.item) for m in g.members if m.item.key == key), None)
    return [m.item.key for m in g.members if shot_name(m.item) == name]
