"""Fault injection for clean-ups: symlinks, a changed keeper, kills between a move and its record,
a full or foreign destination disk, tampered journals, and hard links that can be undone."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from simviewer.core import dedup
from simviewer.core.dedup import DedupError, GroupingOptions, Item, Neighbours, PlannedMove
from simviewer.core.images import file_digest

from ..conftest import make_photo, write_jpeg


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after this point runs."""


def item_of(root: Path, key: str, pixels: int = 100) -> Item:
    p = root / key
    st = p.stat()
    return Item(key, p, file_digest(p), st.st_size, st.st_mtime_ns, pixels, pixels, None)


def photo_bytes(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, 4000 + seed, dtype=np.uint8).tobytes()


@pytest.fixture
def lib(tmp_path) -> Path:
    """A keeper a.jpg with three copies, and b.jpg with one."""
    root = tmp_path / "photos"
    (root / "copies").mkdir(parents=True)
    (root / "a.jpg").write_bytes(photo_bytes(1))
    for n in range(3):
        (root / "copies" / f"a{n}.jpg").write_bytes(photo_bytes(1))
    (root / "b.jpg").write_bytes(photo_bytes(2))
    (root / "copies" / "b0.jpg").write_bytes(photo_bytes(2))
    return root


def plan_of(root: Path) -> list[PlannedMove]:
    a, b = item_of(root, "a.jpg"), item_of(root, "b.jpg")
    return [PlannedMove(item_of(root, f"copies/a{n}.jpg"), a) for n in range(3)] + [
        PlannedMove(item_of(root, "copies/b0.jpg"), b)]


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def run(*args, **kw) -> dedup.ActionResult:
    events = list(dedup.execute(*args, **kw))
    assert isinstance(events[-1], dedup.ActionResult)
    return events[-1]


def undo(journal: Path, **kw) -> dedup.ActionResult:
    return list(dedup.undo(journal, **kw))[-1]


# -- 1. protected folders through symlinks; nothing outside the library ------------------------
@pytest.fixture
def linked_protected(tmp_path) -> tuple[Path, Path]:
    """photos/prot is a symlink to protected/ outside the library; the same photo is in both."""
    root = tmp_path / "photos"
    root.mkdir()
    protected = tmp_path / "protected"
    protected.mkdir()
    (protected / "p.jpg").write_bytes(photo_bytes(5))
    (root / "p_copy_with_a_long_name.jpg").write_bytes(photo_bytes(5))
    (root / "prot").symlink_to(protected, target_is_directory=True)
    return root, protected


@pytest.mark.parametrize("given_as", ["real", "link"])
def test_a_protected_folder_reached_through_a_symlink_stays_protected(linked_protected, tmp_path, given_as):
    root, protected = linked_protected
    inside, copy = item_of(root, "prot/p.jpg"), item_of(root, "p_copy_with_a_long_name.jpg")
    reference = (protected if given_as == "real" else root / "prot",)
    assert dedup.in_folders(inside.path, reference) and not dedup.in_folders(copy.path, reference)
    # The protected photo is preferred as the keeper even though the copy has more pixels.
    nb = Neighbours([copy, inside], np.array([0]), np.array([1]), np.array([1.0]), 0.9)
    copy_bigger = Item(copy.key, copy.path, copy.hash, copy.size, copy.mtime_ns, 9999, 9999, None)
    nb.items[0] = copy_bigger
    (g,) = dedup.group(nb, GroupingOptions(0.95, reference=reference))
    assert g.keeper.key == "prot/p.jpg"
    # A keep rule "folder:DIR" given through the link works on the real path too.
    (g,) = dedup.group(nb, GroupingOptions(0.95, rules=(f"folder:{reference[0]}", "resolution")))
    assert g.keeper.key == "prot/p.jpg"
    # Chosen explicitly anyway: refused by the plan, and by execute itself.
    forced = dedup.Group((dedup.Member(copy, 1.0, True), dedup.Member(inside, 1.0, True)))
    with pytest.raises(DedupError, match="protected"):
        dedup.plan_removals([forced], selected={copy.key: {inside.key}}, reference=reference)
    result = run([PlannedMove(inside, copy)], "move", tmp_path / "journal", root, tmp_path / "out",
                 reference=reference)
    assert not result.moved and (protected / "p.jpg").exists() and not (tmp_path / "out").exists()


