"""The Duplicates tab, driven like a user would: find, slide, choose, clean up, undo.

The tab is built as the window builds it, from a session, the thumbnail service and an
``ask``/``error`` feedback, without the window.
"""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QFileDialog  # noqa: E402

from simviewer.core import calibration, dedup  # noqa: E402
from simviewer.core.images import file_digest  # noqa: E402
from simviewer.gui.duplicates_models import CHECK_COLOUR, MOVE, SIMILARITY  # noqa: E402
from simviewer.gui.session import LibrarySession  # noqa: E402
from simviewer.gui.tabs.duplicates_panels import UNRELIABLE_TEXT  # noqa: E402
from simviewer.gui.tabs.duplicates_tab import DuplicatesTab  # noqa: E402
from simviewer.gui.thumbnails import ThumbnailService  # noqa: E402

from ..conftest import EDITS, make_photo, write_jpeg  # noqa: E402


class Feedback:
    """The window's ask()/error(): records each question and answers *answer*."""

    def __init__(self) -> None:
        self.answer = False
        self.asked: list[dict] = []
        self.errors: list[tuple[str, str]] = []

    def ask(self, title, text, yes, no="Cancel", *, informative="", details=""):
        self.asked.append({"title": title, "text": text, "yes": yes, "informative": informative,
                           "details": details})
        return self.answer

    def error(self, title, text):
        self.errors.append((title, text))


def make_tab(qtbot, tmp_path, settings=None) -> DuplicatesTab:
    if settings is None:
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    session = LibrarySession(settings, tmp_path / "indexes")
    thumbnails = ThumbnailService()
    tab = DuplicatesTab(session, thumbnails, Feedback())
    qtbot.addWidget(tab)
    tab.resize(1280, 800)
    tab.show()
    return tab


def close(tab: DuplicatesTab) -> None:
    tab.stop()
    tab.session.close()
    tab.thumbnails.shutdown()


@pytest.fixture
def tab(qtbot, tmp_path, small_default):
    t = make_tab(qtbot, tmp_path)
    yield t
    close(t)


def wait_indexed(qtbot, tab, timeout=120_000):
    s = tab.session
    qtbot.waitUntil(lambda: s.worker is not None and not s.indexing and not s.loading and s.index is not None,
                    timeout=timeout)


def open_folder(qtbot, tab, folder):
    tab.session.open(folder)
    wait_indexed(qtbot, tab)


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


def find_groups(qtbot, tab: DuplicatesTab, threshold: float | None = GROUPING_THRESHOLD):
    """Press Find; then slide to *threshold* (None: stay where the tab started)."""
    qtbot.waitUntil(lambda: tab.bar.find_button.isEnabled(), timeout=30_000)
    tab.bar.find_button.click()
    qtbot.waitUntil(lambda: not tab.finding and tab.search is not None, timeout=60_000)
    if threshold is not None:
        tab.set_threshold(threshold)
    return tab


def group_keys(tab):
    return sorted(sorted(m.item.key for m in g.members) for g in tab.groups)


