"""RAW+JPEG pairs of one shot: never duplicates of each other; one kind goes only when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simviewer.core import dedup
from simviewer.core.dedup import DedupError, GroupingOptions, Item, Neighbours
from simviewer.core.dedup.pairs import plan_shot_removals, shots

LIB = Path("/no-such-lib")


def items_of(*specs: tuple[str, str, int]) -> list[Item]:
    return [Item(k, LIB / k, h, 100, 0, px, px, None) for k, h, px in specs]


def test_a_raw_and_its_jpeg_are_one_shot_never_a_keeper_and_duplicate():
    items = items_of(("IMG_1.CR2", "raw1", 900), ("IMG_1.JPG", "jpg1", 800), ("backup/IMG_1.JPG", "jpg1", 800),
                     ("img_2.nef", "raw2", 900), ("IMG_2.jpeg", "jpg2", 800), ("IMG_3.JPG", "jpg3", 800))
    assert shots(items) == {0: 0, 1: 0, 3: 1, 4: 1}  # same folder, same name in any case; IMG_3 is alone
    # The RAW and its JPEG look alike; the JPEG also has a byte-identical backup elsewhere.
    nb = Neighbours(items, np.array([0, 1, 0, 3]), np.array([1, 2, 2, 4]), np.array([0.99, 1.0, 0.99, 0.99]), 0.9)
    for rules in (dedup.DEFAULT_RULES, ("jpeg", "resolution"), ("raw",)):
        groups = dedup.group(nb, GroupingOptions(0.95, rules=rules))
        for g in groups:
            keys = {m.item.key for m in g.members}
            assert not {"IMG_1.CR2", "IMG_1.JPG"} <= keys and not {"img_2.nef", "IMG_2.jpeg"} <= keys
        assert all("img_2" not in m.item.key.lower() for g in groups for m in g.members)  # a lone pair: no group
    # The backup copy is still found as a duplicate of the shot's JPEG (or of the RAW by the rules).
    (g,) = dedup.group(nb, GroupingOptions(0.95, rules=("jpeg", "shortest-path")))
    assert [m.item.key for m in g.members] == ["IMG_1.JPG", "backup/IMG_1.JPG"]
    (g,) = dedup.group(nb, GroupingOptions(0.95, rules=("raw",)))
    assert g.keeper.key == "IMG_1.CR2" and [m.item.key for m in g.members[1:]] == ["backup/IMG_1.JPG"]
    assert [p.item.key for p in dedup.plan_removals([g])] == []  # not byte-identical to the RAW: not sure


@pytest.mark.parametrize("keep", ["raw", "jpeg"])
def test_one_kind_of_each_pair_goes_only_when_asked(keep):
    items = items_of(("a/IMG_1.CR2", "r1", 900), ("a/IMG_1.JPG", "j1", 800), ("b/IMG_1.JPG", "j9", 800),
                     ("a/IMG_2.ARW", "r2", 900), ("a/IMG_2.jpg", "j2", 800))
    plan = plan_shot_removals(items, keep)
    gone = "raw" if keep == "jpeg" else "jpeg"
    assert sorted(p.item.key for p in plan) == (
        ["a/IMG_1.JPG", "a/IMG_2.jpg"] if gone == "jpeg" else ["a/IMG_1.CR2", "a/IMG_2.ARW"])
    assert all(p.group_keeper.path.parent == p.item.path.parent and
               p.group_keeper.path.stem == p.item.path.stem for p in plan)
    with pytest.raises(DedupError, match="raw' or 'jpeg"):
        plan_shot_removals(items, "png")
    assert dedup.rule_key(("raw",))(items[0]) < dedup.rule_key(("raw",))(items[1])
    assert dedup.rule_key(("jpeg",))(items[1]) < dedup.rule_key(("jpeg",))(items[0])