def test_a_file_whose_real_path_is_outside_the_library_is_never_moved(linked_protected, tmp_path):
    root, protected = linked_protected
    inside, copy = item_of(root, "prot/p.jpg"), item_of(root, "p_copy_with_a_long_name.jpg")
    result = run([PlannedMove(inside, copy)], "move", tmp_path / "journal", root, tmp_path / "out")
    assert not result.moved and (protected / "p.jpg").read_bytes() == photo_bytes(5)
    assert "outside the library" in result.skipped[0][1]


# -- 2. a symlink and its target are one photo --------------------------------------------------
def test_a_symlink_and_its_target_are_never_a_keeper_and_duplicate(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "real_photo.jpg").write_bytes(photo_bytes(7))
    (root / "ln.jpg").symlink_to("real_photo.jpg")
    (root / "copy_of_it.jpg").write_bytes(photo_bytes(7))
    real, link, copy = item_of(root, "real_photo.jpg"), item_of(root, "ln.jpg"), item_of(root, "copy_of_it.jpg")
    # The link alone with its target: no group at all.
    nb = Neighbours([link, real], np.array([0]), np.array([1]), np.array([1.0]), 0.9)
    assert dedup.group(nb, GroupingOptions(0.95)) == []
    # With a real copy: one group of two files, the photo counted once (the link is not a member).
    nb = Neighbours([link, real, copy], np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([1.0] * 3), 0.9)
    for rules in (("shortest-path",), (f"folder:{root}", "resolution")):
        (g,) = dedup.group(nb, GroupingOptions(0.95, rules=rules))
        assert sorted(m.item.key for m in g.members) == ["copy_of_it.jpg", "real_photo.jpg"]
    # A plan made elsewhere that pairs them anyway is refused move by move, with the reason.
    result = run([PlannedMove(real, link), PlannedMove(link, real)], "move", tmp_path / "journal", root,
                 tmp_path / "out")
    assert not result.moved and (root / "real_photo.jpg").read_bytes() == photo_bytes(7)
    assert os.path.islink(root / "ln.jpg") and (root / "ln.jpg").exists()
    assert all("same file" in why or "symbolic link" in why for _, why in result.skipped)


# -- 3. the keeper is checked before each move --------------------------------------------------
@pytest.mark.parametrize("change", ["overwritten", "same size and time", "gone"])
def test_a_keeper_changed_after_the_scan_stops_the_move_of_its_duplicates(lib, tmp_path, change):
    plan = plan_of(lib)
    keeper = lib / "a.jpg"
    if change == "gone":
        keeper.unlink()
    else:
        st = keeper.stat()
        data = photo_bytes(3)[: st.st_size] if change == "same size and time" else photo_bytes(3)
        keeper.write_bytes(data)
        if change == "same size and time":
            os.utime(keeper, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = run(plan, "move", tmp_path / "journal", lib, tmp_path / "out")
    assert sorted(os.path.basename(p) for p, _ in result.moved) == ["b0.jpg"]
    assert all((lib / "copies" / f"a{n}.jpg").read_bytes() == photo_bytes(1) for n in range(3))
    assert all("keeper" in why for _, why in result.skipped) and len(result.skipped) == 3


# -- 4. a kill between a move and its record -----------------------------------------------------
@pytest.mark.parametrize("mode", ["move", "trash"])
def test_a_kill_between_a_move_and_its_record_is_undone(lib, tmp_path, monkeypatch, private_trash, mode):
    before = snapshot(lib)
    real_done, calls = dedup.Journal.done, []

    def done_then_killed(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real_done(self, *a, **kw)

    monkeypatch.setattr(dedup.Journal, "done", done_then_killed)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        list(dedup.execute(plan_of(lib), mode, tmp_path / "journal", lib, out if mode == "move" else None))
    monkeypatch.setattr(dedup.Journal, "done", real_done)
    assert not (lib / "copies" / "a2.jpg").exists()  # moved, but never recorded as done
    result = undo(dedup.latest_journal(tmp_path / "journal"))
    assert len(result.moved) == 3 and not result.skipped
    assert snapshot(lib) == before
    assert not (out.exists() and any(p.is_file() for p in out.rglob("*")))
    if mode == "trash":
        assert not list((private_trash / "files").iterdir())


def test_a_kill_before_the_move_leaves_nothing_to_undo(lib, tmp_path, monkeypatch):
    before = snapshot(lib)
    real_rename = os.rename

    def killed_on_second(a, b):
        if Path(a).name == "a1.jpg":
            raise Killed
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", killed_on_second)
    with pytest.raises(Killed):
        list(dedup.execute(plan_of(lib), "move", tmp_path / "journal", lib, tmp_path / "out"))
    monkeypatch.setattr(os, "rename", real_rename)
    result = undo(dedup.latest_journal(tmp_path / "journal"))
    assert len(result.moved) == 1 and not result.skipped and snapshot(lib) == before


def test_undo_reports_what_it_cannot_put_back(lib, tmp_path):
    result = run(plan_of(lib), "move", tmp_path / "journal", lib, tmp_path / "out")
    (tmp_path / "out" / "copies" / "a1.jpg").unlink()
    back = undo(result.journal)
    assert len(back.moved) == 3
    assert [Path(p).name for p, _ in back.skipped] == ["a1.jpg"] and "not found" in back.skipped[0][1]


# -- 5. --move-to across file systems and onto a full disk --------------------------------------
def other_file_system(monkeypatch, library: Path) -> None:
    """Renames between the library and anywhere else fail as across devices."""
    real_rename = os.rename

    def rename(a, b):
        if (library in Path(a).parents) != (library in Path(b).parents):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(a))
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)