def ticked(tab, row: int) -> bool:
    model = tab.members_model
    return model.data(model.index(row, MOVE), Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked


def tick(tab, row: int, on: bool = True) -> bool:
    """What the view does when the user clicks a Move box."""
    model = tab.members_model
    state = Qt.CheckState.Checked if on else Qt.CheckState.Unchecked
    return model.setData(model.index(row, MOVE), state.value, Qt.ItemDataRole.CheckStateRole)


def yes_to_cleanup(tab):
    tab.feedback.answer = True


def test_slider_regroups_and_rules_pick_the_keeper(qtbot, tab, dup_folder):
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab, threshold=None)
    session = tab.session
    # The tab starts at the threshold calibrated on this library for its model.
    cal = session.library.calibration(session.index.model_fingerprint)
    assert cal is not None and tab.threshold == cal.threshold
    tab.set_threshold(GROUPING_THRESHOLD)
    assert tab.threshold == pytest.approx(GROUPING_THRESHOLD, abs=1e-4)
    assert group_keys(tab) == [
        ["copies/lowq0.jpg", "copies/small0.jpg", "orig0.jpg", "other/orig0_again.jpg"],
        ["copies/lowq1.jpg", "copies/small1.jpg", "orig1.jpg"],
        ["copies/lowq2.jpg", "copies/small2.jpg", "orig2.jpg"],
    ]
    assert tab.groups_model.rowCount() == 3 and "photos" in tab.groups_model.data(tab.groups_model.index(0))
    assert "3 groups" in tab.summary.text() and "to reclaim" in tab.summary.text()
    # Keeper by the default rules: the most pixels, then the largest file (so never the half-size copy
    # or the quality-35 one); the exact copy ties with the original and loses on path length.
    for g in tab.groups:
        assert g.keeper.key.startswith("orig") and g.keeper.key.count("/") == 0
    # Sliding to 100 % regroups at once from the cached neighbours: only the byte-identical pair is left.
    tab.set_threshold(1.0)
    assert group_keys(tab) == [["orig0.jpg", "other/orig0_again.jpg"]] and tab.groups[0].exact
    tab.bar.exact_box.setChecked(True)
    assert tab.groups == []
    tab.bar.exact_box.setChecked(False)
    tab.set_threshold(GROUPING_THRESHOLD)
    assert len(tab.groups) == 3
    # The table marks the keeper and ticks the others; the compare view shows the keeper beside one.
    tab.choose_group(0)
    g = tab.current_group()
    assert tab.members_model.rowCount() == len(g.members)
    assert not ticked(tab, 0)
    assert all(ticked(tab, r) for r in range(1, len(g.members)))
    assert "KEEP" in tab.panes.keeper_caption.text() and g.keeper.path.name in tab.panes.keeper_caption.text()
    assert "will be moved" in tab.panes.member_caption.text()


def test_manual_override_and_not_duplicates_persist(qtbot, tab, dup_folder, tmp_path):
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    g = next(g for g in tab.groups if g.keeper.key == "orig1.jpg")
    tab.choose_group(tab.groups.index(g))
    small = next(r for r, m in enumerate(g.members) if m.item.key == "copies/small1.jpg")
    tab.choose_member(small)
    tab.browser.keep_button.click()  # keep the half-size copy instead of the rules' keeper
    assert tab.selection.moving(g) == {m.item.key for m in g.members} - {"copies/small1.jpg"}
    # Ticking the last unticked photo would remove the whole group: refused in place.
    tick(tab, small)
    assert "copies/small1.jpg" not in tab.selection.moving(tab.current_group())
    assert "At least one" in tab.actions_bar.status.text()

    lowq = next(r for r, m in enumerate(g.members) if m.item.key == "copies/lowq1.jpg")
    tab.choose_member(lowq)
    tab.browser.not_dup_button.click()
    g1 = next(g for g in tab.groups if g.keeper.key == "orig1.jpg")
    assert "copies/lowq1.jpg" not in {m.item.key for m in g1.members}
    settings = tab.session.settings
    close(tab)

    # A restart remembers the mark.
    tab2 = make_tab(qtbot, tmp_path, settings)
    try:
        open_folder(qtbot, tab2, dup_folder)
        find_groups(qtbot, tab2)
        g1 = next(g for g in tab2.groups if g.keeper.key == "orig1.jpg")
        assert "copies/lowq1.jpg" not in {m.item.key for m in g1.members}
    finally:
        close(tab2)


