"""Keeper rules (which photo of a group stays) and the plan of what a clean-up moves."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .pairs import KINDS, kind_of
from .types import RULE_HELP, DedupError, Group, Item, PlannedMove, is_sure


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
        elif rule in KINDS:  # the RAW, or the JPEG, of a RAW+JPEG pair
            parts.append(lambda it, k=rule: 0 if kind_of(it) == k else 1)
        elif rule.startswith("folder:"):
            folder = [Path(rule.split(":", 1)[1]).expanduser().resolve()]
            parts.append(lambda it, f=folder: 0 if in_folders(it.path, f) else 1)
        else:
            raise DedupError(f"unknown keeper rule {rule!r}; rules: {', '.join(RULE_HELP)}")
    return lambda it: (*(p(it) for p in parts), str(it.path))


def in_folders(path: Path, folders: Iterable[Path]) -> bool:
    """Whether *path* is inside one of *folders* (or is one), compared both as written and by real
    path: a folder reached through a symbolic link is the folder it points to."""
    folders = [Path(f) for f in folders]
    if not folders:
        return False
    path = Path(path)
    real = Path(os.path.realpath(path))
    for f in folders:
        real_f = Path(os.path.realpath(f))
        if path == f or f in path.parents or real == real_f or real_f in real.parents:
            return True
    return False


def plan_removals(groups: Sequence[Group], selected: dict[str, set[str]] | None = None,
                  reference: Sequence[Path] = (), *, sure_level: float | None = None,
                  include_similar: bool = False) -> list[PlannedMove]:
    """What would be moved: by default the sure duplicates of each keeper (:func:`is_sure`: exact
    copies, and members scoring at least *sure_level*; without one, exact copies only), or every
    member but the keeper with *include_similar*; never one in a reference folder.

    Of a content with several copies in a group, one copy always stays: the keeper, or the last of
    them in the group's order. A loose match to an unrelated keeper (a high-resolution picture
    of something else) then never sends every copy of a photo away, sure-looking or not.

    A member that is a RAW+JPEG shot is never sure; chosen, it moves with its partners.

    *selected* maps a keeper's key to the member keys the user chose instead (sure or not).
    Refused: removing a whole group, every copy of a content, and a chosen file inside a reference
    folder.
    """
    plan = []
    for g in groups:
        if selected is None:
            keys: set[str] = set()
            for m in g.members[1:]:
                if (not in_folders(m.item.path, reference) and (include_similar or is_sure(m, sure_level))
                        and last_copy(g, keys | {m.item.key}) is None):
                    keys.add(m.item.key)
        else:
            keys = selected.get(g.keeper.key, set())
        chosen = [m.item for m in g.members if m.item.key in keys]
        if len(chosen) >= len(g.members):
            raise DedupError(f"refused: that would remove every copy of {g.keeper.path.name}; keep at least one")
        gone = last_copy(g, keys)
        if gone is not None:
            raise DedupError(f"refused: that would remove every identical copy of {gone.path.name}; keep one")
        for it in chosen:
            if in_folders(it.path, reference):
                raise DedupError(f"refused: {it.path} is in a protected reference folder")
        # A RAW+JPEG shot moves whole: its partners with it (the keeper's partners stay with it).
        for m in g.members:
            if m.item.key in keys:
                plan += [PlannedMove(it, g.keeper) for it in m.files if not in_folders(it.path, reference)]
    return plan


def last_copy(g: Group, keys: set[str]) -> Item | None:
    """A photo of *g* whose every identical copy (two or more in the group) is among *keys*, if
    moving *keys* would take them all; None when at least one copy of each such content stays."""
    copies = Counter(m.item.hash for m in g.members)
    moving = Counter(m.item.hash for m in g.members if m.item.key in keys)
    return next((m.item for m in g.members if copies[m.item.hash] > 1 and moving[m.item.hash] >= copies[m.item.hash]),
                None)
