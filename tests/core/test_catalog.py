"""Catalog storage: vectors in float16, older float32 catalogs still read."""

from __future__ import annotations

import sqlite3

import numpy as np

from simviewer.core.catalog import Catalog, FileRecord


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