def test_clean_up_asks_moves_follows_and_undo_restores_every_byte(qtbot, tab, dup_folder, tmp_path):
    before = hashes(dup_folder)
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    tab.add_reference(dup_folder / "copies")  # protected: never moved, preferred as keeper
    assert all(g.keeper.key.startswith("copies/") for g in tab.groups)
    # Every photo outside the protected folder moves, but one of the two identical full-size originals:
    # every copy of one content is never sent away (the kept one is an edited copy of it here).
    expected = {m.item.key for g in tab.groups for m in g.members if not m.item.key.startswith("copies/")}
    expected -= {"other/orig0_again.jpg"}

    # Declining the confirmation moves nothing.
    bar = tab.actions_bar
    bar.action_box.setCurrentIndex(bar.action_box.findData("move"))
    dest = tmp_path / "removed"
    tab.clean_up(move_to=dest)
    asked = tab.feedback.asked
    assert asked and f"Move {len(expected)} photos" in asked[0]["text"]
    assert "protected folders" in asked[0]["informative"]
    assert hashes(dup_folder) == before

    yes_to_cleanup(tab)
    tab.clean_up(move_to=dest)
    qtbot.waitUntil(lambda: not tab.cleanup.acting, timeout=30_000)
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")} == expected
    assert all(not (dup_folder / k).exists() for k in expected)
    # The library follows: re-indexed without the moved photos, and the groups are found again.
    wait_indexed(qtbot, tab)
    qtbot.waitUntil(lambda: not tab.finding, timeout=60_000)
    assert tab.session.index.count == len(before) - len(expected)
    assert not {k for grp in group_keys(tab) for k in grp} & expected

    assert bar.undo_button.isEnabled()
    bar.undo_button.click()
    qtbot.waitUntil(lambda: not tab.cleanup.acting, timeout=30_000)
    assert hashes(dup_folder) == before
    wait_indexed(qtbot, tab)
    assert tab.session.index.count == len(before)
    qtbot.waitUntil(lambda: not tab.finding, timeout=60_000)


def test_move_to_a_folder_asks_for_the_folder_when_clean_up_is_clicked(qtbot, tab, dup_folder, tmp_path,
                                                                       monkeypatch):
    """Issue: the button's clicked(bool) reached move_to: "Move 11 photos to False?", nothing moved."""
    dest = tmp_path / "chosen"
    dest.mkdir()
    asked_for_folder = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda *a, **k: asked_for_folder.append(a) or str(dest))
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    bar = tab.actions_bar
    bar.action_box.setCurrentIndex(bar.action_box.findData("move"))
    planned = {p.item.key for p in tab.selection.plan()}
    assert planned and bar.act_button.isEnabled()
    yes_to_cleanup(tab)
    qtbot.mouseClick(bar.act_button, Qt.MouseButton.LeftButton)
    assert asked_for_folder, "Clean up asks where to move the photos"
    assert tab.feedback.asked[-1]["text"].endswith(f"to {dest}?")
    qtbot.waitUntil(lambda: not tab.cleanup.acting, timeout=30_000)
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")} == planned
    assert not tab.feedback.errors
    wait_indexed(qtbot, tab)
    qtbot.waitUntil(lambda: not tab.finding, timeout=60_000)


def test_a_whole_group_is_never_removed(qtbot, tab, dup_folder):
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    g = tab.groups[0]
    for m in g.members:
        tab.selection.overrides[m.item.key] = True  # as if every box were ticked
    assert tab.selection.moving(g) == {m.item.key for m in g.members[1:]}  # the rules' choice stands
    before = hashes(dup_folder)
    yes_to_cleanup(tab)
    tab.actions_bar.none_action.trigger()
    tab.clean_up()
    assert "No photo is selected" in tab.actions_bar.status.text() and hashes(dup_folder) == before


def reopen(qtbot, tab, folder):
    open_folder(qtbot, tab, folder)


def store_calibration(tab, **changes):
    """Replace the library's calibration by an edited one (a later measurement: another created)."""
    s = tab.session
    cal = s.library.calibration(s.index.model_fingerprint)
    new = dataclasses.replace(cal, created=cal.created + 1, **changes)
    calibration.save(s.library.index_dir, new)
    return new


