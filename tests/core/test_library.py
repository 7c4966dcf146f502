"""Library.update: incremental indexing, skipped files, cancellation, queries."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from simviewer.core import dedup
from simviewer.core.catalog import Catalog, CatalogFull, FileRecord
from simviewer.core.embedder import Embedder
from simviewer.core.index import IndexMismatch
from simviewer.core.library import (
    FileSkipped,
    IndexBuilding,
    IndexProgress,
    IndexSummary,
    Library,
    LibraryError,
    ScanDone,
    default_index_dir,
)

from ..conftest import EDITS, bump_mtime, jpeg_bytes, make_photo, write_jpeg


class CountingEmbedder(Embedder):
    """Counts the images that really go through the network."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.images_embedded = 0

    def embed_tensors(self, batch):
        self.images_embedded += len(batch)
        return super().embed_tensors(batch)


@pytest.fixture
def embedder():
    return CountingEmbedder("resnet18", "none")


def run(library, embedder, **kw) -> tuple[IndexSummary, list]:
    """Drive an update; without calibration or variant copies unless asked, so that counts of
    embedded images describe the incremental logic alone (both have tests of their own)."""
    kw.setdefault("calibrate", False)
    kw.setdefault("variants", ())
    events = list(library.update(embedder, **kw))
    assert isinstance(events[-1], IndexSummary)
    return events[-1], events


def test_first_index_then_nothing_changed_is_free(photo_folder, embedder):
    lib = Library(photo_folder)
    s, events = run(lib, embedder, batch_size=5)
    assert (s.total, s.embedded, s.reused, s.indexed) == (12, 12, 0, 12)
    assert embedder.images_embedded == 12
    assert isinstance(events[0], ScanDone) and events[0].to_process == 12
    progress = [e for e in events if isinstance(e, IndexProgress)]
    assert [p.done for p in progress] == [5, 10, 12]

    fresh = CountingEmbedder("resnet18", "none")
    s2, _ = run(lib, fresh)
    assert (s2.embedded, s2.reused, s2.index_rebuilt) == (0, 12, False)
    assert fresh._model is None  # nothing to embed: the network was never even built
    assert not any(p.name != "photos" for p in photo_folder.parent.iterdir() if p.name.startswith("."))
    assert str(lib.index_dir).startswith(str(default_index_dir(photo_folder).parent))
    assert not list(photo_folder.rglob("*.sqlite")) and not list(photo_folder.rglob("*.ann"))


def test_incremental_update_embeds_only_new_and_changed(photo_folder, embedder):
    lib = Library(photo_folder)
    run(lib, embedder)
    embedder.images_embedded = 0

    write_jpeg(photo_folder / "home" / "photo00.jpg", make_photo(500))  # changed content
    write_jpeg(photo_folder / "new" / "added.jpg", make_photo(501))  # new
    (photo_folder / "trips" / "photo01.jpg").unlink()  # deleted
    shutil.move(photo_folder / "trips" / "photo03.jpg", photo_folder / "trips" / "renamed.jpg")  # renamed
    shutil.copy(photo_folder / "home" / "photo02.jpg", photo_folder / "home" / "copy.jpg")  # exact copy
    bump_mtime(photo_folder / "home" / "photo04.jpg")  # touched, same bytes

    s, _ = run(lib, embedder)
    assert embedder.images_embedded == 2  # only the changed and the new photo met the network
    assert (s.total, s.embedded, s.removed, s.indexed) == (13, 2, 2, 13)
    assert s.reused == 11  # includes the rename, the copy and the touched file
    index = lib.load_index()
    keys = set(index.all_keys())
    assert {"trips/renamed.jpg", "home/copy.jpg", "new/added.jpg"} <= keys
    assert "trips/photo01.jpg" not in keys and "trips/photo03.jpg" not in keys
    # The exact copy scores 1.0 against its source.
    top = index.query_key("home/copy.jpg", k=1)[0]
    assert top[0] == "home/photo02.jpg" and top[1] == pytest.approx(1.0, abs=1e-5)
    # The changed photo got a new vector, not the stale one.
    changed = embedder.embed_paths([photo_folder / "home" / "photo00.jpg"])[0]
    np.testing.assert_allclose(index.vector("home/photo00.jpg"), changed, atol=2e-3)
    with Catalog(lib.catalog_path) as cat:
        assert cat.count_vectors() == 12  # the replaced content's vector was dropped (13 files, 1 copy)


