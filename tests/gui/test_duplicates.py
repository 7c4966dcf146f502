"""The Duplicates tab, driven like a user would: find, slide, choose, clean up, undo."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402

from simviewer.core import calibration, dedup  # noqa: E402
from simviewer.core.images import file_digest  # noqa: E402
from simviewer.gui.duplicates import CHECK_COLOUR, UNRELIABLE_TEXT  # noqa: E402
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


# Where the untrained ResNet-18 separates the edited copies of dup_folder from the other photos
# (its best-F1 threshold on the near-duplicate benchmark): the tests that check groups slide there.
GROUPING_THRESHOLD = 0.9972


def find_groups(qtbot, w: MainWindow, threshold: float | None = GROUPING_THRESHOLD):
    """Press Find; then slide to *threshold* (None: stay where the tab started)."""
    tab = w.duplicates
    w.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.find_button.isEnabled(), timeout=30_000)
    tab.find_button.click()
    qtbot.waitUntil(lambda: not tab.finding and tab.nb is not None, timeout=60_000)
    if threshold is not None:
        tab.set_threshold(threshold)
    return tab


def group_keys(tab):
    return sorted(sorted(m.item.key for m in g.members) for g in tab.groups)


def test_slider_regroups_and_rules_pick_the_keeper(qtbot, window, dup_folder):
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    tab = find_groups(qtbot, window, threshold=None)
    # The tab starts at the threshold calibrated on this library for its model.
    cal = window.library.calibration(window.index.model_fingerprint)
    assert cal is not None and tab.threshold == cal.threshold
    tab.set_threshold(GROUPING_THRESHOLD)
    assert tab.threshold == pytest.approx(GROUPING_THRESHOLD, abs=1e-4)
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
    tab.set_threshold(GROUPING_THRESHOLD)
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


def reopen(qtbot, w: MainWindow, folder):
    w.open_folder(folder)
    wait_indexed(qtbot, w)


def store_calibration(w: MainWindow, **changes):
    """Replace the library's calibration by an edited one (a later measurement: another created)."""
    cal = w.library.calibration(w.index.model_fingerprint)
    new = dataclasses.replace(cal, created=cal.created + 1, **changes)
    calibration.save(w.library.index_dir, new)
    return new


def test_the_slider_starts_at_the_calibrated_threshold_and_remembers_a_move(qtbot, window, dup_folder):
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    stored = store_calibration(window, threshold=0.9931)
    reopen(qtbot, window, dup_folder)  # keeps the stored calibration: same model, same photos
    tab = window.duplicates
    assert tab.threshold == 0.9931 and tab.calibration == stored
    assert tab.floor == pytest.approx(dedup.threshold_floor(0.9931))
    assert tab.plot.calibration == stored and tab.plot.value == 0.9931
    assert f"Calibrated on {stored.photos} of your photos" in tab.caption.text()
    assert tab.find_button.isEnabled() and not tab.warning.isVisibleTo(tab)

    # A move of the slider is remembered for this calibration, across a reopen.
    tab = find_groups(qtbot, window, threshold=0.9960)
    moved = tab.threshold
    assert moved == pytest.approx(0.9960, abs=1e-4) and "at your" in tab.caption.text()
    reopen(qtbot, window, dup_folder)
    assert window.duplicates.threshold == pytest.approx(moved)

    # A new calibration starts from its own threshold again.
    store_calibration(window, threshold=0.9911)
    reopen(qtbot, window, dup_folder)
    assert window.duplicates.threshold == 0.9911


def test_an_unreliable_calibration_selects_nothing_and_says_so(qtbot, window, dup_folder):
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    store_calibration(window, reliable=False, separation=0.4)
    reopen(qtbot, window, dup_folder)
    tab = find_groups(qtbot, window, threshold=None)
    assert tab.groups, "groups are still shown, to look at"
    assert tab.warning.isVisible() and UNRELIABLE_TEXT in tab.warning.text()
    assert tab.pretrained_button.isVisible() and tab.finetune_button.isVisible()  # an untrained model
    assert tab.planned() == (0, 0)
    tab.group_list.setCurrentRow(0)
    assert all(tab.table.item(r, 0).checkState() == Qt.CheckState.Unchecked for r in range(tab.table.rowCount()))
    assert not tab.act_button.isEnabled()
    # A photo ticked by hand is the only one selected.
    tab.table.item(1, 0).setCheckState(Qt.CheckState.Checked)
    assert tab.planned()[0] == 1
    # Moving the threshold is the user's decision: the rules choose as usual from then on.
    assert "Nothing is selected" in tab.warning.text()
    tab.set_threshold(GROUPING_THRESHOLD)
    assert tab.planned()[0] == sum(len(g.members) - 1 for g in tab.groups) > 1
    assert tab.warning.isVisible() and "Check each group" in tab.warning.text()


