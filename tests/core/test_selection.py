"""The Duplicates selection without a window: the rules' choice, ticks, keep only, invert, the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from simviewer.core.dedup import Group, Item, Member
from simviewer.core.dedup.selection import PROTECTED, WHOLE_GROUP, Selection

ROOT = Path("/photos")
SURE = 0.99


def item(key: str, h: str | None = None, size: int = 100) -> Item:
    return Item(key, ROOT / key, h or f"hash-{key}", size, 0, 10, 10, None)


def group(keeper: Item, *others: tuple[Item, float]) -> Group:
    return Group((Member(keeper, 1.0, True),
                  *(Member(it, score, it.hash == keeper.hash) for it, score in others)))


@pytest.fixture
def groups():
    """a: an exact copy, an edited copy (sure) and a similar photo; b: a keeper loosely matched to
    three identical copies of an unrelated photo."""
    a = group(item("a.jpg"), (item("copy/a.jpg", "hash-a.jpg", 200), 1.0), (item("a_small.jpg", size=50), 0.995),
              (item("a_burst.jpg", size=80), 0.95))
    b = group(item("b.jpg"), *((item(f"c{i}.jpg", "hash-c"), 0.97) for i in range(3)))
    return [a, b]


def keys(g: Group, *idx: int) -> set[str]:
    return {g.members[i].item.key for i in idx}


def test_the_rules_tick_only_sure_duplicates(groups):
    a, b = groups
    sel = Selection(groups, sure_level=SURE)
    assert sel.moving(a) == keys(a, 1, 2)  # the similar burst shot is shown, not ticked
    assert sel.moving(b) == set()  # only a loose match holds b together
    assert sel.planned() == (2, 250)
    assert sel.counts() == (2, 4, 0)
    assert sel.keeper(a) is a.members[0]
    plan = sel.plan()
    assert {p.item.key for p in plan} == keys(a, 1, 2) and {p.group_keeper.key for p in plan} == {"a.jpg"}


def test_without_a_sure_level_only_exact_copies_and_with_use_rules_off_nothing(groups):
    a, _ = groups
    assert Selection(groups).moving(a) == keys(a, 1)
    sel = Selection(groups, sure_level=SURE, use_rules=False)
    assert sel.planned() == (0, 0)
    sel.by_rules()
    assert sel.moving(a) == keys(a, 1, 2)


def test_every_copy_of_one_content_is_never_ticked(groups):
    _, b = groups
    sel = Selection(groups, sure_level=0.9)  # even if the loose match were taken as sure
    assert sel.moving(b) == keys(b, 1, 2)  # one of the three identical copies stays
    sel = Selection(groups, sure_level=SURE)
    assert sel.toggle(b, "c0.jpg", True) is None
    assert sel.toggle(b, "c1.jpg", True) is None
    why = sel.toggle(b, "c2.jpg", True)
    assert why is not None and "3 identical copies" in why
    assert sel.moving(b) == {"c0.jpg", "c1.jpg"}
    sel.select_similar()
    assert len(sel.moving(b) & {"c0.jpg", "c1.jpg", "c2.jpg"}) == 2


def test_toggle_refuses_the_whole_group_and_protected_photos(groups):
    a, _ = groups
    sel = Selection(groups, sure_level=SURE, reference=[ROOT / "copy"])
    assert sel.moving(a) == keys(a, 2)  # the copy in the protected folder is never ticked
    assert sel.toggle(a, "copy/a.jpg", True) == PROTECTED
    assert sel.toggle(a, "a_burst.jpg", True) is None
    assert sel.toggle(a, "a.jpg", False) is None  # already unticked: fine
    sel2 = Selection([a], sure_level=SURE)
    for k in ("a_small.jpg", "a_burst.jpg", "copy/a.jpg"):
        assert sel2.toggle(a, k, True) is None
    assert sel2.toggle(a, "a.jpg", True) == WHOLE_GROUP
    assert "a.jpg" not in sel2.moving(a)
    # Unticking works, and the moving set follows.
    assert sel2.toggle(a, "copy/a.jpg", False) is None
    assert sel2.moving(a) == {"a_small.jpg", "a_burst.jpg"}


def test_keep_only_moves_the_others_and_the_star_follows(groups):
    a, _ = groups
    sel = Selection(groups, sure_level=SURE)
    sel.keep_only(a, "a_burst.jpg")
    assert sel.moving(a) == keys(a, 0, 2)  # one of the two identical originals stays
    assert sel.keeper(a).item.key == "a_burst.jpg"
    assert [p.item.key for p in sel.plan()] == ["a.jpg", "a_small.jpg"]
    sel.toggle(a, "a_burst.jpg", True)  # the chosen one ticked after all: the star moves on
    assert sel.keeper(a).item.key == "copy/a.jpg"


def test_invert_swaps_ticks_and_keeps_one_of_each_group(groups):
    a, b = groups
    sel = Selection(groups, sure_level=SURE)
    sel.invert()
    assert sel.moving(a) == keys(a, 0, 3)  # the keeper and the burst shot now, the copies stay
    assert sel.keeper(a).item.key == "copy/a.jpg"
    # b had nothing ticked: everything would move, so the last of the identical copies stays.
    assert sel.moving(b) == keys(b, 0, 1, 2)
    sel.invert()
    assert sel.moving(a) == keys(a, 1, 2)


def test_select_none_then_a_new_grouping_keeps_the_ticks(groups):
    a, b = groups
    sel = Selection(groups, sure_level=SURE)
    sel.select_none()
    assert sel.planned() == (0, 0)
    sel.set_groups([a])
    assert sel.moving(a) == set()
    sel.clear()
    assert sel.moving(a) == keys(a, 1, 2)


def test_unsafe_overrides_fall_back_to_the_rules(groups):
    a, _ = groups
    sel = Selection(groups, sure_level=SURE)
    for m in a.members:
        sel.overrides[m.item.key] = True  # as if every box were ticked
    assert sel.moving(a) == keys(a, 1, 2)
    assert {p.item.key for p in sel.plan()} == keys(a, 1, 2)



def test_raw_jpeg_pairs_are_never_ticked_until_one_kind_is_kept(groups):
    from simviewer.core.dedup.pairs import pairs_group
    from simviewer.core.dedup.selection import WHOLE_SHOT

    shots = [item("s/IMG_1.CR2", size=900), item("s/IMG_1.JPG"), item("s/IMG_2.NEF", size=800),
             item("s/img_2.jpeg"), item("s/IMG_3.JPG")]  # IMG_3 has no RAW: no pair
    pairs = pairs_group(shots)
    assert pairs.pair and [m.item.key for m in pairs.members] == [
        "s/IMG_1.CR2", "s/IMG_1.JPG", "s/IMG_2.NEF", "s/img_2.jpeg"]  # side by side, the RAW first
    sel = Selection([*groups, pairs], sure_level=SURE)
    assert sel.moving(pairs) == set() and sel.counts() == (2, 4, 0)  # not ticked, not counted as duplicates
    sel.select_similar()
    sel.invert()
    assert sel.moving(pairs) == set()  # the bulk ticks leave the pairs alone
    sel.select_none()
    assert sel.toggle(pairs, "s/IMG_1.JPG", True) is None
    assert sel.toggle(pairs, "s/IMG_1.CR2", True) == WHOLE_SHOT  # one file of each shot stays
    sel.keep_kind("raw")
    assert sel.moving(pairs) == {"s/IMG_1.JPG", "s/img_2.jpeg"}
    plan = sel.plan()
    assert {(p.item.key, p.group_keeper.key) for p in plan} == {
        ("s/IMG_1.JPG", "s/IMG_1.CR2"), ("s/img_2.jpeg", "s/IMG_2.NEF")}
    assert sel.planned() == (2, 200)
    sel.keep_kind("jpeg")
    assert sel.moving(pairs) == {"s/IMG_1.CR2", "s/IMG_2.NEF"} and sel.planned() == (2, 1700)
    sel.keep_only(pairs, "s/IMG_1.CR2")  # keep this one of its shot: its JPEG goes instead
    assert sel.moving(pairs) == {"s/IMG_1.JPG", "s/IMG_2.NEF"}
    sel.clear()
    assert sel.moving(pairs) == set()
    protected = Selection([pairs], reference=[ROOT / "s"])
    protected.keep_kind("raw")
    assert protected.moving(pairs) == set() and protected.plan() == []
