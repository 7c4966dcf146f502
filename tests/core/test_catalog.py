"""Catalog storage: vectors in float16, older float32 catalogs still read."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from simviewer.core.catalog import Catalog, CatalogError, CatalogFull, FileRecord


def unit(rng, dim=512):
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_vectors_are_stored_in_half_precision_and_read_back_as_unit_float32(tmp_path):
    rng = np.random.default_rng(0)
    v = unit(rng)
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.write_batch([FileRecord("a.jpg", 1, 1, "h1", 10, 10, "JPEG", "ok", None)], "m", [("h1", v)])
        blob, dtype = cat.db.execute("SELECT vector, dtype FROM embeddings").fetchone()
        assert dtype == "f2" and len(blob) == 512 * 2
        back = cat.vector("h1", "m")
        assert back.dtype == np.float32 and abs(np.linalg.norm(back) - 1) < 1e-6
        assert float(back @ v) > 0.99999
        assert np.array_equal(next(cat.indexed_vectors("m")), back)
        assert np.array_equal(cat.vectors_for("m")["h1"], back)


def test_a_float32_catalog_from_before_is_upgraded_in_place_and_read(tmp_path):
    path = tmp_path / "old.sqlite"
    rng = np.random.default_rng(1)
    old = unit(rng)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE embeddings (hash TEXT NOT NULL, model TEXT NOT NULL, vector BLOB NOT NULL,
                                 PRIMARY KEY (hash, model)) WITHOUT ROWID;
    """)
    db.execute("INSERT INTO embeddings VALUES ('h0', 'm', ?)", (old.tobytes(),))
    db.commit()
    db.close()
    with Catalog(path) as cat:
        assert np.array_equal(cat.vector("h0", "m"), old)  # float32 rows are read exactly
        new = unit(rng)
        cat.put_vectors("m", [("h1", new)])
        both = cat.vectors_for("m")
        assert np.array_equal(both["h0"], old) and float(both["h1"] @ new) > 0.99999


def _record(path: str, h: str = "h1") -> FileRecord:
    return FileRecord(path, 10, 20, h, 4, 3, "JPEG", "ok", None)


def test_a_name_that_is_not_utf8_is_stored_and_read_back_as_the_same_name(tmp_path):
    rng = np.random.default_rng(1)
    odd = "photos/caf\udce9.jpg"  # os.fsdecode(b"photos/caf\xe9.jpg")
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.write_batch([_record(odd), _record("plain é.jpg", "h2"),
                         FileRecord("bad\udcff.png", 1, 2, None, None, None, None, "skipped", "empty file")],
                        "m", [("h1", unit(rng)), ("h2", unit(rng))])
        assert set(cat.files()) == {odd, "plain é.jpg", "bad\udcff.png"}
        assert cat.file(odd).hash == "h1" and cat.skipped() == [("bad\udcff.png", "empty file")]
        assert dict(cat.indexed_keys("m")) == {odd: "h1", "plain é.jpg": "h2"}
        cat.rename_files([(odd, "caf\udce9 2.jpg")])
        assert cat.file("caf\udce9 2.jpg").hash == "h1" and cat.file(odd) is None
        assert cat.remove_files(["caf\udce9 2.jpg"]) == 1
        # The odd name is kept as the file name's own bytes; a valid name stays text.
        raw = dict(sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT path, typeof(path) FROM files"))
    assert raw == {"plain é.jpg": "text", b"bad\xff.png": "blob"}


def test_a_readonly_catalog_reads_and_never_writes(tmp_path):
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.write_batch([_record("a.jpg")])
    with Catalog(tmp_path / "c.sqlite", readonly=True) as cat:
        assert set(cat.files()) == {"a.jpg"}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            cat.write_batch([_record("b.jpg")])
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog(tmp_path / "missing" / "c.sqlite", readonly=True)
    assert not (tmp_path / "missing").exists()


def test_a_full_disk_is_one_clear_error_and_keeps_every_batch_written_before(tmp_path):
    rng = np.random.default_rng(2)
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.write_batch([_record("a.jpg")], "m", [("h1", unit(rng))])
        # SQLite's own "database or disk is full" (SQLITE_FULL), as on a full disk: the file may
        # not grow by a page.
        pages = cat.db.execute("PRAGMA page_count").fetchone()[0]
        cat.db.execute(f"PRAGMA max_page_count={pages}")
        batch = [_record(f"n{i}.jpg", f"x{i}") for i in range(300)]
        with pytest.raises(CatalogFull) as caught:
            cat.write_batch(batch, "m", [(f"x{i}", unit(rng)) for i in range(300)])
        message = str(caught.value)
        assert "full" in message and str(tmp_path) in message and "previous index" in message
        assert "\n" not in message
        assert set(cat.files()) == {"a.jpg"} and cat.count_vectors() == 1
