"""Annoy nearest-neighbour index with a manifest, saved atomically, loaded memory-mapped.

On disk an index is a directory::

    manifest.json          which generation is current + what it was built from
    gen-000007/index.ann   the Annoy forest (angular metric)
    gen-000007/keys.sqlite item id -> key (a library-relative path)

A save writes a complete new ``gen-*`` directory under a temporary name, renames it into place,
and only then replaces ``manifest.json`` (``os.replace``). Whatever step a crash interrupts, the
manifest names a complete generation, so the previous index stays loadable.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from .system import fsync_dir, fsync_file

log = logging.getLogger(__name__)

FORMAT = "simviewer-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Forests whose vectors take at least this much are built in their file, not in RAM.
ON_DISK_BUILD_BYTES = 256 * 2**20


class IndexError_(Exception):
    """Base for index problems (named to avoid shadowing the builtin)."""


class IndexMissing(IndexError_):
    """The folder has not been indexed yet."""


class IndexMismatch(IndexError_):
    """An index that does not match its manifest, its files or the model asked for."""


def angular_to_cosine(distance: float | np.ndarray) -> float | np.ndarray:
    """Annoy's angular distance is |a - b| of unit vectors, so cos = 1 - d^2 / 2."""
    return 1.0 - np.square(distance) / 2.0


def trees_for(n: int) -> int:
    """10 trees up to 1k items, +8 per decade after that (18 at 10k, 34 at 1M)."""
    return int(round(10 + 8 * math.log10(max(n, 1000) / 1000)))


def _checkpoint(step: str) -> None:
    """Marks the boundaries between save steps; tests replace it to simulate a crash there."""


