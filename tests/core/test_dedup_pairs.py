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
    for rules in (dedup.DEFAULT_RULES, ("jpeg", "resolution"), ("raw",), ("shortest-path",)):
        groups = dedup.group(nb, GroupingOptions(0.95, rules=rules))
        assert all("img_2" not in m.item.key.lower() for g in groups for m in g.members)  # a lone pair: no group
        # The shot is one item: its lead (the kind the rules prefer) stands for it, its partner rides
        # along; the backup is judged against the shot, and is a byte-identical copy of its JPEG.
        (g,) = groups
        shot, backup = g.members
        assert {shot.item.key, *(p.key for p in shot.partners)} == {"IMG_1.CR2", "IMG_1.JPG"}
        assert shot.item.key == ("IMG_1.JPG" if rules[0] == "jpeg" else "IMG_1.CR2")
        assert backup.item.key == "backup/IMG_1.JPG" and backup.exact and not backup.partners
        # The backup goes; the shot keeps both of its files.
        assert [p.item.key for p in dedup.plan_removals([g])] == ["backup/IMG_1.JPG"]
        assert g.reclaimable == 100
        # Reports name the shot's partner beside it, so a script sees every file a clean-up touches.
        (first, second) = dedup.report_dict([g], 0.95)["groups"][0]["items"]
        assert first["partners"] == [str(p.path) for p in shot.partners] and "partners" not in second
        rows = dedup.csv_text([g]).splitlines()
        assert rows[0].endswith(",partners") and rows[1].endswith(str(shot.partners[0].path))


def test_a_shot_that_is_not_the_keeper_moves_whole_and_is_never_sure():
    items = items_of(("ref/IMG_1.JPG", "jpg1", 800), ("a/IMG_1.CR2", "raw1", 900), ("a/IMG_1.JPG", "jpg1", 800))
    nb = Neighbours(items, np.array([0, 0]), np.array([1, 2]), np.array([0.97, 1.0]), 0.9)
    (g,) = dedup.group(nb, GroupingOptions(0.95, reference=(LIB / "ref",)))
    keeper, shot = g.members
    assert keeper.item.key == "ref/IMG_1.JPG" and shot.exact and not dedup.is_sure(shot, 0.9)
    assert dedup.plan_removals([g]) == []  # the RAW is a copy of nothing: never pre-selected
    plan = dedup.plan_removals([g], selected={"ref/IMG_1.JPG": {shot.item.key}})
    assert sorted(p.item.key for p in plan) == ["a/IMG_1.CR2", "a/IMG_1.JPG"]  # ticked: the shot moves whole
    assert g.reclaimable == 200


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
