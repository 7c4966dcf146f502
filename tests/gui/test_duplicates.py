"""The Duplicates tab, driven like a user would: find, slide, choose, clean up, undo."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402

from simviewer.core.images import file_digest  # noqa: E402
from simviewer.gui.main_window import MainWindow  # noqa: E402

from ..conftest import EDITS, make_photo, write_jpeg  # noqa: E402
from .conftest import wait_indexed  # noqa: E402


@pytest.fixture
def dup_folder(tmp_path):
    """Three originals with a half-size and a re-compressed copy each, three loners, one exact copy."""
    root = tmp_path / "photos"
    for i in range(3):
        im = make_photo(50 + i)
        write_jpeg(root / f"orig{i}.jpg", im)
        write_jpeg(root / "copies" / f"small{i}.jpg", EDITS["resized"](im))
        write_jpeg(root / "copies" / f"lowq{i}.jpg", im, quality=35)
    for i in range(3):
        write_jpeg(root / "other" / f"loner{i}.jpg", make_photo(80 + i))
    (root / "other" / "orig0_again.jpg").write_bytes((root / "orig0.jpg").read_bytes())
    return root


def hashes(root):
    return {p.relative_to(root).as_posix(): file_digest(p) for p in root.rglob("*.jpg")}


def find_groups(qtbot, w: MainWindow):
    tab = w.duplicates
    w.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.find_button.isEnabled(), timeout=30_000)
    tab.find_button.click()
    qtbot.waitUntil(lambda: not tab.finding and tab.nb is not None, timeout=60_000)
    return tab


def group_keys(tab):
    return sorted(sorted(m.item.key for m in g.members) for g in tab.groups)


def test_slider_regroups_and_rules_pick_the_keeper(qtbot, window, dup_folder):
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    tab = find_groups(qtbot, window)
    # Untrained ResNet-18: the tab starts at the threshold measured for that model.
    assert tab.threshold == pytest.approx(0.9972, abs=1e-5)
    assert group_keys(tab) == [
        ["copies/lowq0.jpg", "copies/small0.jpg", "orig0.jpg", "other/orig0_again.jpg"],
        ["copies/lowq1.jpg", "copies/small1.jpg", "orig1.jpg"],
        ["copies/lowq2.jpg", "copies/small2.jpg", "orig2.jpg"],
    ]
    assert tab.group_list.count() == 3 and "photos" in tab.group_list.item(0).text()
    assert "3 groups" in tab.summary.text() and "to reclaim" in tab.summary.text()
    # Keeper by the default rules: the most pixels, then the largest file (so never the half-size copy
    # or the quality-35 one); the exact copy ties with the original and loses on path length.
    for g in tab.groups:
        assert g.keeper.key.startswith("orig") and g.keeper.key.count("/") == 0
    # Sliding to 100 % regroups at once from the cached neighbours: only the byte-identical pair is left.
    tab.set_threshold(1.0)
    assert group_keys(tab) == [["orig0.jpg", "other/orig0_again.jpg"]] and tab.groups[0].exact
    tab.exact_box.setChecked(True)
    assert tab.groups == []
    tab.exact_box.setChecked(False)
    tab.set_threshold(0.9972)
    assert len(tab.groups) == 3
    # The table marks the keeper and ticks the others; the compare view shows the keeper beside one.
    tab.group_list.setCurrentRow(0)
    g = tab.current_group()
    assert tab.table.rowCount() == len(g.members)
    assert tab.table.item(0, 0).checkState() == Qt.CheckState.Unchecked
    assert all(tab.table.item(r, 0).checkState() == Qt.CheckState.Checked for r in range(1, len(g.members)))
    assert "KEEP" in tab.keeper_caption.text() and g.keeper.path.name in tab.keeper_caption.text()
    assert "will be moved" in tab.member_caption.text()


def test_manual_override_and_not_duplicates_persist(qtbot, window, dup_folder, tmp_path):
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    tab = find_groups(qtbot, window)
    g = next(g for g in tab.groups if g.keeper.key == "orig1.jpg")
    tab.group_list.setCurrentRow(tab.groups.index(g))
    small = next(r for r, m in enumerate(g.members) if m.item.key == "copies/small1.jpg")
    tab.table.setCurrentCell(small, 1)
    tab.keep_button.click()  # keep the half-size copy instead of the rules' keeper
    assert tab.selection(g) == {m.item.key for m in g.members} - {"copies/small1.jpg"}
    # Ticking the last unticked photo would remove the whole group: refused in place.
    tab.table.item(small, 0).setCheckState(Qt.CheckState.Checked)
    assert "copies/small1.jpg" not in tab.selection(tab.current_group())
    assert "At least one" in tab.status.text()

    lowq = next(r for r, m in enumerate(g.members) if m.item.key == "copies/lowq1.jpg")
    tab.table.setCurrentCell(lowq, 1)
    tab.not_dup_button.click()
    g1 = next(g for g in tab.groups if g.keeper.key == "orig1.jpg")
    assert "copies/lowq1.jpg" not in {m.item.key for m in g1.members}
    window.close()

    # A restart remembers the mark.
    w2 = MainWindow(settings=window.settings, index_root=tmp_path / "indexes")
    w2.exec_dialog = lambda box: None
    qtbot.addWidget(w2)
    w2.show()
    try:
        w2.open_folder(dup_folder)
        wait_indexed(qtbot, w2)
        tab2 = find_groups(qtbot, w2)
        g1 = next(g for g in tab2.groups if g.keeper.key == "orig1.jpg")
        assert "copies/lowq1.jpg" not in {m.item.key for m in g1.members}
    finally:
        w2.close()


def test_clean_up_asks_moves_follows_and_undo_restores_every_byte(qtbot, window, dup_folder, tmp_path):
    before = hashes(dup_folder)
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    tab = find_groups(qtbot, window)
    tab.add_reference(dup_folder / "copies")  # protected: never moved, preferred as keeper
    assert all(g.keeper.key.startswith("copies/") for g in tab.groups)
    expected = {m.item.key for g in tab.groups for m in g.members if not m.item.key.startswith("copies/")}

    # Declining the confirmation moves nothing.
    asked = []
    window.exec_dialog = lambda box: asked.append(box.text()) or None
    tab.action_box.setCurrentIndex(tab.action_box.findData("move"))
    dest = tmp_path / "removed"
    tab.clean_up(move_to=dest)
    assert asked and f"Move {len(expected)} photos" in asked[0]
    assert "protected folders" in tab.confirm_box.informativeText()
    assert hashes(dup_folder) == before

    window.exec_dialog = lambda box: box.buttons()[0] if box is getattr(tab, "confirm_box", None) else None
    tab.clean_up(move_to=dest)
    qtbot.waitUntil(lambda: not tab.acting, timeout=30_000)
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")} == expected
    assert all(not (dup_folder / k).exists() for k in expected)
    # The library follows: re-indexed without the moved photos, and the groups are found again.
    wait_indexed(qtbot, window)
    qtbot.waitUntil(lambda: not tab.finding, timeout=60_000)
    assert window.index.count == len(before) - len(expected)
    assert not {k for grp in group_keys(tab) for k in grp} & expected

    assert tab.undo_button.isEnabled()
    tab.undo_button.click()
    qtbot.waitUntil(lambda: not tab.acting, timeout=30_000)
    assert hashes(dup_folder) == before
    wait_indexed(qtbot, window)
    assert window.index.count == len(before)
    qtbot.waitUntil(lambda: not tab.finding, timeout=60_000)


def test_a_whole_group_is_never_removed(qtbot, window, dup_folder):
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    tab = find_groups(qtbot, window)
    g = tab.groups[0]
    for m in g.members:
        tab.overrides[m.item.key] = True  # as if every box were ticked
    assert tab.selection(g) == {m.item.key for m in g.members[1:]}  # the rules' choice stands
    before = hashes(dup_folder)
    window.exec_dialog = lambda box: box.buttons()[0] if box is getattr(tab, "confirm_box", None) else None
    tab.select_none()
    tab.clean_up()
    assert "No photo is selected" in tab.status.text() and hashes(dup_folder) == before