class AnnIndex:
    """A loaded index: query by vector or by key; results are (key, cosine), best first."""

    def __init__(self, directory: Path, manifest: dict, ann: AnnoyIndex, keys: sqlite3.Connection) -> None:
        self.directory = directory
        self.manifest = manifest
        self._ann = ann
        self._keys = keys
        self._lock = threading.Lock()
        self.dim: int = manifest["dim"]
        self.count: int = manifest["count"]
        self.trees: int = manifest["trees"]

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build_and_save(
        cls,
        directory: str | Path,
        vectors: np.ndarray | Iterable[np.ndarray | bytes],
        keys: Sequence[str],
        model: dict,
        extra: dict | None = None,
        trees: int | None = None,
        seed: int = 42,
    ) -> AnnIndex:
        """Build a forest over *vectors* named by *keys* and make it the current index.

        *vectors* is an (N, dim) array or any iterable of N vectors (float32 arrays or their raw
        bytes), so a caller can stream them from the catalog instead of holding them all. Large
        forests are built straight into their file (Annoy's on-disk build), so the build's memory
        is page cache the system can reclaim, not anonymous memory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        n = len(keys)
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and len(vectors):
            dim = vectors.shape[1]
        else:
            dim = int(model["dim"])
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and len(vectors) != n:
            raise ValueError(f"{len(vectors)} vectors but {n} keys")
        trees = trees or trees_for(n)

        current = read_manifest(directory)
        gen_no = int(current["generation"].split("-")[1]) + 1 if current else 1
        gen = f"gen-{gen_no:06d}"
        tmp = directory / f".{gen}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()

        try:
            cls._build_forest(tmp / "index.ann", vectors, n, dim, trees, seed)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_file(tmp / "index.ann")
        _checkpoint("ann-written")

        db = sqlite3.connect(tmp / "keys.sqlite")
        with db:
            db.execute("CREATE TABLE keys (item INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)")
            db.executemany("INSERT INTO keys VALUES (?, ?)", enumerate(keys))
        db.close()
        fsync_file(tmp / "keys.sqlite")
        _checkpoint("keys-written")

        final = directory / gen
        shutil.rmtree(final, ignore_errors=True)  # a leftover from a crash after rename, never current
        os.replace(tmp, final)
        fsync_dir(directory)
        _checkpoint("generation-renamed")

        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "generation": gen,
            "model": model,
            "dim": dim,
            "count": n,
            "metric": "angular",
            "trees": trees,
            "built_at": time.time(),
            **(extra or {}),
        }
        tmp_manifest = directory / f".{MANIFEST}.tmp-{os.getpid()}"
        tmp_manifest.write_text(json.dumps(manifest, indent=2))
        fsync_file(tmp_manifest)
        _checkpoint("manifest-written")
        os.replace(tmp_manifest, directory / MANIFEST)
        fsync_dir(directory)
        _checkpoint("manifest-replaced")

        _remove_stale(directory, keep=gen)
        return cls.load(directory)

    @staticmethod
    def _build_forest(path: Path, vectors, n: int, dim: int, trees: int, seed: int) -> None:
        ann = AnnoyIndex(dim, "angular")
        ann.set_seed(seed)
        on_disk = n * dim * 4 >= ON_DISK_BUILD_BYTES
        if on_disk:
            ann.on_disk_build(str(path))
        count = 0
        for i, v in enumerate(vectors):
            if isinstance(v, bytes | bytearray | memoryview):
                v = np.frombuffer(v, np.float32)
            if len(v) != dim:
                raise ValueError(f"vector {i} has dim {len(v)}, expected {dim}")
            ann.add_item(i, v.tolist())  # a list converts several times faster than an array row
            count += 1
        if count != n:
            raise ValueError(f"{count} vectors but {n} keys")
        ann.build(trees, n_jobs=-1)
        if not on_disk:
            ann.save(str(path))
        ann.unload()

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path, expected_model: str | None = None) -> AnnIndex:
        """Load the current generation memory-mapped; check the manifest first.

        *expected_model*: a model fingerprint; a different one raises :class:`IndexMismatch`.
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest is None:
            raise IndexMissing(f"no index in {directory} yet: run `simviewer index FOLDER` first")
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise IndexMismatch(
                f"{directory} holds index format {manifest.get('format')} v{manifest.get('version')}, "
                f"this simviewer reads {FORMAT} v{FORMAT_VERSION}; re-index the folder"
            )
        fp = manifest.get("model", {}).get("fingerprint")
        if expected_model is not None and fp != expected_model:
            raise IndexMismatch(
                f"the index in {directory} was built with {manifest['model'].get('label', fp)}, not the "
                "model asked for; re-index with the model you want (simviewer index FOLDER --model ... "
                "--weights ...)"
            )
        gen_dir = directory / manifest["generation"]
        ann_path, keys_path = gen_dir / "index.ann", gen_dir / "keys.sqlite"
        if not ann_path.is_file() or not keys_path.is_file():
            raise IndexMismatch(f"index files for {manifest['generation']} are missing in {directory}; re-index")
        ann = AnnoyIndex(manifest["dim"], "angular")
        if manifest["count"]:
            try:
                ann.load(str(ann_path), prefault=False)
            except OSError as exc:
                raise IndexMismatch(f"cannot load {ann_path}: {exc}; re-index") from exc
            if ann.get_n_items() != manifest["count"] or ann.f != manifest["dim"]:
                raise IndexMismatch(
                    f"{ann_path} holds {ann.get_n_items()} items of dim {ann.f}, the manifest says "
                    f"{manifest['count']} of dim {manifest['dim']}; re-index"
                )
        keys = sqlite3.connect(f"file:{keys_path}?mode=ro", uri=True, check_same_thread=False)
        return cls(directory, manifest, ann, keys)

    def close(self) -> None:
        self._ann.unload()
        self._keys.close()

    # -- lookups -------------------------------------------------------------------------------
    @property
    def model_fingerprint(self) -> str:
        return self.manifest["model"]["fingerprint"]

    def item_of(self, key: str) -> int | None:
        with self._lock:
            r = self._keys.execute("SELECT item FROM keys WHERE key=?", (key,)).fetchone()
        return r[0] if r else None

    def keys_of(self, items: Sequence[int]) -> list[str]:
        if not items:
            return []
        with self._lock:
            rows = dict(
                self._keys.execute(
                    f"SELECT item, key FROM keys WHERE item IN ({','.join('?' * len(items))})", list(items)
                )
            )
        return [rows[i] for i in items]

    def all_keys(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._keys.execute("SELECT key FROM keys ORDER BY item")]

    def vector(self, key: str) -> np.ndarray | None:
        item = self.item_of(key)
        return None if item is None else np.asarray(self._ann.get_item_vector(item), np.float32)

    def _search_k(self, k: int) -> int:
        """Candidates Annoy inspects per query. Latency grows with it linearly (about 0.25 ms per
        1,000 candidates at 512 dims here) and recall with it too; the budget grows with the index
        so a million photos keep their recall (benchmarks/bench_ann.py sweeps it)."""
        return max(self.trees * k * 8, 4000, self.count // 125)

    def _results(self, items: list[int], dists: list[float], skip: int | None, k: int) -> list[tuple[str, float]]:
        pairs = [(i, d) for i, d in zip(items, dists) if i != skip][:k]
        keys = self.keys_of([i for i, _ in pairs])
        return [(key, float(angular_to_cosine(d))) for key, (_, d) in zip(keys, pairs)]

    def query_vector(self, vector: np.ndarray, k: int = 10, exclude: str | None = None) -> list[tuple[str, float]]:
        if self.count == 0:
            return []
        v = np.asarray(vector, np.float32).ravel()
        if v.shape[0] != self.dim:
            raise IndexMismatch(f"query vector has dim {v.shape[0]}, the index has {self.dim}")
        skip = self.item_of(exclude) if exclude is not None else None
        n = k + (skip is not None)
        items, dists = self._ann.get_nns_by_vector(v, n, search_k=self._search_k(n), include_distances=True)
        return self._results(items, dists, skip, k)

    def item_neighbours(self, item: int, k: int) -> tuple[list[int], list[float]]:
        """The k nearest items of an item (itself included) and their cosines, best first."""
        items, dists = self._ann.get_nns_by_item(item, k, search_k=self._search_k(k), include_distances=True)
        return items, [float(angular_to_cosine(d)) for d in dists]

    def query_key(self, key: str, k: int = 10) -> list[tuple[str, float]]:
        """Neighbours of an indexed item, itself excluded."""
        item = self.item_of(key)
        if item is None:
            raise KeyError(key)
        items, dists = self._ann.get_nns_by_item(item, k + 1, search_k=self._search_k(k + 1), include_distances=True)
        return self._results(items, dists, item, k)


def read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexMismatch(f"unreadable index manifest in {directory}: {exc}; re-index") from exc


def _remove_stale(directory: Path, keep: str) -> None:
    """Delete older generations and temp leftovers of crashed saves (best effort)."""
    for p in directory.iterdir():
        stale_gen = p.is_dir() and p.name.startswith("gen-") and p.name != keep
        leftover = p.name.startswith(".gen-") or p.name.startswith(f".{MANIFEST}.tmp-")
        if stale_gen or leftover:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

