"""Which members of each duplicate group a clean-up moves: the rules' choice with the user's ticks.

The rules pre-select a group's *sure* duplicates (:func:`is_sure`: exact copies of the keeper, and
members at least as alike as the calibration's sure level), never one in a protected folder.
Members that are only similar ("check") are shown unticked: they may be another shot of the same
subject. The user's ticks (``overrides``) go on top, and three things always hold:

- at least one photo of every group stays;
- of a content with several copies in a group, one copy stays (so a loose match to an unrelated
  keeper never sends every copy of a photo away);
- nothing in a protected folder moves;
- one file of every RAW+JPEG shot stays.

A shot inside a group is one member (its partners ride along, :class:`Member`), never ticked by the
rules. The list of shots (a :func:`pairs_group`, ``Group.pair``) is never pre-selected either: the
user ticks files of it, or keeps one kind of every shot (:meth:`Selection.keep_kind`); the bulk
actions below leave it alone.

A tick that would break one of them is refused (:meth:`Selection.toggle` says why); the bulk
actions (invert, keep only, select similar) tick in the group's order and leave unticked what
would break one. The
plan (:meth:`Selection.plan`) is :func:`plan_removals` of what is ticked, which refuses the same.
No Qt: the Duplicates tab's item models read and change it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import Group, Member, PlannedMove, in_folders, is_sure, plan_removals
from .pairs import kind_of, shot_keys, shot_name

WHOLE_GROUP = "At least one photo of each group is kept."
PROTECTED = "Photos in a protected folder are never moved."
WHOLE_SHOT = "One file of each RAW+JPEG pair is kept."


def _shot_left(g: Group, keys: set[str]) -> str | None:
    """Why moving *keys* out of the list of shots *g* is unsafe (None: one file of each stays)."""
    left = {shot_name(m.item) for m in g.members if m.item.key not in keys}
    return None if all(shot_name(m.item) in left for m in g.members) else WHOLE_SHOT


def _copies_left(g: Group, keys: set[str]) -> str | None:
    """Why moving *keys* out of *g* is unsafe (None: it is safe)."""
    if len(keys & {m.item.key for m in g.members}) >= len(g.members):
        return WHOLE_GROUP
    copies = Counter(m.item.hash for m in g.members)
    moving = Counter(m.item.hash for m in g.members if m.item.key in keys)
    for m in g.members:
        h = m.item.hash
        if copies[h] > 1 and moving[h] >= copies[h]:
            return f"One of the {copies[h]} identical copies of {m.item.path.name} is kept."
    return None


class Selection:
    """What the clean-up would move, group by group (keyed by the library-relative path)."""

    def __init__(self, groups: Sequence[Group] = (), *, sure_level: float | None = None,
                 reference: Iterable[Path] = (), use_rules: bool = True) -> None:
        self.groups: list[Group] = list(groups)
        self.sure_level = sure_level
        self.reference: list[Path] = list(reference)
        # False: the rules pre-select nothing (an unreliable calibration the user has not
        # overruled yet); only hand-ticked photos move.
        self.use_rules = use_rules
        self.overrides: dict[str, bool] = {}  # member key -> True: move it, False: keep it
        self.kept: dict[str, str] = {}  # group keeper key -> the member "keep only" chose
        # The ticks in the list of RAW+JPEG shots, apart: a shot's lead is also a group's member.
        self.pair_ticks: dict[str, bool] = {}

    # -- what is chosen ------------------------------------------------------------------------
    def protected(self, m: Member) -> bool:
        return in_folders(m.item.path, self.reference)

    def sure(self, g: Group, m: Member) -> bool:
        """Whether *m* is a sure duplicate of its group's keeper (the keeper itself: False)."""
        return m is not g.members[0] and is_sure(m, self.sure_level)

    def default(self, g: Group) -> set[str]:
        """The rules' pre-selection: the sure duplicates outside protected folders, one copy of
        each content with several copies left (with the keeper's content: the keeper)."""
        if not self.use_rules or g.pair:
            return set()
        chosen: set[str] = set()
        for m in g.members[1:]:
            if self.sure(g, m) and not self.protected(m) and _copies_left(g, chosen | {m.item.key}) is None:
                chosen.add(m.item.key)
        return chosen

    def moving(self, g: Group) -> set[str]:
        """Keys of the members of *g* the clean-up would move: the rules' choice with the user's
        ticks on top; where the ticks are unsafe (see the module), the rules' choice stands."""
        if g.pair:
            chosen = {m.item.key for m in g.members if self.pair_ticks.get(m.item.key) and not self.protected(m)}
            return chosen if _shot_left(g, chosen) is None else set()
        default = self.default(g)
        chosen = {m.item.key for m in g.members
                  if self.overrides.get(m.item.key, m.item.key in default) and not self.protected(m)}
        return chosen if _copies_left(g, chosen) is None else default

    def keeper(self, g: Group) -> Member:
        """The one member shown as kept ("★ keep"): the one "keep only" chose while it stays,
        else the first that does not move."""
        moving = self.moving(g)
        chosen = self.kept.get(g.keeper.key)
        return next((m for m in g.members if m.item.key == chosen and chosen not in moving), None) or next(
            (m for m in g.members if m.item.key not in moving), g.members[0])

    def selected(self) -> dict[str, set[str]]:
        """Keeper key -> moving keys, as :func:`plan_removals` takes it."""
        return {g.keeper.key: self.moving(g) for g in self.groups}

    def planned(self) -> tuple[int, int]:
        """(files, bytes) the clean-up would move (a shot's partners with it; each file once)."""
        files = {it.key: it.size for g in self.groups for m in g.members if m.item.key in self.moving(g)
                 for it in m.files}
        return len(files), sum(files.values())

    def counts(self) -> tuple[int, int, int]:
        """(sure duplicates ticked, similar members, similar members ticked) over every group."""
        sure = similar = ticked = 0
        for g in self._duplicates():
            chosen = self.moving(g)
            for m in g.members[1:]:
                if self.sure(g, m):
                    sure += m.item.key in chosen
                else:
                    similar += 1
                    ticked += m.item.key in chosen
        return sure, similar, ticked

    def plan(self) -> list[PlannedMove]:
        """The moves of a clean-up (core's :func:`plan_removals`, which refuses the unsafe)."""
        dups = self._duplicates()
        plan = plan_removals(dups, selected={g.keeper.key: self.moving(g) for g in dups}, reference=self.reference)
        for g in self.groups:
            if g.pair:
                moving = self.moving(g)
                for m in g.members:
                    if m.item.key in moving:
                        kept = next(x.item for x in g.members
                                    if x.item.key in shot_keys(g, m.item.key) and x.item.key not in moving)
                        plan.append(PlannedMove(m.item, kept))
        once: dict[str, PlannedMove] = {}  # a shot moved whole and one kind of it: each file once
        for p in plan:
            once.setdefault(p.item.key, p)
        return list(once.values())

    def _duplicates(self) -> list[Group]:
        return [g for g in self.groups if not g.pair]

    # -- changes -------------------------------------------------------------------------------
    def set_groups(self, groups: Sequence[Group]) -> None:
        """New groups (another threshold, option or rule): the user's ticks stay with their photos."""
        self.groups = list(groups)

    def toggle(self, g: Group, key: str, move: bool) -> str | None:
        """Tick (*move*) or untick one member; returns why it was refused, or None."""
        m = next((x for x in g.members if x.item.key == key), None)
        if m is None:
            return None
        if move and self.protected(m):
            return PROTECTED
        if g.pair:
            if move and _shot_left(g, self.moving(g) | {key}) is not None:
                return WHOLE_SHOT
            self.pair_ticks[key] = move
            return None
        if move:
            why = _copies_left(g, self.moving(g) | {key})
            if why is not None:
                return why
        self.overrides[key] = move
        return None

    def keep_only(self, g: Group, key: str) -> None:
        """Keep *key* and move every other member of *g* (but the protected ones, and one copy of
        each content with several copies). In the list of RAW+JPEG shots: move the other files of
        *key*'s shot."""
        if g.pair:
            others = set(shot_keys(g, key)) - {key}
            self._set(g, self._safe(g, [k for k in self.moving(g) if k != key] + sorted(others)))
            return
        self._set(g, self._safe(g, [m.item.key for m in g.members if m.item.key != key]))
        self.kept[g.keeper.key] = key

    def keep_kind(self, kind: str) -> None:
        """Keep the RAW (*kind* "raw") or the JPEG ("jpeg") of every RAW+JPEG shot: tick the other
        kind in the list of shots (not in protected folders)."""
        for g in self.groups:
            if g.pair:
                self._set(g, self._safe(g, [m.item.key for m in g.members if kind_of(m.item) != kind]))

    def invert(self) -> None:
        """Swap ticked and unticked in every group, keeping the rules above."""
        for g in self._duplicates():
            moving = self.moving(g)
            self._set(g, self._safe(g, [m.item.key for m in g.members if m.item.key not in moving]))

    def select_similar(self) -> None:
        """Tick the members marked "similar — check" as well (the sure ones keep their ticks)."""
        for g in self._duplicates():
            keys = list(self.moving(g)) + [m.item.key for m in g.members[1:] if not self.sure(g, m)]
            self._set(g, self._safe(g, keys))

    def select_none(self) -> None:
        for g in self.groups:
            self._set(g, set())

    def by_rules(self) -> None:
        """Forget the user's ticks; the rules choose (also after an unreliable calibration)."""
        self.use_rules = True
        self.clear()

    def clear(self) -> None:
        self.overrides.clear()
        self.kept.clear()
        self.pair_ticks.clear()

    def _safe(self, g: Group, keys: Iterable[str]) -> set[str]:
        """*keys* in order, each added only while the result stays safe (and unprotected)."""
        wanted, chosen = set(keys), set()
        unsafe = _shot_left if g.pair else _copies_left
        for m in g.members:
            if m.item.key in wanted and not self.protected(m) and unsafe(g, chosen | {m.item.key}) is None:
                chosen.add(m.item.key)
        return chosen

    def _set(self, g: Group, keys: set[str]) -> None:
        ticks = self.pair_ticks if g.pair else self.overrides
        for m in g.members:
            ticks[m.item.key] = m.item.key in keys