def test_the_slider_starts_at_the_calibrated_threshold_and_remembers_a_move(qtbot, tab, dup_folder):
    open_folder(qtbot, tab, dup_folder)
    stored = store_calibration(tab, threshold=0.9931)
    reopen(qtbot, tab, dup_folder)  # keeps the stored calibration: same model, same photos
    assert tab.threshold == 0.9931 and tab.calibration == stored
    assert tab.floor == pytest.approx(dedup.threshold_floor(0.9931))
    assert tab.strip.plot.calibration == stored and tab.strip.plot.value == 0.9931
    assert f"Calibrated on {stored.photos} of your photos" in tab.strip.caption.text()
    assert tab.bar.find_button.isEnabled() and not tab.strip.warning.isVisibleTo(tab)

    # A move of the slider is remembered for this calibration, across a reopen.
    find_groups(qtbot, tab, threshold=0.9960)
    moved = tab.threshold
    assert moved == pytest.approx(0.9960, abs=1e-4) and "at your" in tab.strip.caption.text()
    reopen(qtbot, tab, dup_folder)
    assert tab.threshold == pytest.approx(moved)

    # A new calibration starts from its own threshold again.
    store_calibration(tab, threshold=0.9911)
    reopen(qtbot, tab, dup_folder)
    assert tab.threshold == 0.9911


def test_an_unreliable_calibration_selects_nothing_and_says_so(qtbot, tab, dup_folder):
    open_folder(qtbot, tab, dup_folder)
    store_calibration(tab, reliable=False, separation=0.4)
    reopen(qtbot, tab, dup_folder)
    find_groups(qtbot, tab, threshold=None)
    strip = tab.strip
    assert tab.groups, "groups are still shown, to look at"
    assert strip.warning.isVisible() and UNRELIABLE_TEXT in strip.warning.text()
    assert strip.pretrained_button.isVisible() and strip.finetune_button.isVisible()  # an untrained model
    assert tab.planned() == (0, 0)
    tab.choose_group(0)
    assert all(not ticked(tab, r) for r in range(tab.members_model.rowCount()))
    assert not tab.actions_bar.act_button.isEnabled()
    # A photo ticked by hand is the only one selected.
    tick(tab, 1)
    assert tab.planned()[0] == 1
    # Moving the threshold is the user's decision: the rules choose as usual from then on.
    assert "Nothing is selected" in strip.warning.text()
    tab.set_threshold(GROUPING_THRESHOLD)
    assert tab.planned()[0] == sum(len(g.members) - 1 for g in tab.groups) > 1
    assert strip.warning.isVisible() and "Check each group" in strip.warning.text()
    # Fine-tune is the window's business: the tab asks for it.
    with qtbot.waitSignal(tab.finetune_requested):
        strip.finetune_button.click()