def test_a_move_across_file_systems_copies_verifies_and_undoes(lib, tmp_path, monkeypatch):
    before = snapshot(lib)
    other_file_system(monkeypatch, lib)
    result = run(plan_of(lib), "move", tmp_path / "journal", lib, tmp_path / "out")
    assert len(result.moved) == 4 and result.error is None
    assert snapshot(tmp_path / "out") == {k: v for k, v in before.items() if k.startswith("copies/")}
    assert undo(result.journal).moved and snapshot(lib) == before
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


@pytest.mark.parametrize("failure", ["disk full", "copy differs"])
def test_a_full_destination_stops_with_nothing_partial_left(lib, tmp_path, monkeypatch, failure):
    before = snapshot(lib)
    other_file_system(monkeypatch, lib)
    real_copy, copies = shutil.copyfileobj, []

    def copy(fsrc, fdst, length=0):
        copies.append(1)
        if len(copies) < 2:
            return real_copy(fsrc, fdst)
        fdst.write(fsrc.read(1000))  # a partial file, as a full disk leaves it
        if failure == "disk full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fdst.write(b"\0" * 100)

    monkeypatch.setattr(shutil, "copyfileobj", copy)
    result = run(plan_of(lib), "move", tmp_path / "journal", lib, tmp_path / "out")
    assert len(result.moved) == 1 and result.error
    assert ("No space left" in result.error) == (failure == "disk full")
    assert "copies/a1.jpg" in result.error and "nothing else was moved" in result.error
    out_files = [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert out_files == ["copies/a0.jpg"]  # the one finished move; no partial copy
    assert snapshot(lib) == {k: v for k, v in before.items() if k != "copies/a0.jpg"}
    monkeypatch.setattr(shutil, "copyfileobj", real_copy)
    assert len(undo(result.journal).moved) == 1 and snapshot(lib) == before


def test_a_kill_during_a_copy_across_file_systems_is_cleaned_up_by_undo(lib, tmp_path, monkeypatch):
    before = snapshot(lib)
    other_file_system(monkeypatch, lib)
    real_unlink = os.unlink

    def killed_before_removing_the_original(path, *a, **kw):
        if Path(path).name == "a1.jpg":
            raise Killed
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", killed_before_removing_the_original)
    with pytest.raises(Killed):
        list(dedup.execute(plan_of(lib), "move", tmp_path / "journal", lib, tmp_path / "out"))
    monkeypatch.setattr(os, "unlink", real_unlink)
    result = undo(dedup.latest_journal(tmp_path / "journal"))
    assert not result.skipped and snapshot(lib) == before
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


# -- 6. undo trusts nothing ----------------------------------------------------------------------
def test_the_journal_key_is_private(lib, tmp_path):
    run(plan_of(lib)[:1], "move", tmp_path / "journal", lib, tmp_path / "out")
    key = Path(os.environ["SIMVIEWER_DATA_DIR"]) / "journal.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) >= 32


@pytest.mark.parametrize("signed", [False, True])
def test_undo_refuses_a_foreign_journal(lib, tmp_path, signed):
    secret = tmp_path / "secret" / "taxes.pdf"
    secret.parent.mkdir()
    secret.write_bytes(b"%PDF private")
    lines = [{"journal": 2, "mode": "move", "root": str(lib), "move_to": str(secret.parent), "id": "x"},
             {"n": 0, "op": "move", "src": str(lib / "taxes.pdf"), "dst": str(secret), "hash": file_digest(secret)},
             {"n": 0, "done": True, "dst": str(secret)}]
    if signed:  # signed with another key than this user's
        for rec in lines:
            rec["mac"] = "0" * 64
    journal = tmp_path / "journal" / "20260101-000000-1-move.jsonl"
    journal.parent.mkdir()
    journal.write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = undo(journal)
    assert not result.moved and secret.read_bytes() == b"%PDF private" and not (lib / "taxes.pdf").exists()
    assert result.skipped and "refused" in result.skipped[0][1]


def test_undo_refuses_an_edited_entry_and_puts_back_the_rest(lib, tmp_path):
    before = snapshot(lib)
    result = run(plan_of(lib), "move", tmp_path / "journal", lib, tmp_path / "out")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not a photo")
    lines = result.journal.read_text().splitlines()
    edited = [line.replace(str(tmp_path / "out" / "copies" / "a1.jpg"), str(victim)) for line in lines]
    assert edited != lines
    result.journal.write_text("\n".join(edited) + "\n")
    back = undo(result.journal)
    assert len(back.moved) == 3 and victim.read_bytes() == b"not a photo"
    assert any("refused" in why for _, why in back.skipped)
    assert snapshot(lib) == {k: v for k, v in before.items() if k != "copies/a1.jpg"}


def test_undo_refuses_another_library_and_a_changed_file(lib, tmp_path):
    result = run(plan_of(lib), "move", tmp_path / "journal", lib, tmp_path / "out")
    other = tmp_path / "other"
    other.mkdir()
    back = undo(result.journal, root=other)
    assert not back.moved and "another library" in back.skipped[0][1]
    (tmp_path / "out" / "copies" / "a0.jpg").write_bytes(b"something else")
    back = undo(result.journal, root=lib)
    assert len(back.moved) == 3 and not (lib / "copies" / "a0.jpg").exists()
    assert [Path(p).name for p, _ in back.skipped] == ["a0.jpg"] and "content" in back.skipped[0][1]


# -- 7. hard links ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["move", "trash", "hardlink"])
def test_duplicates_become_hard_links_to_their_keeper_and_undo_restores_them(lib, tmp_path, private_trash, mode):
    before = snapshot(lib)
    assert mode in dedup.ACTION_MODES
    result = run(plan_of(lib), mode, tmp_path / "journal", lib, tmp_path / "out" if mode == "move" else None,
                 hardlink=mode != "hardlink")
    assert len(result.moved) == 4 and result.error is None
    for n in range(3):
        assert os.path.samefile(lib / "copies" / f"a{n}.jpg", lib / "a.jpg")
    assert os.path.samefile(lib / "copies" / "b0.jpg", lib / "b.jpg")
    assert snapshot(lib) == before  # every path shows the same bytes
    back = undo(result.journal)
    assert len(back.moved) == 4 and not back.skipped and snapshot(lib) == before
    assert not any(os.path.samefile(lib / "copies" / f"a{n}.jpg", lib / "a.jpg") for n in range(3))
    assert (lib / "a.jpg").stat().st_nlink == 1


def test_a_hard_link_that_is_not_possible_leaves_the_duplicate_and_says_why(lib, tmp_path, monkeypatch):
    before = snapshot(lib)

    def no_links(a, b, *rest, **kw):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", no_links)
    result = run(plan_of(lib), "move", tmp_path / "journal", lib, tmp_path / "out", hardlink=True)
    assert not result.moved and len(result.skipped) == 4
    assert all("hard link" in why for _, why in result.skipped)
    assert snapshot(lib) == before and not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture
def indexed_copies(tmp_path) -> tuple[Path, list[str]]:
    root = tmp_path / "photos"
    for i in range(3):
        write_jpeg(root / f"o{i}.jpg", make_photo(600 + i, (96, 72)))
        (root / "copies").mkdir(exist_ok=True)
        shutil.copyfile(root / f"o{i}.jpg", root / "copies" / f"o{i}_again.jpg")
    common = ["--index-dir", str(tmp_path / "idx"), "--model", "resnet18", "--weights", "none",
              "--threshold", "0.998"]
    return root, common


def test_cli_stops_on_a_full_disk_and_undo_exits_non_zero_when_it_cannot_put_back(
        indexed_copies, tmp_path, monkeypatch, capsys):
    from simviewer.cli import main

    root, common = indexed_copies
    before = snapshot(root)
    other_file_system(monkeypatch, root)
    real_copy = shutil.copyfileobj

    def full(fsrc, fdst, length=0):
        fdst.write(fsrc.read(100))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copyfileobj", full)
    assert main(["dedup", str(root), *common, "--move-to", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and snapshot(root) == before
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    monkeypatch.setattr(shutil, "copyfileobj", real_copy)

    assert main(["dedup", str(root), *common, "--move-to", str(tmp_path / "out")]) == 0
    assert len([p for p in (tmp_path / "out").rglob("*.jpg")]) == 3
    next((tmp_path / "out").rglob("*.jpg")).unlink()
    capsys.readouterr()
    assert main(["dedup", str(root), *common, "--undo"]) == 1
    out = capsys.readouterr().out
    assert "put back 2 files" in out and "not found" in out


def test_cli_hardlink_replaces_sure_duplicates(indexed_copies, tmp_path, private_trash):
    from simviewer.cli import main

    root, common = indexed_copies
    before = snapshot(root)
    assert main(["dedup", str(root), *common, "--hardlink"]) == 0
    assert all(os.path.samefile(root / f"o{i}.jpg", root / "copies" / f"o{i}_again.jpg") for i in range(3))
    assert snapshot(root) == before and len(list((private_trash / "files").iterdir())) == 3
    assert main(["dedup", str(root), *common, "--undo"]) == 0
    assert snapshot(root) == before and not (root / "o0.jpg").stat().st_nlink > 1


def test_a_file_name_that_is_not_utf8_is_moved_and_put_back(lib, tmp_path):
    name = os.fsdecode(b"caf\xe9.jpg")
    (lib / name).write_bytes(photo_bytes(1))
    before = snapshot(lib)
    result = run([PlannedMove(item_of(lib, name), item_of(lib, "a.jpg"))], "move", tmp_path / "journal", lib,
                 tmp_path / "out")
    assert len(result.moved) == 1 and (tmp_path / "out" / name).exists()
    assert len(undo(result.journal).moved) == 1 and snapshot(lib) == before


def test_the_clean_up_benchmark_runs():
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cleanup.py"
    out = subprocess.run([sys.executable, str(script), "3", "4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "moves: 3 files of 4 KiB" in out.stdout and "hard links: 3 files" in out.stdout


def test_a_library_opened_through_a_symlink_is_cleaned_up_and_undone(lib, tmp_path):
    """As on macOS, where /tmp is a link to /private/tmp: the paths given are not the real ones."""
    (tmp_path / "via").symlink_to(lib, target_is_directory=True)
    linked = tmp_path / "via"
    before = snapshot(lib)
    result = run(plan_of(linked), "move", tmp_path / "journal", linked, tmp_path / "out")
    assert len(result.moved) == 4 and not result.skipped
    back = undo(result.journal, root=lib)
    assert len(back.moved) == 4 and not back.skipped and snapshot(lib) == before
