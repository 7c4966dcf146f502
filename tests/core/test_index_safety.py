"""An index folder that was tampered with, raced, filled or killed: a clear message, nothing
read or written outside the folder, and the next indexing repairs it."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3

import numpy as np
import pytest

from simviewer.core import index as idx
from simviewer.core.embedder import Embedder
from simviewer.core.index import (
    AnnIndex,
    IndexChanged,
    IndexMismatch,
    IndexWriteFailed,
    ManifestInvalid,
    clean_index_folder,
    indexed_model,
)
from simviewer.core.library import Library
from simviewer.core.safe_files import UnsafeIndexFolder

from ..conftest import make_photo, write_jpeg

MODEL = {"fingerprint": "test|model|p1", "label": "Test model", "arch": "testnet", "weights": "none", "dim": 8}


def vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(directory, n: int = 10, seed: int = 0) -> None:
    AnnIndex.build_and_save(directory, vectors(n, seed), [f"k{seed}-{i}" for i in range(n)], MODEL).close()


def _set(key, value):
    def change(m):
        m[key] = value
    return change


def _set_model(key, value):
    def change(m):
        m["model"][key] = value
    return change


TAMPERED = {
    "outside generation": _set("generation", "../outside_gen"),
    "generation gen-abc": _set("generation", "gen-abc"),
    "absolute generation": _set("generation", "/tmp/gen-000001"),
    "generation with a slash": _set("generation", "gen-000001/../../outside_gen"),
    "another format": _set("format", "someone-elses-index"),
    "another version": _set("version", 7),
    "absurd count": _set("count", 10**15),
    "negative count": _set("count", -5),
    "count as text": _set("count", "10"),
    "absurd dim": _set("dim", 10**9),
    "zero trees": _set("trees", 0),
    "another metric": _set("metric", "euclidean"),
    "built_at not a time": _set("built_at", "yesterday"),
    "model not an object": _set("model", ["resnet18"]),
    "model arch a path": _set_model("arch", "../../evil"),
    "relative weights path": _set_model("weights", "models/x.pt"),
    "unknown pooling": _set_model("pooling", "max"),
    "untrained not a bool": _set_model("untrained", "yes"),
    "model dim disagrees": _set_model("dim", 9),
}


@pytest.fixture
def outside(tmp_path):
    """A complete, valid-looking generation outside the index folder, which must never be loaded."""
    build(tmp_path / "other", n=3, seed=9)
    gen = json.loads((tmp_path / "other" / "manifest.json").read_text())["generation"]
    shutil.copytree(tmp_path / "other" / gen, tmp_path / "outside_gen")
    return tmp_path / "outside_gen"


@pytest.mark.parametrize("name", list(TAMPERED))
def test_a_tampered_manifest_is_refused_in_one_line_and_rebuilt_by_the_next_save(tmp_path, outside, name):
    folder = tmp_path / "index"
    build(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    TAMPERED[name](manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(IndexMismatch) as caught:
        AnnIndex.load(folder)
    message = str(caught.value)
    assert "\n" not in message and "re-index" in message and str(folder) in message
    assert indexed_model(folder) is None  # the writer's view: no usable index, said in the log

    build(folder, n=4, seed=1)  # what re-indexing does
    repaired = AnnIndex.load(folder)
    assert repaired.count == 4 and repaired.all_keys()[0] == "k1-0"
    repaired.close()
    assert sorted(p.name for p in outside.iterdir()) == ["index.ann", "keys.sqlite"]


def test_unreadable_json_and_a_huge_manifest_are_refused_and_rebuilt(tmp_path):
    build(tmp_path)
    for junk in (b"{not json", b" " * (2 << 20)):
        (tmp_path / "manifest.json").write_bytes(junk)
        with pytest.raises(ManifestInvalid, match="re-index"):
            AnnIndex.load(tmp_path)
        build(tmp_path, n=5, seed=2)
        assert AnnIndex.load(tmp_path).count == 5


def test_a_generation_that_is_a_link_to_another_folder_is_never_loaded(tmp_path, outside):
    folder = tmp_path / "index"
    build(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    shutil.rmtree(folder / manifest["generation"])
    os.symlink(outside, folder / manifest["generation"])
    with pytest.raises(ManifestInvalid, match="not simviewer's own folder"):
        AnnIndex.load(folder)
    build(folder, n=4, seed=1)
    assert AnnIndex.load(folder).count == 4
    assert (outside / "index.ann").is_file() and (outside / "keys.sqlite").is_file()  # the link went, not this


# -- readers racing a rebuild ---------------------------------------------------------------
def _rebuild_once(folder, state):
    if not state["done"]:
        state["done"] = True
        build(folder, n=6, seed=3)  # replaces the generation the reader is opening, and removes it


def test_a_generation_replaced_between_manifest_and_files_is_followed(tmp_path, monkeypatch):
    build(tmp_path)
    state = {"done": False}
    real = AnnIndex._open_generation

    def racing(directory, manifest):
        _rebuild_once(tmp_path, state)
        return real(directory, manifest)

    monkeypatch.setattr(AnnIndex, "_open_generation", staticmethod(racing))
    loaded = AnnIndex.load(tmp_path)
    assert state["done"] and loaded.count == 6 and loaded.all_keys()[0] == "k3-0"
    loaded.close()


def test_keys_database_vanishing_is_followed_not_a_raw_sqlite_error(tmp_path, monkeypatch):
    build(tmp_path)
    state = {"done": False}
    real_connect = sqlite3.connect

    def connect(*a, **k):
        _rebuild_once(tmp_path, state)
        return real_connect(*a, **k)

    monkeypatch.setattr(idx.sqlite3, "connect", connect)
    loaded = AnnIndex.load(tmp_path)
    assert state["done"] and loaded.count == 6
    loaded.close()


def test_forest_vanishing_is_followed_not_annoys_unable_to_open(tmp_path, monkeypatch):
    build(tmp_path)
    state = {"done": False}

    class Racing(idx.AnnoyIndex):
        def load(self, path, prefault=False):
            _rebuild_once(tmp_path, state)
            return super().load(path, prefault)

    monkeypatch.setattr(idx, "AnnoyIndex", Racing)
    loaded = AnnIndex.load(tmp_path)
    assert state["done"] and loaded.count == 6
    loaded.close()


def test_an_index_rebuilt_over_and_over_says_so_in_one_line(tmp_path, monkeypatch):
    build(tmp_path)
    real = AnnIndex._open_generation
    rebuilding = []

    def racing(directory, manifest):
        if not rebuilding:  # the rebuild's own load opens its generation undisturbed
            rebuilding.append(True)
            build(tmp_path, n=6, seed=len(manifest["generation"]))
            rebuilding.clear()
        return real(directory, manifest)

    monkeypatch.setattr(AnnIndex, "_open_generation", staticmethod(racing))
    with pytest.raises(IndexChanged, match="replaced twice while it was loaded .*try again"):
        AnnIndex.load(tmp_path)


# -- a full disk, a killed save -------------------------------------------------------------
def _full_forest(path, *a, **k):
    path.write_bytes(b"\0" * 4096)  # part of a forest, as far as the disk allowed
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullKeys:
    """sqlite3 as the index module sees it, on a disk that fills up while the keys are written."""

    Error = sqlite3.Error
    OperationalError = sqlite3.OperationalError

    @staticmethod
    def connect(path, *a, **k):
        db = sqlite3.connect(path, *a, **k)

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, *a):
                return db.execute(*a)

            def executemany(self, *a):
                raise sqlite3.OperationalError("database or disk is full")

            def close(self):
                db.close()

        return Full()


@pytest.mark.parametrize("where", ["forest", "keys"])
def test_a_full_disk_ends_the_save_in_one_line_and_keeps_the_previous_index(tmp_path, monkeypatch, where):
    build(tmp_path, n=10)
    if where == "forest":
        monkeypatch.setattr(AnnIndex, "_build_forest", staticmethod(_full_forest))
    else:
        monkeypatch.setattr(idx, "sqlite3", _FullKeys)
    with pytest.raises(IndexWriteFailed) as caught:
        build(tmp_path, n=20, seed=5)
    message = str(caught.value)
    assert "\n" not in message and "is full" in message and "previous index was kept" in message
    assert str(tmp_path) in message
    monkeypatch.undo()
    kept = AnnIndex.load(tmp_path)
    assert kept.count == 10
    kept.close()
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_leftovers_of_a_killed_save_are_cleaned_and_nothing_else(tmp_path):
    build(tmp_path)
    gen = json.loads((tmp_path / "manifest.json").read_text())["generation"]
    (tmp_path / ".gen-000002.tmp-999999").mkdir()
    (tmp_path / ".gen-000002.tmp-999999" / "index.ann").write_bytes(b"\0" * 100_000)
    (tmp_path / ".manifest.json.tmp-999999").write_text("{")
    (tmp_path / ".calibration.json.tmp-999999").write_text("{")
    (tmp_path / "gen-000000").mkdir()  # an older generation a kill left behind
    mine = ["notes.tmp", ".gen-notes", "gen-000001-backup", ".manifest.json.tmp-abc", "journal"]
    for name in mine:
        (tmp_path / name).write_text("the user's")
    removed = clean_index_folder(tmp_path)
    assert sorted(removed) == sorted([".gen-000002.tmp-999999", ".manifest.json.tmp-999999",
                                      ".calibration.json.tmp-999999", "gen-000000"])
    assert all((tmp_path / name).read_text() == "the user's" for name in mine)
    assert (tmp_path / gen).is_dir() and AnnIndex.load(tmp_path).count == 10


# -- through the library: links planted in the index folder, repair by indexing ---------------
@pytest.fixture
def small_library(tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        write_jpeg(root / f"p{i}.jpg", make_photo(40 + i, (96, 72)))
    return root


def _update(library):
    return list(library.update(Embedder("resnet18", "none"), calibrate=False, variants=()))[-1]


def test_a_lock_link_leaves_its_victim_intact(small_library, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "idx"
    folder.mkdir()
    os.symlink(victim, folder / "lock")
    with pytest.raises(UnsafeIndexFolder, match="lock is a symbolic link"):
        _update(Library(small_library, folder))
    assert victim.read_text() == "precious"


def test_a_library_json_link_does_not_overwrite_its_target(small_library, tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    folder = tmp_path / "idx"
    folder.mkdir()
    os.symlink(victim, folder / "library.json")
    summary = _update(Library(small_library, folder))
    assert summary.indexed == 3 and victim.read_text() == "precious"
    assert not (folder / "library.json").is_symlink()
    assert json.loads((folder / "library.json").read_text())["folder"] == str(small_library)


def test_an_index_folder_that_is_a_link_or_a_file_is_refused(small_library, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    with pytest.raises(UnsafeIndexFolder, match="it is a symbolic link"):
        Library(small_library, tmp_path / "link")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnsafeIndexFolder, match="it is not a folder"):
        _update(Library(small_library, tmp_path / "file"))
    assert list(real.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a folder away")
def test_an_index_folder_of_another_user_is_refused(small_library, tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    os.chown(folder, 12345, -1)
    with pytest.raises(UnsafeIndexFolder, match="belongs to another user"):
        _update(Library(small_library, folder))
    assert list(folder.iterdir()) == []


def test_indexing_repairs_a_tampered_index_and_its_leftovers(small_library, tmp_path, caplog):
    folder = tmp_path / "idx"
    lib = Library(small_library, folder)
    _update(lib)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["generation"] = "../outside_gen"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / ".gen-000009.tmp-999999").mkdir()
    with pytest.raises(ManifestInvalid, match="not a simviewer generation name"):
        lib.load_index()
    with caplog.at_level(logging.WARNING):
        assert indexed_model(folder) is None
    assert "outside_gen" in caplog.text

    summary = _update(lib)
    assert summary.index_rebuilt and summary.indexed == 3
    index = lib.load_index()
    assert index.count == 3 and index.model.arch == "resnet18"
    index.close()
    assert not (folder / ".gen-000009.tmp-999999").exists()


def test_a_catalog_link_is_refused_and_its_victim_left_intact(small_library, tmp_path):
    victim = tmp_path / "victim.db"
    victim.write_bytes(b"precious")
    folder = tmp_path / "idx"
    folder.mkdir()
    os.symlink(victim, folder / "catalog.sqlite")
    with pytest.raises(UnsafeIndexFolder, match="catalog.sqlite is a symbolic link"):
        _update(Library(small_library, folder))
    assert victim.read_bytes() == b"precious"


def test_a_manifest_link_is_never_read_and_indexing_replaces_it(small_library, tmp_path):
    folder = tmp_path / "idx"
    lib = Library(small_library, folder)
    _update(lib)
    other = tmp_path / "other.json"
    shutil.copy(folder / "manifest.json", other)
    (folder / "manifest.json").unlink()
    os.symlink(other, folder / "manifest.json")
    with pytest.raises(ManifestInvalid, match="unreadable index manifest"):
        lib.load_index()
    before = other.read_bytes()
    summary = _update(lib)
    assert summary.indexed == 3 and other.read_bytes() == before
    assert not (folder / "manifest.json").is_symlink() and lib.load_index().count == 3


def test_the_calibration_is_written_without_following_a_link(small_library, tmp_path):
    from simviewer.core import calibration as calib

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "idx"
    folder.mkdir()
    os.symlink(victim, folder / "calibration.json")
    os.symlink(victim, folder / f".calibration.json.tmp-{os.getpid()}")
    cal = calib.Calibration(fingerprint="f", threshold=0.9, separation=0.9, reliable=True, photos=3,
                            library_size=3, k=2, positives=(0.95,), negatives=(0.5,), seconds=1.0, created=0.0)
    calib.save(folder, cal)
    assert victim.read_text() == "precious" and calib.load(folder, "f").threshold == pytest.approx(0.9)