def test_only_sure_duplicates_are_ticked_and_similar_ones_are_marked_to_check(qtbot, tab, dup_folder):
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    g = next(g for g in tab.groups if g.keeper.key == "orig0.jpg")
    scores = {m.item.key: m.score for m in g.members}
    # A calibration whose typical edited copy sits between the re-compressed copy and the half-size
    # one: the half-size copy is then only similar, as another photo of the same subject would be.
    level = round((scores["copies/lowq0.jpg"] + scores["copies/small0.jpg"]) / 2, 6)  # as it is stored
    assert scores["copies/small0.jpg"] < level < scores["copies/lowq0.jpg"]
    stored = store_calibration(tab, positives=(level,))
    assert stored.sure_level == level
    reopen(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    assert tab.sure_level() == level
    g = next(g for g in tab.groups if g.keeper.key == "orig0.jpg")
    tab.choose_group(tab.groups.index(g))
    rows = {m.item.key: r for r, m in enumerate(g.members)}
    model = tab.members_model

    # The exact copy and the copy as alike as a typical edit are ticked; the similar one is not.
    assert ticked(tab, rows["other/orig0_again.jpg"]) and ticked(tab, rows["copies/lowq0.jpg"])
    assert not ticked(tab, rows["copies/small0.jpg"]) and not ticked(tab, rows["orig0.jpg"])
    similarity = model.index(rows["copies/small0.jpg"], SIMILARITY)
    assert model.data(similarity).endswith(" · check")
    assert model.data(similarity, Qt.ItemDataRole.ForegroundRole).color() == CHECK_COLOUR
    assert "check" not in model.data(model.index(rows["copies/lowq0.jpg"], SIMILARITY))
    assert tab.selection.moving(g) == {"other/orig0_again.jpg", "copies/lowq0.jpg"}
    sure = sum(len(grp.sure(level)) for grp in tab.groups)
    similar = sum(len(grp.to_check(level)) for grp in tab.groups)
    assert similar >= 1 and f"{sure} sure duplicates selected, {similar} similar to check" in tab.summary.text()
    assert tab.planned()[0] == sure

    # "Similar ones too" ticks the rest; "By the rules" goes back to the sure ones.
    act = tab.actions_bar
    assert act.similar_action.isEnabled()
    act.similar_action.trigger()
    assert tab.selection.moving(tab.current_group()) == {m.item.key for m in g.members[1:]}
    assert tab.planned()[0] == sure + similar and f"({similar} ticked)" in tab.summary.text()
    act.rules_action.trigger()
    assert tab.planned()[0] == sure
    # Invert swaps ticked and unticked, and one photo of each group still stays.
    act.invert_action.trigger()
    assert tab.selection.moving(g) == {"orig0.jpg", "copies/small0.jpg"}
    assert all(len(tab.selection.moving(grp)) < len(grp.members) for grp in tab.groups)
    assert ticked(tab, rows["orig0.jpg"]) and not ticked(tab, rows["copies/lowq0.jpg"])


def test_without_a_calibration_nothing_is_searched_until_it_is_measured(qtbot, tab, dup_folder, monkeypatch):
    def cannot(*_a, **_k):
        raise calibration.CalibrationError("calibration stopped")

    monkeypatch.setattr(calibration, "calibrate", cannot)  # as for a library indexed by an older version
    open_folder(qtbot, tab, dup_folder)
    s, strip = tab.session, tab.strip
    assert s.library.calibration(s.index.model_fingerprint) is None
    assert tab.threshold is None and not tab.bar.find_button.isEnabled() and not tab.bar.slider.isEnabled()
    assert strip.warning.isVisible() and "no duplicate threshold calibrated" in strip.warning.text()
    assert strip.calibrate_button.isVisible() and strip.calibrate_button.isEnabled()
    tab.find()
    assert tab.search is None and not tab.finding  # no threshold is invented

    monkeypatch.undo()
    strip.calibrate_button.click()  # an update measures it
    wait_indexed(qtbot, tab)
    cal = s.library.calibration(s.index.model_fingerprint)
    assert cal is not None and tab.threshold == cal.threshold
    assert tab.bar.find_button.isEnabled() and not strip.warning.isVisible() and not strip.calibrate_button.isVisible()


def test_hard_links_replace_exact_copies_and_undo_restores_them(qtbot, tab, dup_folder, private_trash):
    before = hashes(dup_folder)
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    bar = tab.actions_bar
    bar.action_box.setCurrentIndex(bar.action_box.findData("hardlink"))
    yes_to_cleanup(tab)
    qtbot.mouseClick(bar.act_button, Qt.MouseButton.LeftButton)
    # Only the byte-identical copy is linked; the edited copies ticked for removal stay as they are.
    assert tab.feedback.asked[-1]["text"].startswith("Replace 1 photos")
    qtbot.waitUntil(lambda: not tab.cleanup.acting, timeout=30_000)
    copy, original = dup_folder / "other" / "orig0_again.jpg", dup_folder / "orig0.jpg"
    assert copy.stat().st_ino == original.stat().st_ino and original.stat().st_nlink == 2
    assert hashes(dup_folder) == before and not tab.feedback.errors
    wait_indexed(qtbot, tab)
    qtbot.waitUntil(lambda: not tab.finding and bar.undo_button.isEnabled(), timeout=60_000)
    bar.undo_button.click()
    qtbot.waitUntil(lambda: not tab.cleanup.acting, timeout=30_000)
    assert copy.stat().st_ino != original.stat().st_ino and original.stat().st_nlink == 1
    assert hashes(dup_folder) == before
    wait_indexed(qtbot, tab)
    qtbot.waitUntil(lambda: not tab.finding, timeout=60_000)


def test_keeper_rules_order_and_protected_folders_are_edited_in_the_tab(qtbot, tab, dup_folder):
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    assert all(g.keeper.key.startswith("orig") for g in tab.groups)
    # Put "the shortest path" last and "the newest" first: the newest file of each group is kept.
    dialog = tab.edit_rules()
    rules = dialog.rules()
    assert rules[0] == "resolution"
    newest = next(r for r in range(dialog.list.count()) if dialog.list.item(r).data(Qt.ItemDataRole.UserRole)
                  == "newest")
    dialog.list.item(newest).setCheckState(Qt.CheckState.Checked)
    dialog.list.setCurrentRow(newest)
    for _ in range(newest):
        dialog.up_button.click()
    assert dialog.rules()[0] == "newest"
    dialog.accept()
    assert tab.rules()[0] == "newest" and tab.bar.keeper_box.currentText() == "Your order"
    for g in tab.groups:
        assert g.keeper.mtime_ns == max(m.item.mtime_ns for m in g.members)
    assert tab.session.settings.value("dedup/rules").startswith("newest,")

    # A protected folder is added and removed again from its menu.
    kept = [g.keeper.key for g in tab.groups]
    tab.add_reference(dup_folder / "copies")
    assert all(g.keeper.key.startswith("copies/") for g in tab.groups)
    menu = tab.bar.reference_menu
    stop = [a for a in menu.actions() if a.text().startswith("Stop protecting")]
    assert len(stop) == 1 and str(dup_folder / "copies") in stop[0].text()
    stop[0].trigger()
    assert tab.reference == [] and tab.bar.reference_button.text() == "Protected folders"
    assert [g.keeper.key for g in tab.groups] == kept


def test_group_thumbnails_show_without_a_click_and_captions_name_the_folder(qtbot, tab, dup_folder):
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    # Every group in view gets its keeper's thumbnail, the ones not clicked too.
    qtbot.waitUntil(lambda: all(tab.thumbnails.get(str(g.keeper.path)) is not None for g in tab.groups),
                    timeout=30_000)
    tab.choose_group(0)
    caption = tab.panes.member_caption.text()
    member = tab.current_member()
    assert member is not None and f"in {member.item.path.parent.relative_to(dup_folder).as_posix()}" in caption \
        or "in (top folder)" in caption


def test_at_1024_by_700_no_label_of_the_search_bar_is_cut(qtbot, tab, dup_folder):
    open_folder(qtbot, tab, dup_folder)
    find_groups(qtbot, tab)
    tab.resize(1024 - 20, 700 - 120)  # the window's frame, tab bar and toolbar take the rest
    qtbot.wait(50)
    bar = tab.bar
    for w in (bar.threshold_label, bar.invariant_box, bar.exact_box, bar.keeper_box, bar.rules_button,
              bar.find_button):
        assert w.width() >= w.sizeHint().width(), f"{type(w).__name__} {w.text() if hasattr(w, 'text') else ''}"
    label = bar.threshold_label
    assert label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width()
    assert tab.minimumSizeHint().width() <= 1024 - 20


def test_the_rule_order_dialog_offers_only_rules_core_knows(qtbot):
    from simviewer.gui.tabs.duplicates_panels import RULE_NAMES, KeepRulesDialog

    assert set(RULE_NAMES) == {r for r in dedup.RULE_HELP if ":" not in r}
    dialog = KeepRulesDialog(("size", "resolution"))
    qtbot.addWidget(dialog)
    assert dialog.rules() == ("size", "resolution")  # the ticked ones, in their order
    dialog.list.setCurrentRow(1)
    dialog.up_button.click()
    assert dialog.rules() == ("resolution", "size")
    dialog.list.item(dialog.list.count() - 1).setCheckState(Qt.CheckState.Checked)
    assert len(dialog.rules()) == 3


def test_a_raw_jpeg_pair_is_grouped_as_a_pair_and_not_ticked(qtbot, tab, tmp_path):
    import numpy as np

    from simviewer.core.dedup.selection import WHOLE_SHOT

    from ..rawfiles import dng_bytes, jpeg_preview

    root = tmp_path / "photos"
    (root / "cam").mkdir(parents=True)
    for n, seed in ((7, 60), (8, 61)):
        im = make_photo(seed)
        (root / "cam" / f"IMG_{n}.DNG").write_bytes(dng_bytes(np.asarray(im, np.float32) / 255, jpeg_preview(im)))
        write_jpeg(root / "cam" / f"IMG_{n}.JPG", im)
    (root / "backup").mkdir()
    (root / "backup" / "IMG_7.JPG").write_bytes((root / "cam" / "IMG_7.JPG").read_bytes())
    write_jpeg(root / "loner.jpg", make_photo(62))
    before = {p.relative_to(root).as_posix(): file_digest(p) for p in root.rglob("*") if p.is_file()}
    open_folder(qtbot, tab, root)
    find_groups(qtbot, tab)
    # Across shots the pair is one item: the backup copy is judged against the shot (both files in one
    # member), and is the one thing the rules tick; neither file of a shot is ever a duplicate of the other.
    (g,) = tab.groups
    shot, backup = g.members
    assert {it.key for it in shot.files} == {"cam/IMG_7.DNG", "cam/IMG_7.JPG"}
    assert backup.item.key == "backup/IMG_7.JPG" and backup.exact
    assert tab.selection.moving(g) == {"backup/IMG_7.JPG"}
    # The last entry of the list is the pairs: each shot's RAW beside its JPEG, nothing ticked.
    rows = tab.groups_model.rowCount()
    assert rows == 2 and tab.groups_model.data(tab.groups_model.index(1)).startswith("RAW+JPEG pairs (2)")
    tab.choose_group(1)
    model = tab.members_model
    assert [m.item.key for m in model.group.members] == ["cam/IMG_7.DNG", "cam/IMG_7.JPG", "cam/IMG_8.DNG",
                                                         "cam/IMG_8.JPG"]
    assert not any(ticked(tab, r) for r in range(4))
    assert model.data(model.index(0, SIMILARITY)) == "RAW+JPEG pair"
    assert tick(tab, 1) and not tick(tab, 0)  # one file of each shot always stays
    assert tab.actions_bar.status.text() == WHOLE_SHOT
    # Select → Keep the RAW of each pair ticks every JPEG of a pair, and the clean-up moves them, undoably.
    assert tab.actions_bar.keep_raw_action.isEnabled()
    tab.actions_bar.keep_raw_action.trigger()
    assert [ticked(tab, r) for r in range(4)] == [False, True, False, True]
    assert tab.planned()[0] == 3  # the two JPEGs of the pairs and the backup copy
    yes_to_cleanup(tab)
    bar = tab.actions_bar
    bar.action_box.setCurrentIndex(bar.action_box.findData("move"))
    dest = tmp_path / "removed"
    tab.clean_up(move_to=dest)
    qtbot.waitUntil(lambda: not tab.cleanup.acting, timeout=30_000)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.JPG")) == [
        "backup/IMG_7.JPG", "cam/IMG_7.JPG", "cam/IMG_8.JPG"]
    assert (root / "cam" / "IMG_7.DNG").is_file() and (root / "cam" / "IMG_8.DNG").is_file()
    wait_indexed(qtbot, tab)
    qtbot.waitUntil(lambda: not tab.cleanup.acting and bar.undo_button.isEnabled(), timeout=30_000)
    bar.undo_button.click()
    qtbot.waitUntil(lambda: not tab.cleanup.acting, timeout=30_000)
    assert {p.relative_to(root).as_posix(): file_digest(p) for p in root.rglob("*") if p.is_file()} == before
    wait_indexed(qtbot, tab)
    qtbot.waitUntil(lambda: not tab.finding, timeout=60_000)
