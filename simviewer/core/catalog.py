"""SQLite catalog of a library: one row per file, embeddings keyed by content and model.

Embeddings are keyed by (content hash, model fingerprint), not by path: a renamed or moved photo,
or a second byte-identical copy, reuses the vector already computed. The database runs in WAL
mode and every batch is its own transaction, so a killed run keeps every batch it finished.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .paths import key_from_db, key_to_db
from .safe_files import is_disk_full

SCHEMA_VERSION = 1
_FILE_COLUMNS = "path, size, mtime_ns, hash, width, height, format, status, reason, taken_at"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path      TEXT PRIMARY KEY,          -- relative to the library folder, '/' separated
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    hash      TEXT,                      -- blake2b-128 of the bytes; NULL if unreadable
    width     INTEGER,
    height    INTEGER,
    format    TEXT,
    status    TEXT NOT NULL CHECK (status IN ('ok', 'skipped')),
    reason    TEXT,                      -- why it was skipped
    checked_at REAL NOT NULL,
    taken_at  REAL                       -- EXIF capture time, if the photo has one
);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE TABLE IF NOT EXISTS ignored_pairs (   -- "not duplicates", by content so renames keep them
    hash_a TEXT NOT NULL,
    hash_b TEXT NOT NULL,                -- hash_a < hash_b
    PRIMARY KEY (hash_a, hash_b)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS embeddings (
    hash   TEXT NOT NULL,
    model  TEXT NOT NULL,                -- Embedder.fingerprint
    vector BLOB NOT NULL,                -- L2-normalised, in the dtype below
    dtype  TEXT NOT NULL DEFAULT 'f4',   -- 'f2' (float16, written since) or 'f4' (float32, older rows)
    PRIMARY KEY (hash, model)
) WITHOUT ROWID;
"""

# Vectors are stored in float16: half the bytes (4 GB instead of 8 GB for a million ResNet-50
# photos) and no measurable change in retrieval or dedup (benchmarks/bench_compact.py).
STORED_DTYPE = "f2"
_DTYPES = {"f2": np.float16, "f4": np.float32}


def _blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, _DTYPES[STORED_DTYPE]).tobytes()


def _vector(blob: bytes, dtype: str) -> np.ndarray:
    """A stored vector as float32 of norm 1, whatever it was stored as."""
    v = np.frombuffer(blob, _DTYPES[dtype]).astype(np.float32)
    if dtype != "f4":
        v /= max(float(np.linalg.norm(v)), 1e-12)  # float16 rounding moves the norm by about 1e-4
    return v


@dataclass(frozen=True)
class FileRecord:
    path: str
    size: int
    mtime_ns: int
    hash: str | None
    width: int | None
    height: int | None
    format: str | None
    status: str
    reason: str | None
    taken_at: float | None = None


class CatalogError(Exception):
    """A catalog that cannot be opened or read by this version."""


class CatalogFull(CatalogError):
    """The disk (or the file system's quota) holding the catalog is full: nothing of the
    transaction that met it was written; everything committed before it is kept."""


def _record(row) -> FileRecord:
    return FileRecord(key_from_db(row[0]), *row[1:])


