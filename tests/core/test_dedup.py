"""Duplicate groups, keeper rules, the "not duplicates" list, and undoable clean-ups."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from simviewer.core import dedup
from simviewer.core.catalog import Catalog
from simviewer.core.dedup import DedupError, GroupingOptions, Item, Neighbours
from simviewer.core.embedder import Embedder
from simviewer.core.library import IndexSummary, Library

from ..conftest import EDITS, bump_mtime, make_photo, write_jpeg

THRESHOLD = 0.998  # untrained ResNet-18: edited copies >= 0.9993, different pictures <= 0.997


def index_folder(root: Path) -> Library:
    lib = Library(root)
    events = list(lib.update(Embedder("resnet18", "none")))
    assert isinstance(events[-1], IndexSummary)
    return lib


def groups_of(lib: Library, **kw) -> list[dedup.Group]:
    index = lib.load_index()
    with lib.open_catalog() as cat:
        items = dedup.load_items(cat, index, lib.folder)
        ignored = frozenset(cat.ignored_pairs())
    nb = Neighbours.compute(index, items, floor=min(kw.get("threshold", THRESHOLD), 0.99))
    opts = GroupingOptions(**{"threshold": THRESHOLD, "ignored": ignored, **kw})
    return dedup.group(nb, opts)


@pytest.fixture
def dup_folder(tmp_path) -> Path:
    """Five originals with a resized and a re-compressed copy each, four loners, one exact copy."""
    root = tmp_path / "photos"
    for i in range(5):
        im = make_photo(50 + i)
        write_jpeg(root / f"orig{i}.jpg", im)
        write_jpeg(root / "copies" / f"small{i}.jpg", EDITS["resized"](im))
        write_jpeg(root / "copies" / f"lowq{i}.jpg", im, quality=35)
    for i in range(4):
        write_jpeg(root / "other" / f"loner{i}.jpg", make_photo(80 + i))
    (root / "other" / "orig0_again.jpg").write_bytes((root / "orig0.jpg").read_bytes())
    return root


def test_groups_on_synthetic_edits(dup_folder):
    lib = index_folder(dup_folder)
    groups = groups_of(lib)
    found = sorted(sorted(m.item.key for m in g.members) for g in groups)
    expected = sorted(
        sorted([f"orig{i}.jpg", f"copies/small{i}.jpg", f"copies/lowq{i}.jpg"] + (["other/orig0_again.jpg"] if i == 0
                                                                                  else []))
        for i in range(5)
    )
    assert found == expected
    for g in groups:
        assert g.keeper.key.startswith("orig")  # most pixels, then the larger (better) file
        assert all(m.score >= THRESHOLD for m in g.members)
    g0 = next(g for g in groups if g.keeper.key == "orig0.jpg")
    exact = {m.item.key for m in g0.members[1:] if m.exact}
    assert exact == {"other/orig0_again.jpg"}
    assert g0.reclaimable == sum(m.item.size for m in g0.members[1:])


def fake_items(specs) -> list[Item]:
    return [Item(k, Path("/no-such-lib") / k, h, size, 0, w, w, taken) for k, h, size, w, taken in specs]


def test_no_chaining_through_a_middle_photo():
    # A~B and B~C are close, A~C is not: A (the keeper by resolution) must not pull C in.
    items = fake_items([("a.jpg", "ha", 10, 400, None), ("b.jpg", "hb", 10, 300, None), ("c.jpg", "hc", 10, 200, None)])
    nb = Neighbours(items, np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([0.97, 0.97, 0.90]), 0.8)
    groups = dedup.group(nb, GroupingOptions(threshold=0.95))
    assert [[m.item.key for m in g.members] for g in groups] == [["a.jpg", "b.jpg"]]
    # With B as the keeper (most pixels), both A and C are within the threshold of it.
    items[1] = Item("b.jpg", Path("/no-such-lib/b.jpg"), "hb", 10, 0, 500, 500, None)
    groups = dedup.group(Neighbours(items, nb.i, nb.j, nb.score, 0.8), GroupingOptions(threshold=0.95))
    assert [[m.item.key for m in g.members] for g in groups] == [["b.jpg", "a.jpg", "c.jpg"]]


def sure_and_similar_group() -> dedup.Group:
    """A keeper with an exact copy (same content), an edited copy at 0.95 and a look-alike at 0.80
    (another photo of the same subject), all above the threshold of 0.70."""
    items = fake_items([("keep.jpg", "hk", 30, 400, None), ("keep_copy.jpg", "hk", 30, 400, None),
                        ("crop.jpg", "hc", 20, 300, None), ("other_view.jpg", "hv", 20, 300, None)])
    # Pairs of the same content score 1.0 (Neighbours.search does that).
    nb = Neighbours(items, np.array([0, 0, 0, 1, 1, 2]), np.array([1, 2, 3, 2, 3, 3]),
                    np.array([1.0, 0.95, 0.80, 0.95, 0.80, 0.78]), 0.5)
    (g,) = dedup.group(nb, GroupingOptions(threshold=0.70, rules=("resolution", "shortest-path")))
    assert [m.item.key for m in g.members] == ["keep.jpg", "keep_copy.jpg", "crop.jpg", "other_view.jpg"]
    return g


def test_only_sure_duplicates_are_planned_by_default():
    g = sure_and_similar_group()
    assert [m.item.key for m in g.sure(0.9)] == ["keep_copy.jpg", "crop.jpg"]
    assert [m.item.key for m in g.to_check(0.9)] == ["other_view.jpg"]
    assert dedup.is_sure(g.members[1], 1.0) and not dedup.is_sure(g.members[2], None)  # exact copies always
    planned = [p.item.key for p in dedup.plan_removals([g], sure_level=0.9)]
    assert planned == ["keep_copy.jpg", "crop.jpg"]
    # Without a sure level only the exact copy is sure; asked for, every similar one too.
    assert [p.item.key for p in dedup.plan_removals([g])] == ["keep_copy.jpg"]
    assert [p.item.key for p in dedup.plan_removals([g], sure_level=0.9, include_similar=True)] == [
        "keep_copy.jpg", "crop.jpg", "other_view.jpg"]
    # The user's own choice stands, similar or not; the old guarantees hold.
    chosen = dedup.plan_removals([g], selected={"keep.jpg": {"other_view.jpg"}}, sure_level=0.9)
    assert [p.item.key for p in chosen] == ["other_view.jpg"]
    ref = (Path("/no-such-lib/crop.jpg"),)
    assert [p.item.key for p in dedup.plan_removals([g], reference=ref, sure_level=0.9)] == ["keep_copy.jpg"]
    with pytest.raises(DedupError, match="every copy"):
        dedup.plan_removals([g], selected={"keep.jpg": {m.item.key for m in g.members}}, sure_level=0.9)
    report = dedup.report_dict([g], 0.70, sure_level=0.9)
    assert [it["sure"] for it in report["groups"][0]["items"]] == [True, True, True, False]


def unrelated_keeper_group(score: float) -> dedup.Group:
    """The report: a large unrelated picture as the keeper, matched at *score* to three
    byte-identical copies of another photo (as Neighbours.search scores them: 1.0 to each other)."""
    items = fake_items([("big_unrelated.jpg", "hk", 90, 800, None), ("a/photo.jpg", "ha", 30, 400, None),
                        ("b/photo.jpg", "ha", 30, 400, None), ("c/photo.jpg", "ha", 30, 400, None)])
    nb = Neighbours(items, np.array([0, 0, 0, 1, 1, 2]), np.array([1, 2, 3, 2, 3, 3]),
                    np.array([score, score, score, 1.0, 1.0, 1.0]), 0.5)
    (g,) = dedup.group(nb, GroupingOptions(threshold=0.70))
    assert g.keeper.key == "big_unrelated.jpg" and len(g.members) == 4
    return g


def test_a_loose_match_never_sends_every_copy_of_a_photo_away():
    # Only loosely held together (below the sure level): nothing is pre-selected.
    loose = unrelated_keeper_group(0.80)
    assert dedup.plan_removals([loose], sure_level=0.9) == []
    # Asked to move the similar ones too, the copies go but one: the photo itself stays.
    moved = [p.item.key for p in dedup.plan_removals([loose], sure_level=0.9, include_similar=True)]
    assert moved == ["a/photo.jpg", "b/photo.jpg"]
    # Scored as sure (a model fooled by a look-alike): still one copy of the content stays.
    fooled = unrelated_keeper_group(0.95)
    assert [p.item.key for p in dedup.plan_removals([fooled], sure_level=0.9)] == ["a/photo.jpg", "b/photo.jpg"]
    assert dedup.last_copy(fooled, {"a/photo.jpg", "b/photo.jpg"}) is None
    assert dedup.last_copy(fooled, {"a/photo.jpg", "b/photo.jpg", "c/photo.jpg"}).key == "a/photo.jpg"
    # Ticked by hand, every copy is refused, two of three are not.
    with pytest.raises(DedupError, match="every identical copy of photo.jpg"):
        dedup.plan_removals([fooled], selected={"big_unrelated.jpg": {"a/photo.jpg", "b/photo.jpg", "c/photo.jpg"}})
    chosen = dedup.plan_removals([fooled], selected={"big_unrelated.jpg": {"b/photo.jpg", "c/photo.jpg"}})
    assert [p.item.key for p in chosen] == ["b/photo.jpg", "c/photo.jpg"]
    # The copies of the keeper's own content may all go: the keeper is one of them.
    g = sure_and_similar_group()
    assert [p.item.key for p in dedup.plan_removals([g], selected={"keep.jpg": {"keep_copy.jpg"}})] == [
        "keep_copy.jpg"]


def test_keeper_rules_and_their_tie_order(tmp_path):
    def keeper(specs, rules, reference=()):
        items = fake_items(specs)
        n = len(items)
        i, j = np.triu_indices(n, 1)
        nb = Neighbours(items, i, j, np.full(len(i), 0.99), 0.8)
        return dedup.group(nb, GroupingOptions(threshold=0.95, rules=rules, reference=reference))[0].keeper.key

    same_res = [("x/long/name.jpg", "h1", 500, 100, 2000.0), ("a.jpg", "h2", 900, 100, 3000.0),
                ("b.jpg", "h3", 900, 100, 1000.0)]
    assert keeper(same_res, ("resolution",)) == "a.jpg"  # full tie: the path decides
    assert keeper(same_res, ("resolution", "size", "oldest")) == "b.jpg"  # size ties a/b, oldest breaks it
    assert keeper(same_res, ("resolution", "size", "newest")) == "a.jpg"
    assert keeper(same_res, ("oldest",)) == "b.jpg"
    assert keeper(same_res, ("shortest-path",)) == "a.jpg"
    assert keeper(same_res, ("folder:/no-such-lib/x", "size")) == "x/long/name.jpg"
    assert keeper(same_res, ("size",), reference=(Path("/no-such-lib/x"),)) == "x/long/name.jpg"  # reference wins first
    with pytest.raises(DedupError, match="unknown keeper rule"):
        keeper(same_res, ("prettiest",))


def test_not_duplicates_list_survives_a_restart(dup_folder):
    lib = index_folder(dup_folder)
    g = next(g for g in groups_of(lib) if g.keeper.key == "orig1.jpg")
    small = next(m.item for m in g.members if m.item.key == "copies/small1.jpg")
    with Catalog(lib.catalog_path) as cat:
        cat.ignore_pair(g.keeper.hash, small.hash)
    # A new Library object and catalog connection: as after restarting the app.
    lib2 = Library(dup_folder)
    g1 = next(g for g in groups_of(lib2) if g.keeper.key == "orig1.jpg")
    assert "copies/small1.jpg" not in {m.item.key for m in g1.members}
    # Renaming the file keeps the mark: it is stored by content.
    (dup_folder / "copies" / "small1.jpg").rename(dup_folder / "copies" / "renamed.jpg")
    index_folder(dup_folder)
    g1 = next(g for g in groups_of(lib2) if g.keeper.key == "orig1.jpg")
    assert "copies/renamed.jpg" not in {m.item.key for m in g1.members}


def test_similarity_range_leaves_exact_copies_out(dup_folder):
    lib = index_folder(dup_folder)
    groups = groups_of(lib, max_score=0.99999)
    assert all(not m.exact for g in groups for m in g.members[1:])
    assert "other/orig0_again.jpg" not in {m.item.key for g in groups for m in g.members}


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): dedup.file_digest(p) for p in sorted(root.rglob("*.jpg"))}


@pytest.mark.parametrize("mode", ["trash", "move"])
def test_clean_up_then_undo_restores_every_byte(dup_folder, tmp_path, private_trash, mode):
    before = snapshot(dup_folder)
    lib = index_folder(dup_folder)
    groups = groups_of(lib)
    plan = dedup.plan_removals(groups, sure_level=THRESHOLD)
    assert len(plan) == 11  # two copies per original, plus the exact copy of orig0
    target = tmp_path / "removed"
    result = list(dedup.execute(plan, mode, lib.journal_dir, lib.folder, target if mode == "move" else None))[-1]
    assert len(result.moved) == 11 and not result.skipped
    after = snapshot(dup_folder)
    assert set(after) == {k for k in before if k.startswith(("orig", "other/loner"))}
    if mode == "move":
        assert snapshot(target) == {k: v for k, v in before.items() if k not in after}
    else:
        assert len(list((private_trash / "files").iterdir())) == 11
    # The catalog and index follow the moves ...
    index_folder(dup_folder)
    assert len(lib.load_index().all_keys()) == len(after)
    # ... and Undo puts every byte back, without re-embedding anything.
    undo = list(dedup.undo(result.journal))[-1]
    assert len(undo.moved) == 11 and not undo.skipped
    assert snapshot(dup_folder) == before
    embedder = Embedder("resnet18", "none")
    summary = list(lib.update(embedder))[-1]
    assert summary.embedded == 0 and summary.indexed == len(before)
    if mode == "trash":
        assert not list((private_trash / "files").iterdir()) and not list((private_trash / "info").iterdir())


def test_refusals_protect_groups_and_reference_folders(dup_folder, tmp_path):
    lib = index_folder(dup_folder)
    groups = groups_of(lib)
    g = groups[0]
    with pytest.raises(DedupError, match="every copy"):
        dedup.plan_removals([g], selected={g.keeper.key: {m.item.key for m in g.members}})
    g0 = next(g for g in groups if g.keeper.key == "orig0.jpg")
    with pytest.raises(DedupError, match="reference folder"):  # chosen explicitly: refused
        dedup.plan_removals([g0], selected={"orig0.jpg": {"copies/small0.jpg"}}, reference=(dup_folder / "copies",))
    # By default, members inside a reference folder are simply not planned.
    plan = dedup.plan_removals(groups, reference=(dup_folder / "copies",), include_similar=True)
    assert plan and all(not p.item.key.startswith("copies/") for p in plan)
    # A reference folder's photo is preferred as keeper, so plain plans never touch it.
    ref_groups = groups_of(lib, reference=(dup_folder / "copies",))
    plan = dedup.plan_removals(ref_groups, reference=(dup_folder / "copies",), include_similar=True)
    assert plan and all("copies/" not in p.item.key for p in plan)
    with pytest.raises(DedupError, match="inside the library"):
        list(dedup.execute(plan, "move", lib.journal_dir, lib.folder, dup_folder / "trash-here"))


def test_files_changed_since_indexing_are_left_alone(dup_folder, tmp_path):
    lib = index_folder(dup_folder)
    plan = dedup.plan_removals(groups_of(lib), include_similar=True)
    victim = plan[0].item.path
    bump_mtime(victim)
    result = list(dedup.execute(plan, "move", lib.journal_dir, lib.folder, tmp_path / "out"))[-1]
    assert victim.exists() and [p for p, _ in result.skipped] == [str(victim)]
    assert "changed since it was indexed" in result.skipped[0][1]


def test_invariant_matching_finds_mirrored_and_rotated_copies(tmp_path):
    root = tmp_path / "photos"
    originals = {}
    for i in range(3):
        im = make_photo(120 + i)
        originals[i] = im
        write_jpeg(root / f"orig{i}.jpg", im)
    write_jpeg(root / "mirror0.jpg", originals[0].transpose(0))  # FLIP_LEFT_RIGHT
    write_jpeg(root / "rot1.jpg", originals[1].rotate(90, expand=True))
    write_jpeg(root / "rot2.jpg", originals[2].rotate(270, expand=True))  # covered from its own side
    lib = index_folder(root)
    index = lib.load_index()
    with lib.open_catalog() as cat:
        items = dedup.load_items(cat, index, lib.folder)
    opts = GroupingOptions(threshold=THRESHOLD)
    plain = dedup.group(Neighbours.compute(index, items, floor=0.99), opts)
    plain_pairs = {tuple(sorted(m.item.key for m in g.members)): g.members[1].score for g in plain}
    assert ("orig1.jpg", "rot1.jpg") not in plain_pairs, "a rotation defeats the network alone"
    assert ("orig2.jpg", "rot2.jpg") not in plain_pairs

    embedder = Embedder("resnet18", "none")
    events = list(dedup.variant_vectors(lib, embedder, [(it.hash, it.path) for it in items]))
    variants = events[-1].vectors
    assert set(variants) == {"mirror", "rot90", "rot180"}
    assert all(len(v) == len(items) for v in variants.values())
    groups = dedup.group(Neighbours.compute(index, items, floor=0.99, variants=variants), opts)
    found = sorted(sorted(m.item.key for m in g.members) for g in groups)
    assert found == [["mirror0.jpg", "orig0.jpg"], ["orig1.jpg", "rot1.jpg"], ["orig2.jpg", "rot2.jpg"]]
    assert {m.via for g in groups for m in g.members[1:]} <= {"mirror", "rot90"}
    mirrored = next(g for g in groups if "orig0.jpg" in {m.item.key for m in g.members}).members[1]
    assert mirrored.via == "mirror" and mirrored.score > 0.9999
    assert mirrored.score > plain_pairs.get(("mirror0.jpg", "orig0.jpg"), 0.0)

    # Made once: a second run embeds nothing and returns the same vectors.
    again = list(dedup.variant_vectors(lib, embedder, [(it.hash, it.path) for it in items]))
    assert again[0].total == 0
    np.testing.assert_array_equal(again[-1].vectors["mirror"][items[0].hash], variants["mirror"][items[0].hash])


def test_the_starting_threshold_is_the_calibrated_one_or_the_users():
    class Cal:
        threshold = 0.9321

    assert dedup.starting_threshold(Cal()) == 0.9321
    assert dedup.starting_threshold(Cal(), explicit=0.5) == 0.5
    with pytest.raises(dedup.DedupError, match="calibrated"):
        dedup.starting_threshold(None)
    assert dedup.threshold_floor(0.95) == pytest.approx(0.80)
    assert dedup.threshold_floor(0.997) == pytest.approx(0.988)


def test_neighbours_in_threads_are_the_neighbours_in_one(tmp_path):
    from simviewer.core.index import AnnIndex

    rng = np.random.default_rng(3)
    n, dim = 1500, 64
    centres = rng.normal(size=(n // 3, dim))
    vecs = np.repeat(centres, 3, axis=0) + rng.normal(scale=0.2, size=(n, dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    keys = [f"p{i:05d}.jpg" for i in range(n)]
    items = [Item(k, tmp_path / k, f"h{i}", 1000, i, 100, 100, None) for i, k in enumerate(keys)]
    model = {"fingerprint": "t", "label": "t", "arch": "none", "weights": "none", "dim": dim}
    index = AnnIndex.build_and_save(tmp_path / "idx", vecs, keys, model)
    try:
        one = Neighbours.compute(index, items, floor=0.9, threads=1)
        four = Neighbours.compute(index, items, floor=0.9, threads=4)
        calls = []
        stopped = Neighbours.compute(index, items, floor=0.9, threads=2,
                                     should_stop=lambda: calls.append(1) or len(calls) > 300)
        events = list(Neighbours.search(index, items, floor=0.9, threads=3))
        abandoned = Neighbours.search(index, items, floor=0.9, threads=2)
        next(abandoned), next(abandoned)
        abandoned.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("simviewer-neighbours")]
    finally:
        index.close()
    # Every photo's two cluster mates are found, and threads change nothing.
    assert len(one.i) >= n and set(zip(one.i // 3, one.j // 3)) == {(c, c) for c in range(n // 3)}
    for a, b in ((one.i, four.i), (one.j, four.j), (one.score, four.score), (one.via, four.via)):
        np.testing.assert_array_equal(a, b)
    assert len(stopped.i) < len(one.i)  # a stop ends every thread's search
    dones = [e.done for e in events[:-1]]
    assert dones[0] == 0 and dones[-1] == n and dones == sorted(dones) and len(dones) == 1 + -(-n // 256)
    np.testing.assert_array_equal(events[-1].score, one.score)


def test_the_library_keeps_the_vectors_of_what_a_clean_up_can_bring_back(tmp_path):
    (tmp_path / "photos").mkdir()
    lib = Library(tmp_path / "photos", tmp_path / "idx")
    assert lib.undoable_hashes() == set()
    lib.journal_dir.mkdir(parents=True)
    lines = ['{"journal": 1, "mode": "trash"}', '{"n": 0, "op": "move", "src": "/p/a.jpg", "hash": "h-a"}',
             '{"n": 0, "done": true, "dst": null}', '{"n": 1, "op": "move", "src": "/p/b.jpg", "hash": "h-b"}']
    (lib.journal_dir / "1-trash.jsonl").write_text("\n".join(lines) + '\n{"n": 2, "op": "move", "src": "/p/c.j')
    (lib.journal_dir / "2-move.jsonl").write_text('{"n": 0, "op": "move", "src": "/p/d.jpg", "hash": "h-d"}\n')
    (lib.journal_dir / "3-move.jsonl").write_bytes(b"\xff\xfe not a journal")
    # Read through Journal: a line cut short, and a file that is not a journal, are passed over.
    assert dedup.Journal(lib.journal_dir / "1-trash.jsonl").hashes() == {"h-a", "h-b"}
    assert lib.undoable_hashes() == dedup.journalled_hashes(lib.journal_dir) == {"h-a", "h-b", "h-d"}