def test_only_sure_duplicates_are_ticked_and_similar_ones_are_marked_to_check(qtbot, window, dup_folder):
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    tab = find_groups(qtbot, window)
    g = next(g for g in tab.groups if g.keeper.key == "orig0.jpg")
    scores = {m.item.key: m.score for m in g.members}
    # A calibration whose typical edited copy sits between the re-compressed copy and the half-size
    # one: the half-size copy is then only similar, as another photo of the same subject would be.
    level = round((scores["copies/lowq0.jpg"] + scores["copies/small0.jpg"]) / 2, 6)  # as it is stored
    assert scores["copies/small0.jpg"] < level < scores["copies/lowq0.jpg"]
    stored = store_calibration(window, positives=(level,))
    assert stored.sure_level == level
    reopen(qtbot, window, dup_folder)
    tab = find_groups(qtbot, window)
    assert tab.sure_level() == level
    g = next(g for g in tab.groups if g.keeper.key == "orig0.jpg")
    tab.group_list.setCurrentRow(tab.groups.index(g))
    rows = {m.item.key: r for r, m in enumerate(g.members)}

    def ticked(key):
        return tab.table.item(rows[key], 0).checkState() == Qt.CheckState.Checked

    # The exact copy and the copy as alike as a typical edit are ticked; the similar one is not.
    assert ticked("other/orig0_again.jpg") and ticked("copies/lowq0.jpg")
    assert not ticked("copies/small0.jpg") and not ticked("orig0.jpg")
    similarity = tab.table.item(rows["copies/small0.jpg"], 2)
    assert similarity.text().endswith(" · check") and similarity.foreground().color() == CHECK_COLOUR
    assert "check" not in tab.table.item(rows["copies/lowq0.jpg"], 2).text()
    assert tab.selection(g) == {"other/orig0_again.jpg", "copies/lowq0.jpg"}
    sure = sum(len(grp.sure(level)) for grp in tab.groups)
    similar = sum(len(grp.to_check(level)) for grp in tab.groups)
    assert similar >= 1 and f"{sure} sure duplicates selected, {similar} similar to check" in tab.summary.text()
    assert tab.planned()[0] == sure

    # "Select similar too" ticks the rest; "Select by the rules" goes back to the sure ones.
    assert tab.similar_button.isEnabled()
    tab.similar_button.click()
    assert tab.selection(tab.current_group()) == {m.item.key for m in g.members[1:]}
    assert tab.planned()[0] == sure + similar and f"({similar} ticked)" in tab.summary.text()
    tab.rules_button.click()
    assert tab.planned()[0] == sure


def test_without_a_calibration_nothing_is_searched_until_it_is_measured(qtbot, window, dup_folder, monkeypatch):
    def cannot(*_a, **_k):
        raise calibration.CalibrationError("calibration stopped")

    monkeypatch.setattr(calibration, "calibrate", cannot)  # as for a library indexed by an older version
    window.open_folder(dup_folder)
    wait_indexed(qtbot, window)
    tab = window.duplicates
    window.tabs.setCurrentWidget(tab)
    assert window.library.calibration(window.index.model_fingerprint) is None
    assert tab.threshold is None and not tab.find_button.isEnabled() and not tab.slider.isEnabled()
    assert tab.warning.isVisible() and "no duplicate threshold calibrated" in tab.warning.text()
    assert tab.calibrate_button.isVisible() and tab.calibrate_button.isEnabled()
    tab.find()
    assert tab.nb is None and not tab.finding  # no threshold is invented

    monkeypatch.undo()
    tab.calibrate_button.click()  # an update measures it
    wait_indexed(qtbot, window)
    cal = window.library.calibration(window.index.model_fingerprint)
    assert cal is not None and tab.threshold == cal.threshold
    assert tab.find_button.isEnabled() and not tab.warning.isVisible() and not tab.calibrate_button.isVisible()