class Catalog:
    """Thin, typed access to the library database. One instance per thread.

    *readonly* opens an existing catalog for reading only: it needs no write access to the
    index folder (a library shared read-only, another user's index), creates nothing there and
    never upgrades the schema.
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            self.db = self._open_readonly()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(files)")}
            if "taken_at" not in columns:  # catalogs written before capture times were recorded
                with self.db:
                    self.db.execute("ALTER TABLE files ADD COLUMN taken_at REAL")
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(embeddings)")}
            if "dtype" not in columns:  # catalogs written when every vector was float32
                with self.db:
                    self.db.execute("ALTER TABLE embeddings ADD COLUMN dtype TEXT NOT NULL DEFAULT 'f4'")
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                with self.db:
                    self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise CatalogError(
                    f"{self.path} uses catalog schema {row[0]}, this simviewer reads {SCHEMA_VERSION}; "
                    "use a matching simviewer or a new --index-dir"
                )
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                raise self._full(exc) from None
            raise CatalogError(f"cannot open catalog {self.path}: {exc}") from exc

    def _open_readonly(self) -> sqlite3.Connection:
        """A read-only connection. Where the folder cannot be written, SQLite cannot make the
        shared-memory file a WAL reader needs: the catalog is then read as an immutable file
        (its committed content; nothing can be writing it through this folder anyway)."""
        if not self.path.is_file():
            raise CatalogError(f"no catalog at {self.path}")
        uri = "file:" + urllib.parse.quote(os.fsencode(self.path.resolve()))
        last: sqlite3.DatabaseError | None = None
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            db = None
            try:
                db = sqlite3.connect(uri + query, uri=True, timeout=30)
                row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                self._check_readable(db, row)
                return db
            except sqlite3.DatabaseError as exc:
                last = exc
                if db is not None:
                    db.close()
            except CatalogError:
                db.close()
                raise
        raise CatalogError(f"cannot read catalog {self.path}: {last}")

    def _check_readable(self, db: sqlite3.Connection, schema_row) -> None:
        if schema_row is None or int(schema_row[0]) != SCHEMA_VERSION:
            raise CatalogError(f"{self.path} uses catalog schema {schema_row[0] if schema_row else 'none'}, "
                               f"this simviewer reads {SCHEMA_VERSION}; use a matching simviewer or a new --index-dir")
        files = {r[1] for r in db.execute("PRAGMA table_info(files)")}
        embeddings = {r[1] for r in db.execute("PRAGMA table_info(embeddings)")}
        if "taken_at" not in files or "dtype" not in embeddings:
            raise CatalogError(f"{self.path} was written by an older simviewer and cannot be upgraded read-only; "
                               "run `simviewer index` on the folder once with write access")

    def _full(self, exc: BaseException) -> CatalogFull:
        return CatalogFull(f"the disk holding the catalog {self.path.parent} is full ({exc}); "
                           "nothing was lost: the previous index and every photo indexed before are kept; "
                           "free some space and run again to go on")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction; a full disk rolls it back and raises CatalogFull."""
        try:
            with self.db:
                yield
        except (sqlite3.OperationalError, OSError) as exc:
            if is_disk_full(exc):
                raise self._full(exc) from None
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- files ---------------------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        rows = self.db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files"
        )
        return {rec.path: rec for rec in map(_record, rows)}

    def file(self, path: str) -> FileRecord | None:
        r = self.db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE path=?",
            (key_to_db(path),),
        ).fetchone()
        return _record(r) if r else None

    def skipped(self) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT path, reason FROM files WHERE status='skipped'")
        return sorted((key_from_db(p), r) for p, r in rows)

    def rename_files(self, moves: Iterable[tuple[str, str]]) -> None:
        """Follow files moved inside the library (old key -> new key)."""
        with self._writing():
            self.db.executemany("UPDATE OR REPLACE files SET path=? WHERE path=?",
                                ((key_to_db(new), key_to_db(old)) for old, new in moves))

    # -- "not duplicates" ------------------------------------------------------------------------
    def ignore_pair(self, hash_a: str, hash_b: str) -> None:
        a, b = sorted((hash_a, hash_b))
        with self._writing():
            self.db.execute("INSERT OR IGNORE INTO ignored_pairs VALUES (?, ?)", (a, b))

    def unignore_pair(self, hash_a: str, hash_b: str) -> None:
        a, b = sorted((hash_a, hash_b))
        with self._writing():
            self.db.execute("DELETE FROM ignored_pairs WHERE hash_a=? AND hash_b=?", (a, b))

    def ignored_pairs(self) -> set[tuple[str, str]]:
        return {(a, b) for a, b in self.db.execute("SELECT hash_a, hash_b FROM ignored_pairs")}

    def remove_files(self, paths: Iterable[str]) -> int:
        with self._writing():
            cur = self.db.executemany("DELETE FROM files WHERE path=?", ((key_to_db(p),) for p in paths))
        return cur.rowcount

    def write_batch(
        self,
        records: Iterable[FileRecord],
        model: str | None = None,
        vectors: Iterable[tuple[str, np.ndarray]] = (),
    ) -> None:
        """Store file rows and new vectors in one transaction (the unit a kill cannot split)."""
        now = time.time()
        with self._writing():
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    (key_to_db(r.path), r.size, r.mtime_ns, r.hash, r.width, r.height, r.format, r.status,
                     r.reason, now, r.taken_at)
                    for r in records
                ),
            )
            if model is not None:
                self.db.executemany(
                    "INSERT OR REPLACE INTO embeddings (hash, model, vector, dtype) VALUES (?,?,?,?)",
                    ((h, model, _blob(v), STORED_DTYPE) for h, v in vectors),
                )

    # -- embeddings ----------------------------------------------------------------------------
    def hashes_with_vectors(self, model: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT hash FROM embeddings WHERE model=?", (model,))}

    def vector(self, hash_: str, model: str) -> np.ndarray | None:
        r = self.db.execute("SELECT vector, dtype FROM embeddings WHERE hash=? AND model=?", (hash_, model)).fetchone()
        return _vector(*r) if r else None

    def vectors_for(self, model: str) -> dict[str, np.ndarray]:
        """Every stored vector of *model*, by content hash."""
        return {h: _vector(v, d)
                for h, v, d in self.db.execute("SELECT hash, vector, dtype FROM embeddings WHERE model=?", (model,))}

    def put_vectors(self, model: str, vectors: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store vectors of known content without touching the file rows (one transaction)."""
        with self._writing():
            self.db.executemany(
                "INSERT OR REPLACE INTO embeddings (hash, model, vector, dtype) VALUES (?,?,?,?)",
                ((h, model, _blob(v), STORED_DTYPE) for h, v in vectors),
            )

    def indexed_keys(self, model: str) -> Iterator[tuple[str, str]]:
        """(path, hash) of every ok file with a vector for *model*, by path (no vectors read)."""
        return ((key_from_db(p), h) for p, h in self.db.execute(
            "SELECT f.path, f.hash FROM files f JOIN embeddings e ON e.hash = f.hash AND e.model = ? "
            "WHERE f.status = 'ok' ORDER BY f.path", (model,)))

    def indexed_vectors(self, model: str) -> Iterator[np.ndarray]:
        """The vectors of :meth:`indexed_keys` (float32), in the same order, one at a time."""
        return (_vector(v, d) for v, d in self.db.execute(
            "SELECT e.vector, e.dtype FROM files f JOIN embeddings e ON e.hash = f.hash AND e.model = ? "
            "WHERE f.status = 'ok' ORDER BY f.path", (model,)))

    def drop_orphan_vectors(self, keep: Iterable[str] = ()) -> int:
        """Delete vectors no file refers to any more (deleted or changed photos), except *keep*."""
        with self._writing():
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS keep_hashes (hash TEXT PRIMARY KEY)")
            self.db.execute("DELETE FROM keep_hashes")
            self.db.executemany("INSERT OR IGNORE INTO keep_hashes VALUES (?)", ((h,) for h in keep))
            cur = self.db.execute(
                "DELETE FROM embeddings WHERE hash NOT IN (SELECT hash FROM files WHERE hash IS NOT NULL) "
                "AND hash NOT IN (SELECT hash FROM keep_hashes)"
            )
        return cur.rowcount

    def count_vectors(self, model: str | None = None) -> int:
        if model is None:
            return self.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM embeddings WHERE model=?", (model,)).fetchone()[0]
