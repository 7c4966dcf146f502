"""The Duplicates tab's item models alone, without a window: rows, columns, the check role."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QObject, Qt, Signal  # noqa: E402
from PySide6.QtGui import QIcon, QImage, QPixmap  # noqa: E402

from simviewer.core.dedup import Group, Item, Member  # noqa: E402
from simviewer.core.dedup.selection import Selection  # noqa: E402
from simviewer.gui.duplicates_models import (  # noqa: E402
    CHECK_COLOUR,
    COLUMNS,
    KEEP_MARK,
    MOVE,
    PHOTO,
    SIMILARITY,
    GroupRole,
    GroupsModel,
    MemberRole,
    MembersModel,
)

ROOT = Path("/photos")


class FakeThumbnails(QObject):
    """The thumbnail service's interface: pixmap() asks, ready() answers."""

    ready = Signal(str, QImage)

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.have: dict[str, QPixmap] = {}

    def pixmap(self, path: str):
        if path not in self.have:
            self.asked.append(path)
        return self.have.get(path)

    def arrive(self, path: str) -> None:
        image = QImage(8, 8, QImage.Format.Format_RGB888)
        self.have[path] = QPixmap.fromImage(image)
        self.ready.emit(path, image)


def item(key: str, h: str | None = None, size: int = 1000) -> Item:
    return Item(key, ROOT / key, h or f"h-{key}", size, 0, 40, 30, None)


def make_groups() -> list[Group]:
    a = Group((Member(item("a/IMG_1.jpg"), 1.0, True),
               Member(item("b/IMG_1.jpg", "h-a/IMG_1.jpg"), 1.0, True),
               Member(item("a/edit.jpg", size=500), 0.995, False),
               Member(item("a/burst.jpg"), 0.95, False, "mirror")))
    b = Group((Member(item("x.jpg"), 1.0, True), Member(item("y.jpg"), 0.999, False)))
    return [a, b]


@pytest.fixture
def setup(qtbot):
    groups = make_groups()
    sel = Selection(groups, sure_level=0.99)
    thumbs = FakeThumbnails()
    return groups, sel, thumbs


