"""Item models of the Duplicates tab: the groups and the members of one group (no window needed).

Both read a :class:`core.dedup.selection.Selection`: the members model's check column is what the
clean-up moves (ticking it asks the selection, which may refuse: ``refused`` says why), and the
groups model says how many photos of each group move. Thumbnails come from a thumbnail service
(``pixmap(path)`` asks for a missing one, ``ready(path, image)`` says it arrived): a row asks for its
picture when it is painted, so the groups in view show their keeper without being clicked.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QAbstractTableModel, QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon

from ..core import dedup
from ..core.dedup.pairs import shot_name
from ..core.dedup.selection import Selection
from ..core.units import human_size

KEEP_COLOUR = QColor(39, 174, 96)
MOVE_COLOUR = QColor(192, 57, 43)
CHECK_COLOUR = QColor(202, 111, 30)  # amber: similar, but maybe another photo of the same subject
CHECK_TEXT = "similar — check"
KEEP_MARK = "★ keep  "
PAIR_TEXT = "RAW+JPEG pair"
PAIR_TIP = ("A camera's RAW and the JPEG it wrote beside it: one shot, not duplicates. Nothing is ticked; "
            "Select → Keep the RAW (or the JPEG) of each pair ticks the other kind.")
CHECK_TIP = ("Above the threshold, but less alike than a typical edited copy of your photos: it may be another "
             "shot of the same subject. Not selected unless you tick it.")

# The folder is the second line of the Photo cell rather than a column of its own: two photos of
# one name are told apart, and at 1024 px the name keeps its room.
COLUMNS = ("Move", "Photo", "Similarity", "Resolution", "Size", "Date")
MOVE, PHOTO, SIMILARITY, RESOLUTION, SIZE, DATE = range(len(COLUMNS))
MemberRole = Qt.ItemDataRole.UserRole + 20  # the dedup.Member of a row
GroupRole = Qt.ItemDataRole.UserRole + 21  # the dedup.Group of a row
MovingRole = Qt.ItemDataRole.UserRole + 22  # True where the clean-up moves the row's photo


def photo_date(item: dedup.Item) -> str:
    ts = item.taken_at if item.taken_at is not None else item.mtime_ns / 1e9
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def folder_of(path: Path, root: Path | None) -> str:
    """The folder of *path* as the user knows it: relative to the library, else absolute."""
    if root is not None and path.is_relative_to(root):
        rel = path.parent.relative_to(root).as_posix()
        return "(top folder)" if rel == "." else rel
    return str(path.parent)


def score_text(m: dedup.Member, keeper: bool) -> str:
    if keeper:
        return "keeper"
    text = "exact copy" if m.exact else f"{m.score * 100:.2f} %"
    return text + (f" ({m.via})" if m.via else "")


class _Thumbs(QObject):
    """Rows that wait for a thumbnail, by path; ``changed(row)`` when one arrives."""

    changed = Signal(int)

    def __init__(self, thumbnails, parent=None) -> None:
        super().__init__(parent)
        self.thumbnails = thumbnails
        self.rows: dict[str, list[int]] = {}
        if thumbnails is not None:
            thumbnails.ready.connect(self._ready)

    def icon(self, path: Path) -> QIcon | None:
        """The thumbnail as an icon (a view draws an icon at its icon size, a pixmap at its own)."""
        pm = None if self.thumbnails is None else self.thumbnails.pixmap(str(path))
        return None if pm is None else QIcon(pm)

    def _ready(self, path: str, _image) -> None:
        for row in self.rows.get(path, ()):
            self.changed.emit(row)


class GroupsModel(QAbstractListModel):
    """One row per group: its size, kind, kept photo (with its folder) and what moves."""

    def __init__(self, thumbnails=None, parent=None) -> None:
        super().__init__(parent)
        self.groups: list[dedup.Group] = []
        self.selection = Selection()
        self.root: Path | None = None
        self._thumbs = _Thumbs(thumbnails, self)
        self._thumbs.changed.connect(lambda row: self._changed(row, row, [Qt.ItemDataRole.DecorationRole]))

    def set_groups(self, groups: list[dedup.Group], selection: Selection, root: Path | None = None) -> None:
        self.beginResetModel()
        self.groups, self.selection, self.root = list(groups), selection, root
        self._thumbs.rows = {}
        for n, g in enumerate(self.groups):
            self._thumbs.rows.setdefault(str(g.keeper.path), []).append(n)
        self.endResetModel()

    def refresh(self) -> None:
        """The selection changed: every row's text may have."""
        self._changed(0, len(self.groups) - 1, [Qt.ItemDataRole.DisplayRole])

    def _changed(self, first: int, last: int, roles: list) -> None:
        if 0 <= first <= last < len(self.groups):
            self.dataChanged.emit(self.index(first), self.index(last), roles)

    def rowCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 (Qt API)
        return 0 if parent is not None and parent.isValid() else len(self.groups)

    def text(self, g: dedup.Group) -> str:
        sel = self.selection
        moving = sel.moving(g)
        size = sum(m.item.size for m in g.members if m.item.key in moving)
        if g.pair:
            return (f"RAW+JPEG pairs ({len({shot_name(m.item) for m in g.members})})\n"
                    f"one shot each, not duplicates\n{len(moving)} to move · {human_size(size)}")
        kind = "exact copies" if g.exact else f"≥ {min(m.score for m in g.members) * 100:.2f} %"
        check = sum(not sel.sure(g, m) for m in g.members[1:])
        kept = sel.keeper(g).item
        return (f"{len(g.members)} photos · {kind}\n{kept.path.name} · {folder_of(kept.path, self.root)}\n"
                f"{len(moving)} to move · {human_size(size)}" + (f" · {check} check" if check else ""))

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self.groups):
            return None
        g = self.groups[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text(g)
        if role == Qt.ItemDataRole.DecorationRole:
            return self._thumbs.icon(g.keeper.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            return "\n".join(str(m.item.path) for m in g.members)
        if role == GroupRole:
            return g
        return None


class MembersModel(QAbstractTableModel):
    """The members of one group; the Move column's check state is the selection's."""

    refused = Signal(str)  # why a tick was not taken
    selection_changed = Signal()

    def __init__(self, thumbnails=None, parent=None) -> None:
        super().__init__(parent)
        self.group: dedup.Group | None = None
        self.selection = Selection()
        self.root: Path | None = None
        self._thumbs = _Thumbs(thumbnails, self)
        self._thumbs.changed.connect(
            lambda row: self._changed(row, row, PHOTO, PHOTO, [Qt.ItemDataRole.DecorationRole]))

    def set_group(self, g: dedup.Group | None, selection: Selection, root: Path | None = None) -> None:
        self.beginResetModel()
        self.group, self.selection, self.root = g, selection, root
        members = g.members if g is not None else ()
        self._thumbs.rows = {str(m.item.path): [r] for r, m in enumerate(members)}
        self.endResetModel()

    def refresh(self) -> None:
        if self.group is not None:
            self._changed(0, len(self.group.members) - 1, 0, len(COLUMNS) - 1, [])

    def _changed(self, r0: int, r1: int, c0: int, c1: int, roles: list) -> None:
        if self.group is not None and 0 <= r0 <= r1 < len(self.group.members):
            self.dataChanged.emit(self.index(r0, c0), self.index(r1, c1), roles)

    def member(self, row: int) -> dedup.Member | None:
        g = self.group
        return g.members[row] if g is not None and 0 <= row < len(g.members) else None

    def row_of(self, key: str) -> int:
        g = self.group
        return next((r for r, m in enumerate(g.members) if m.item.key == key), -1) if g is not None else -1

    def rowCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 (Qt API)
        return 0 if self.group is None or (parent is not None and parent.isValid()) else len(self.group.members)

    def columnCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 (Qt API)
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def flags(self, index: QModelIndex):
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        m = self.member(index.row())
        if index.column() == MOVE and m is not None and not self.selection.protected(m):
            return base | Qt.ItemFlag.ItemIsUserCheckable
        return base

    def name(self, m: dedup.Member) -> str:
        """The photo's name (a RAW+JPEG shot's with its partners' kinds: "IMG_1.CR2 + JPG"), and its
        folder on a second line."""
        kinds = "".join(f" + {p.path.suffix.lstrip('.').upper()}" for p in m.partners)
        return f"{m.item.path.name}{kinds}\n{folder_of(m.item.path, self.root)}"

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        m = self.member(index.row())
        if m is None or not index.isValid():
            return None
        g, col = self.group, index.column()
        if role == MemberRole:
            return m
        if role == MovingRole:
            return m.item.key in self.selection.moving(g)
        if role == Qt.ItemDataRole.CheckStateRole and col == MOVE and not self.selection.protected(m):
            moving = m.item.key in self.selection.moving(g)
            return Qt.CheckState.Checked if moving else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(g, m, col)
        if role == Qt.ItemDataRole.ForegroundRole:
            return self._colour(g, m, col)
        if role == Qt.ItemDataRole.DecorationRole and col == PHOTO:
            return self._thumbs.icon(m.item.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(g, m, col)
        return None

    def _text(self, g: dedup.Group, m: dedup.Member, col: int) -> str | None:
        it = m.item
        if col == MOVE:
            return "protected" if self.selection.protected(m) else ""
        if col == PHOTO:
            return (KEEP_MARK if self.selection.keeper(g) is m and not g.pair else "") + self.name(m)
        if col == SIMILARITY and g.pair:
            return PAIR_TEXT
        if col == SIMILARITY:
            keeper = m is g.members[0]
            similar = not keeper and not self.selection.sure(g, m)
            # Short: the column must leave the name room at 1024 px.
            return score_text(m, keeper) + (" · check" if similar else "")
        if col == RESOLUTION:
            return f"{it.width}×{it.height}" if it.width else "?"
        if col == SIZE:
            return human_size(it.size)
        if col == DATE:
            return photo_date(it)
        return None

    def _colour(self, g: dedup.Group, m: dedup.Member, col: int):
        if col == PHOTO:
            if m.item.key in self.selection.moving(g):
                return QBrush(MOVE_COLOUR)
            if self.selection.keeper(g) is m and not g.pair:
                return QBrush(KEEP_COLOUR)
        if col == SIMILARITY and m is not g.members[0] and not self.selection.sure(g, m) and not g.pair:
            return QBrush(CHECK_COLOUR)
        return None

    def _tooltip(self, g: dedup.Group, m: dedup.Member, col: int) -> str | None:
        if col == MOVE:
            return self._move_tip(g, m)
        if col == SIMILARITY and g.pair:
            return PAIR_TIP
        if col == SIMILARITY and m is not g.members[0] and not self.selection.sure(g, m):
            return CHECK_TIP
        if col == PHOTO:
            return str(m.item.path)
        return None

    def _move_tip(self, g: dedup.Group, m: dedup.Member) -> str:
        sel = self.selection
        if sel.protected(m):
            return "In a protected folder: never moved"
        if m.item.key in sel.moving(g):
            return "Moved by the clean-up; untick to keep it"
        if g.pair:
            return "Stays; tick to move it (the other file of its shot stays)"
        if m.partners:
            return "A RAW+JPEG shot: stays; tick to move both of its files"
        if sel.keeper(g) is m:
            return "The photo kept of this group"
        copies = sum(x.item.hash == m.item.hash for x in g.members)
        if sel.sure(g, m) and copies > 1:
            return f"One of {copies} identical copies: one of them always stays"
        return "Stays; tick to move it as well"

    def setData(self, index: QModelIndex, value, role: int = Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        m = self.member(index.row())
        if m is None or index.column() != MOVE or role != Qt.ItemDataRole.CheckStateRole:
            return False
        move = Qt.CheckState(value) == Qt.CheckState.Checked
        why = self.selection.toggle(self.group, m.item.key, move)
        if why is not None:
            self.refused.emit(why)
            return False
        self.refresh()  # the star and the colours may move to another row
        self.selection_changed.emit()
        return True
