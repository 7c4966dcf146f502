"""The values the duplicate finder, the keeper rules and the clean-ups pass around."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# How a pair matched: as is, or through a mirrored/rotated copy (see core.images.VARIANTS).
VIA = ("", "mirror", "rot90", "rot180")
DEFAULT_RULES = ("resolution", "size", "oldest", "shortest-path")
RULE_HELP = {
    "resolution": "the most pixels",
    "size": "the largest file",
    "oldest": "the oldest (EXIF date, else file time)",
    "newest": "the newest (EXIF date, else file time)",
    "shortest-path": "the shortest path",
    "raw": "the RAW file (of a camera's RAW+JPEG pair)",
    "jpeg": "the JPEG (of a camera's RAW+JPEG pair)",
    "folder:DIR": "inside DIR (a preferred folder)",
}


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
    # The other files of the member's RAW+JPEG shot (core.dedup.pairs): the shot is one member,
    # kept or moved whole; empty for a photo that is no part of a shot.
    partners: tuple[Item, ...] = ()

    @property
    def files(self) -> tuple[Item, ...]:
        """The member's file and its shot's partners."""
        return (self.item, *self.partners)


@dataclass(frozen=True)
class Group:
    members: tuple[Member, ...]  # the keeper first, then by score
    # True for the list of RAW+JPEG shots (core.dedup.pairs.pairs_group): its members are the
    # files of each shot side by side, none of them a duplicate of another.
    pair: bool = False

    @property
    def keeper(self) -> Item:
        return self.members[0].item

    @property
    def reclaimable(self) -> int:
        """Bytes freed by removing every member but the keeper (a shot with its partners)."""
        return 0 if self.pair else sum(it.size for m in self.members[1:] for it in m.files)

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
    The rest of a group is above the threshold but may be a different photo of the same subject.
    A RAW+JPEG shot (a member with partners) is never sure: its RAW is a copy of nothing."""
    if member.partners:
        return False
    return member.exact or (sure_level is not None and member.score >= sure_level)


@dataclass(frozen=True)
class PlannedMove:
    item: Item
    group_keeper: Item


@dataclass(frozen=True)
class NeighbourProgress:
    done: int
    total: int


@dataclass(frozen=True)
class VariantProgress:
    """Mirrored/rotated copies embedded for flip- and rotation-invariant matching."""

    done: int
    total: int


@dataclass(frozen=True)
class VariantVectors:
    """The last event of :func:`core.dedup.finder.variant_vectors`: kind -> content hash -> vector."""

    vectors: dict[str, dict[str, np.ndarray]]
    skipped: list[tuple[str, str]]