def checked(model: MembersModel, row: int) -> bool:
    return model.data(model.index(row, MOVE), Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked


def test_groups_model_rows_text_and_thumbnails_without_a_click(setup, qtbot):
    groups, sel, thumbs = setup
    model = GroupsModel(thumbs)
    model.set_groups(groups, sel, ROOT)
    assert model.rowCount() == 2
    text = model.data(model.index(0))
    assert text.startswith("4 photos") and "IMG_1.jpg · a" in text and "2 to move" in text and "1 check" in text
    assert model.data(model.index(0), GroupRole) is groups[0]
    # Painting a row asks for its keeper's thumbnail; its arrival repaints that row only.
    assert model.data(model.index(1), Qt.ItemDataRole.DecorationRole) is None
    assert thumbs.asked == [str(ROOT / "x.jpg")]
    with qtbot.waitSignal(model.dataChanged) as changed:
        thumbs.arrive(str(ROOT / "x.jpg"))
    assert changed.args[0].row() == 1 and changed.args[1].row() == 1
    # An icon, which a view draws at its icon size (a pixmap would be drawn at its own 160 px).
    assert isinstance(model.data(model.index(1), Qt.ItemDataRole.DecorationRole), QIcon)


def test_members_model_columns_and_check_role(setup):
    groups, sel, thumbs = setup
    model = MembersModel(thumbs)
    model.set_group(groups[0], sel, ROOT)
    assert model.rowCount() == 4 and model.columnCount() == len(COLUMNS)
    assert model.headerData(SIMILARITY, Qt.Orientation.Horizontal) == "Similarity"
    assert [checked(model, r) for r in range(4)] == [False, True, True, False]
    assert model.data(model.index(3, SIMILARITY)) == "95.00 % (mirror) · check"
    assert model.data(model.index(3, SIMILARITY), Qt.ItemDataRole.ForegroundRole).color() == CHECK_COLOUR
    assert model.data(model.index(1, SIMILARITY)) == "exact copy"
    assert model.data(model.index(2, MOVE), MemberRole) is groups[0].members[2]
    assert model.flags(model.index(0, MOVE)) & Qt.ItemFlag.ItemIsUserCheckable
    assert not model.flags(model.index(0, PHOTO)) & Qt.ItemFlag.ItemIsUserCheckable


def test_same_names_are_told_apart_by_their_folder(setup):
    groups, sel, _ = setup
    model = MembersModel()
    model.set_group(groups[0], sel, ROOT)
    assert model.data(model.index(0, PHOTO)) == KEEP_MARK + "IMG_1.jpg\na"
    assert model.data(model.index(1, PHOTO)) == "IMG_1.jpg\nb"
    assert model.data(model.index(2, PHOTO)) == "edit.jpg\na"
    assert model.data(model.index(1, PHOTO), Qt.ItemDataRole.ToolTipRole) == str(ROOT / "b/IMG_1.jpg")


def test_ticking_goes_through_the_selection_and_refusals_are_said(setup, qtbot):
    groups, sel, _ = setup
    model = MembersModel()
    model.set_group(groups[1], sel, ROOT)
    assert checked(model, 1)  # 99.9 % is above the sure level
    assert model.setData(model.index(1, MOVE), Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    assert sel.moving(groups[1]) == set() and not checked(model, 1)
    model.set_group(groups[0], sel, ROOT)
    with qtbot.waitSignal(model.selection_changed):
        assert model.setData(model.index(3, MOVE), Qt.CheckState.Checked.value, Qt.ItemDataRole.CheckStateRole)
    assert "a/burst.jpg" in sel.moving(groups[0]) and checked(model, 3)
    # The last unticked photo: refused, and said.
    with qtbot.waitSignal(model.refused) as refused:
        assert not model.setData(model.index(0, MOVE), Qt.CheckState.Checked, Qt.ItemDataRole.CheckStateRole)
    assert "At least one photo" in refused.args[0] and not checked(model, 0)


def test_exactly_one_keep_star_whatever_is_ticked(setup):
    groups, sel, _ = setup
    model = MembersModel()
    model.set_group(groups[0], sel, ROOT)

    def stars():
        return [r for r in range(model.rowCount()) if model.data(model.index(r, PHOTO)).startswith(KEEP_MARK)]

    assert stars() == [0]
    sel.select_none()  # nothing moves: still one keeper
    assert stars() == [0]
    sel.keep_only(groups[0], "a/burst.jpg")
    assert stars() == [3]
    sel.invert()
    assert len(stars()) == 1
    sel.toggle(groups[0], "a/IMG_1.jpg", True)
    assert len(stars()) == 1 and model.data(model.index(stars()[0], MOVE), Qt.ItemDataRole.CheckStateRole) \
        == Qt.CheckState.Unchecked


def test_protected_members_have_no_check_box(setup):
    groups, _, _ = setup
    sel = Selection(groups, sure_level=0.99, reference=[ROOT / "b"])
    model = MembersModel()
    model.set_group(groups[0], sel, ROOT)
    assert model.data(model.index(1, MOVE)) == "protected"
    assert model.data(model.index(1, MOVE), Qt.ItemDataRole.CheckStateRole) is None
    assert not model.flags(model.index(1, MOVE)) & Qt.ItemFlag.ItemIsUserCheckable


def test_a_raw_jpeg_shot_is_one_row_and_the_pairs_list_marks_no_keeper(qtbot):
    from simviewer.core.dedup.pairs import pairs_group

    raw, jpeg = item("cam/IMG_1.CR2", size=9000), item("cam/IMG_1.JPG")
    g = Group((Member(raw, 1.0, True, partners=(jpeg,)), Member(item("bak/IMG_1.JPG", "h-cam/IMG_1.JPG"), 1.0, True)))
    pairs = pairs_group([raw, jpeg])
    sel = Selection([g, pairs], sure_level=0.99)
    members = MembersModel()
    members.set_group(g, sel, ROOT)
    assert members.data(members.index(0, PHOTO)).startswith(KEEP_MARK + "IMG_1.CR2 + JPG\ncam")
    assert checked(members, 1) and g.reclaimable == 1000  # the backup goes; the shot's JPEG stays with it
    members.set_group(pairs, sel, ROOT)
    assert [members.data(members.index(r, PHOTO)).split("\n")[0] for r in range(2)] == ["IMG_1.CR2", "IMG_1.JPG"]
    assert [members.data(members.index(r, SIMILARITY)) for r in range(2)] == ["RAW+JPEG pair"] * 2
    assert not checked(members, 0) and not checked(members, 1)
    groups = GroupsModel()
    groups.set_groups([g, pairs], sel, ROOT)
    assert groups.data(groups.index(1)).split("\n") == ["RAW+JPEG pairs (1)", "one shot each, not duplicates",
                                                        "0 to move · 0 B"]