@pytest.mark.parametrize("edit", ["resized", "recompressed", "cropped", "bordered"])
def test_nearest_neighbour_of_an_edited_copy_is_its_original(tmp_path, embedder, edit):
    root = tmp_path / "lib"
    for i in range(8):
        write_jpeg(root / f"orig{i}.jpg", make_photo(40 + i))
        write_jpeg(root / "edits" / f"copy{i}.jpg", EDITS[edit](make_photo(40 + i)), quality=92)
    lib = Library(root)
    run(lib, embedder)
    index = lib.load_index(embedder.fingerprint)
    for i in range(8):
        assert index.query_key(f"edits/copy{i}.jpg", k=1)[0][0] == f"orig{i}.jpg"


def test_bad_files_are_skipped_with_reasons_and_the_run_goes_on(photo_folder, embedder):
    (photo_folder / "empty.jpg").write_bytes(b"")
    (photo_folder / "notes.png").write_text("shopping list: milk, eggs\n")
    good = (photo_folder / "home" / "photo00.jpg").read_bytes()
    (photo_folder / "cut.jpg").write_bytes(good[: len(good) // 3])
    lib = Library(photo_folder)
    s, events = run(lib, embedder)
    reasons = dict(s.skipped)
    assert set(reasons) == {"empty.jpg", "notes.png", "cut.jpg"}
    assert "empty" in reasons["empty.jpg"] and "text" in reasons["notes.png"] and "truncated" in reasons["cut.jpg"]
    assert {e.path for e in events if isinstance(e, FileSkipped)} == set(reasons)
    assert s.indexed == 12
    # Unchanged bad files are not retried, but still listed.
    s2, events2 = run(lib, embedder)
    assert dict(s2.skipped) == reasons and not [e for e in events2 if isinstance(e, FileSkipped)]
    with Catalog(lib.catalog_path) as cat:
        assert dict(cat.skipped()) == reasons


def test_stop_keeps_finished_batches_and_the_previous_index(photo_folder, embedder):
    lib = Library(photo_folder)
    run(lib, embedder)
    for i in range(12):
        write_jpeg(photo_folder / "more" / f"extra{i:02d}.jpg", make_photo(300 + i))
    batches = []
    s, _ = run(lib, embedder, batch_size=4, should_stop=lambda: len(batches.append(1) or batches) > 2)
    assert s.cancelled and not s.index_rebuilt
    assert s.embedded == 8  # two batches of four finished before the stop
    index = lib.load_index()
    assert index.count == 12  # the previous index, untouched and loadable
    with Catalog(lib.catalog_path) as cat:
        assert cat.count_vectors(embedder.fingerprint) == 20
    embedder.images_embedded = 0
    s2, _ = run(lib, embedder)
    assert embedder.images_embedded == 4 and s2.indexed == 24


def test_switching_model_rebuilds_and_old_manifest_is_refused(photo_folder, embedder):
    lib = Library(photo_folder)
    run(lib, embedder)
    other = Embedder("resnet34", "none")
    s, _ = run(lib, other)
    assert s.embedded == 12 and s.index_rebuilt
    with pytest.raises(IndexMismatch, match="ResNet-34"):
        lib.load_index(embedder.fingerprint)
    assert lib.load_index(other.fingerprint).count == 12


def test_query_image_outside_library(photo_folder, embedder, tmp_path):
    lib = Library(photo_folder)
    run(lib, embedder)
    outside = write_jpeg(tmp_path / "elsewhere" / "q.jpg", EDITS["resized"](make_photo(7)))
    index = lib.load_index()
    results = lib.query_image(outside, 3, index, lambda: embedder)
    assert results[0][0] == photo_folder / "trips" / "photo07.jpg"
    inside = lib.query_image(photo_folder / "trips" / "photo07.jpg", 3, index, lambda: pytest.fail("no model needed"))
    assert photo_folder / "trips" / "photo07.jpg" not in [p for p, _ in inside] and len(inside) == 3


def test_second_concurrent_update_is_refused(photo_folder, embedder):
    from simviewer.core.library import LibraryError

    lib = Library(photo_folder)
    first = lib.update(embedder)
    next(first)  # holds the lock while suspended
    with pytest.raises(LibraryError, match="another simviewer process"):
        list(Library(photo_folder).update(embedder))
    list(first)


def _children() -> set[int]:
    """Process ids of this process's children (Linux)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (task / "children").read_text().split())
    return pids


def _decoder_children() -> set[int]:
    out = set()
    for pid in _children():
        with contextlib.suppress(OSError):
            if b"simviewer.core.decoding" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.add(pid)
    return out


def test_decoder_processes_and_threads_store_the_same_vectors(photo_folder, tmp_path):
    def vectors(decoders):
        lib = Library(photo_folder, tmp_path / decoders)
        s, _ = run(lib, CountingEmbedder("resnet18", "none"), batch_size=5, decoders=decoders)
        assert (s.embedded, s.skipped) == (12, [])
        with Catalog(lib.catalog_path) as cat:
            return cat.files(), cat.vectors_for(Embedder("resnet18", "none").fingerprint)

    files_p, vec_p = vectors("processes")
    files_t, vec_t = vectors("threads")
    assert files_p.keys() == files_t.keys() and vec_p.keys() == vec_t.keys()
    for key, rec in files_p.items():
        other = files_t[key]
        assert (rec.hash, rec.width, rec.height, rec.format) == (other.hash, other.width, other.height, other.format)
    for h, v in vec_p.items():
        np.testing.assert_array_equal(v, vec_t[h])
    with pytest.raises(LibraryError, match="decoders"):
        list(Library(photo_folder, tmp_path / "x").update(Embedder("resnet18", "none"), decoders="fibers"))


def test_indexed_vectors_stay_within_0999_of_an_fp32_reference(photo_folder, tmp_path):
    lib = Library(photo_folder, tmp_path / "idx")
    auto = Embedder("resnet18", "none")
    run(lib, auto)
    ref = Embedder("resnet18", "none", precision="fp32")
    index = lib.load_index()
    keys = sorted(index.all_keys())
    expected = ref.embed_paths([photo_folder / k for k in keys])
    got = np.stack([index.vector(k) for k in keys])
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.999


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["stopped", "raises", "abandoned", "finished"])
def test_no_decoder_process_outlives_the_update(photo_folder, embedder, how):
    for i in range(30):
        write_jpeg(photo_folder / "more" / f"extra{i:02d}.jpg", make_photo(700 + i))
    lib = Library(photo_folder)
    seen: set[int] = set()
    batches = []

    def should_stop():
        seen.update(_decoder_children())
        batches.append(1)
        return how == "stopped" and len(batches) > 1

    kw = {"batch_size": 4, "should_stop": should_stop, "decoders": "processes"}
    if how == "raises":
        def boom(batch):
            seen.update(_decoder_children())
            raise RuntimeError("network failed")
        embedder.embed_tensors = boom
        with pytest.raises(RuntimeError, match="network failed"):
            list(lib.update(embedder, **kw))
    elif how == "abandoned":
        events = lib.update(embedder, **kw)
        while not isinstance(next(events), IndexProgress):
            pass
        events.close()
    else:
        s, _ = run(lib, embedder, **kw)
        assert s.cancelled == (how == "stopped")
    assert len(seen) == 2  # two decoder processes
    assert not (_decoder_children() & seen)
    assert all(not Path(f"/proc/{pid}").exists() for pid in seen)  # ended and reaped


def test_mirrored_and_rotated_copies_are_embedded_while_indexing(photo_folder):
    from simviewer.core.images import VARIANTS, load_image
    from simviewer.core.library import variant_model

    emb = CountingEmbedder("resnet18", "none")
    lib = Library(photo_folder)
    s, _ = run(lib, emb, variants=tuple(VARIANTS))
    assert s.embedded == 12 and emb.images_embedded == 12 * (1 + len(VARIANTS))
    with lib.open_catalog() as cat:
        files = cat.files()
        stored = {k: cat.vectors_for(variant_model(emb.fingerprint, k)) for k in VARIANTS}
    assert all(len(v) == 12 for v in stored.values())
    # The same vectors as turning the decoded photo itself: a later duplicate search embeds nothing.
    later = CountingEmbedder("resnet18", "none")
    pairs = [(r.hash, photo_folder / key) for key, r in files.items()]
    *_, result = dedup.variant_vectors(lib, later, pairs)
    assert later.images_embedded == 0
    h, path = pairs[0]
    fresh = Embedder("resnet18", "none").embed_images([VARIANTS["rot90"](load_image(path, 256).image)])[0]
    assert float(fresh @ result.vectors["rot90"][h]) > 0.98


def test_a_stopped_first_indexing_builds_the_index_of_what_it_embedded(photo_folder, embedder):
    lib = Library(photo_folder)
    batches = []
    s, events = run(lib, embedder, batch_size=4, should_stop=lambda: len(batches.append(1) or batches) > 2)
    assert s.cancelled and s.index_rebuilt and s.embedded == 8 and s.indexed == 8
    assert any(isinstance(e, IndexBuilding) for e in events)
    assert len(lib.load_index(embedder.fingerprint).all_keys()) == 8  # shown and searchable at once
    s2, _ = run(lib, embedder)
    assert (s2.embedded, s2.indexed) == (4, 12)


def test_files_skipped_before_are_tried_again_on_every_run(photo_folder, embedder):
    """A file refused once (a permission fixed since, a file that briefly vanished) is indexed on
    the next run although its size and modification time did not change."""
    lib = Library(photo_folder)
    run(lib, embedder)
    fixed = write_jpeg(photo_folder / "fixed.jpg", make_photo(77))
    st = fixed.stat()
    with lib.open_catalog() as cat:  # what a run that could not read it left behind
        cat.write_batch([FileRecord("fixed.jpg", st.st_size, st.st_mtime_ns, None, None, None, None, "skipped",
                                    "Permission denied")])
    s, events = run(lib, embedder)
    assert isinstance(events[0], ScanDone) and events[0].to_process == 1
    assert s.skipped == [] and s.embedded == 1 and s.indexed == 13
    assert "fixed.jpg" in lib.load_index().all_keys()


def test_what_the_walk_passes_over_is_listed_as_skipped(photo_folder, embedder):
    (photo_folder / "gone.jpg").symlink_to(photo_folder / "nowhere.jpg")
    s, events = run(Library(photo_folder), embedder)
    assert [p for p, _ in s.skipped] == ["gone.jpg"] and "dangling" in dict(s.skipped)["gone.jpg"]
    assert [e.path for e in events if isinstance(e, FileSkipped)] == ["gone.jpg"]
    assert s.indexed == 12


def test_a_name_that_is_not_utf8_is_indexed_and_found(photo_folder, embedder):
    folder = os.fsencode(photo_folder)
    try:
        with open(os.path.join(folder, b"caf\xe9.jpg"), "wb") as fh:  # a Latin-1 name
            fh.write(jpeg_bytes(EDITS["resized"](make_photo(5))))
    except OSError as exc:  # a file system that only takes UTF-8 names
        pytest.skip(f"this file system refuses the name: {exc}")
    lib = Library(photo_folder)
    s, _ = run(lib, embedder)
    assert s.skipped == [] and s.indexed == 13
    key = "caf\udce9.jpg"
    index = lib.load_index()
    assert key in index.all_keys()
    assert index.query_key(key, k=1)[0][0] == "trips/photo05.jpg"
    path = photo_folder / key
    assert os.fsencode(path).endswith(b"/caf\xe9.jpg") and path.is_file()
    assert lib.query_image(photo_folder / "trips" / "photo05.jpg", 1, index, lambda: embedder) == [
        (path, pytest.approx(index.query_key(key, k=1)[0][1], abs=1e-6))]
    s2, _ = run(lib, embedder)  # and nothing is embedded again
    assert (s2.embedded, s2.reused) == (0, 13)


def test_a_full_disk_stops_the_update_in_one_line_and_keeps_the_index(photo_folder, embedder, monkeypatch):
    lib = Library(photo_folder)
    run(lib, embedder)
    for i in range(6):
        write_jpeg(photo_folder / "more" / f"extra{i}.jpg", make_photo(400 + i))
    real_open = Library.open_catalog

    def full_catalog(self, *args, **kw):
        cat = real_open(self, *args, **kw)
        pages = cat.db.execute("PRAGMA page_count").fetchone()[0]
        cat.db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own SQLITE_FULL, as on a full disk
        return cat

    monkeypatch.setattr(Library, "open_catalog", full_catalog)
    with pytest.raises(CatalogFull, match="is full") as caught:
        run(lib, embedder)
    assert "previous index" in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.undo()
    assert lib.load_index().count == 12
    with Catalog(lib.catalog_path) as cat:
        assert len(cat.files()) == 12

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Catalog, "drop_orphan_vectors", no_space)
    with pytest.raises(LibraryError, match="is full.*previous index"):
        run(lib, embedder)
    assert lib.load_index().count == 12
