"""Annoy nearest-neighbour index with a manifest, saved atomically, loaded memory-mapped.

On disk an index is a directory::

    manifest.json          which generation is current + what it was built from
    gen-000007/index.ann   the Annoy forest (angular metric)
    gen-000007/keys.sqlite item id -> key (a library-relative path)

A save writes a complete new ``gen-*`` directory under a temporary name, renames it into place,
and only then replaces ``manifest.json`` (``os.replace``). Whatever step a crash interrupts, the
manifest names a complete generation, so the previous index stays loadable; what a killed save
left is removed on the next run (:func:`clean_index_folder`), and a full disk ends the save with one
line while the previous index stays in use.

The manifest is checked strictly before anything is opened (:func:`validate_manifest`): a
generation is one of simviewer's own names inside the index folder, never a path, and every
number is within bounds. A reader whose generation is replaced while it loads (another process
rebuilt the index) reads the manifest again, once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from .model_spec import ModelSpec, ModelSpecError
from .paths import key_from_db, key_to_db
from .safe_files import (
    check_index_folder,
    is_disk_full,
    read_own_file,
    refuse_planted_links,
    remove_entry,
    remove_stale_temporaries,
    replace_file,
)
from .system import fsync_dir, fsync_file

log = logging.getLogger(__name__)

FORMAT = "simviewer-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Forests whose vectors take at least this much are built in their file, not in RAM.
ON_DISK_BUILD_BYTES = 256 * 2**20
GENERATION = re.compile(r"^gen-(\d{6,9})$")  # simviewer's own generation names, nothing else
MAX_COUNT = 10**9  # items; a manifest that says more is damaged
MAX_DIM = 65536
MAX_TREES = 1000


class IndexError_(Exception):
    """Base for index problems (named to avoid shadowing the builtin)."""


class IndexMissing(IndexError_):
    """The folder has not been indexed yet."""


class IndexMismatch(IndexError_):
    """An index that does not match its manifest, its files or the model asked for."""


class ManifestInvalid(IndexMismatch):
    """A manifest simviewer did not write (damaged or tampered with); re-indexing rebuilds it."""


class IndexChanged(IndexMismatch):
    """The index was replaced twice while it was being loaded: another process keeps rebuilding it."""


class IndexWriteFailed(IndexError_):
    """A save that could not be completed (a full disk, say); the previous index is kept."""


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
        model: dict | ModelSpec,
        extra: dict | None = None,
        trees: int | None = None,
        seed: int = 42,
    ) -> AnnIndex:
        """Build a forest over *vectors* named by *keys* and make it the current index.

        *vectors* is an (N, dim) array or any iterable of N vectors (float32 arrays or their raw
        bytes), so a caller can stream them from the catalog instead of holding them all. Large
        forests are built straight into their file (Annoy's on-disk build), so the build's memory
        is page cache the system can reclaim, not anonymous memory. A full disk raises
        :class:`IndexWriteFailed` in one line; the previous index stays current.
        """
        directory = check_index_folder(Path(directory), create=True)
        model = model.to_dict() if isinstance(model, ModelSpec) else dict(model)
        n = len(keys)
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and len(vectors):
            dim = vectors.shape[1]
        else:
            dim = int(model["dim"])
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and len(vectors) != n:
            raise ValueError(f"{len(vectors)} vectors but {n} keys")
        trees = trees or trees_for(n)
        gen = f"gen-{_next_generation(directory):06d}"
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "generation": gen, "model": model, "dim": dim,
            "count": n, "metric": "angular", "trees": trees, "built_at": time.time(), **(extra or {}),
        }
        tmp = directory / f".{gen}.tmp-{os.getpid()}"
        try:
            cls._write_generation(directory, tmp, gen, vectors, keys, dim, trees, seed)
            replace_file(directory / MANIFEST, json.dumps(manifest, indent=2).encode())
        except (OSError, sqlite3.OperationalError) as exc:
            remove_entry(tmp)
            if is_disk_full(exc):
                raise IndexWriteFailed(
                    f"the disk holding {directory} is full ({_reason(exc)}) while writing the index; the previous "
                    "index was kept. Free some space and index again") from None
            raise
        except BaseException:
            remove_entry(tmp)
            raise
        fsync_dir(directory)
        _checkpoint("manifest-replaced")
        _remove_stale(directory, keep=gen)
        return cls.load(directory)

    @classmethod
    def _write_generation(cls, directory: Path, tmp: Path, gen: str, vectors, keys: Sequence[str], dim: int,
                          trees: int, seed: int) -> None:
        """The forest and its keys in *tmp*, then renamed to *gen*: a complete generation or none."""
        remove_entry(tmp)
        tmp.mkdir(mode=0o700)
        cls._build_forest(tmp / "index.ann", vectors, len(keys), dim, trees, seed)
        fsync_file(tmp / "index.ann")
        _checkpoint("ann-written")
        db = sqlite3.connect(tmp / "keys.sqlite")
        try:
            with db:
                db.execute("CREATE TABLE keys (item INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)")
                db.executemany("INSERT INTO keys VALUES (?, ?)", ((i, key_to_db(k)) for i, k in enumerate(keys)))
        finally:
            db.close()
        fsync_file(tmp / "keys.sqlite")
        _checkpoint("keys-written")
        final = directory / gen
        remove_entry(final)  # a leftover from a crash after rename, never current
        os.replace(tmp, final)
        fsync_dir(directory)
        _checkpoint("generation-renamed")
        _checkpoint("manifest-written")

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

        *expected_model*: a model fingerprint; a different one raises :class:`IndexMismatch`. A
        generation that vanishes while it is opened (another process rebuilt the index and removed
        it) is followed to the new one, once.
        """
        directory = Path(directory)
        for attempt in range(2):
            manifest = read_manifest(directory)
            if manifest is None:
                raise IndexMissing(f"no index in {directory} yet: run `simviewer index FOLDER` first")
            fp = manifest["model"]["fingerprint"]
            if expected_model is not None and fp != expected_model:
                raise IndexMismatch(
                    f"the index in {directory} was built with {manifest['model'].get('label', fp)}, not the "
                    "model asked for; re-index with the model you want (simviewer index FOLDER --model ... "
                    "--weights ...)"
                )
            try:
                ann, keys = cls._open_generation(directory, manifest)
            except _Vanished as exc:
                if attempt == 0 and _manifest_changed(directory, manifest):
                    log.info("index in %s was replaced while loading (%s); loading the new one", directory, exc)
                    continue
                if attempt:
                    raise IndexChanged(f"the index in {directory} was replaced twice while it was loaded (another "
                                       "simviewer is rebuilding it); try again when it has finished") from None
                raise IndexMismatch(f"index files for {manifest['generation']} are missing or unreadable in "
                                    f"{directory} ({exc}); re-index the folder") from None
            return cls(directory, manifest, ann, keys)
        raise AssertionError("unreachable")

    @staticmethod
    def _open_generation(directory: Path, manifest: dict) -> tuple[AnnoyIndex, sqlite3.Connection]:
        """The forest (memory-mapped) and the keys of the manifest's generation; :class:`_Vanished`
        when its files are absent or cannot be opened, IndexMismatch when they disagree with it."""
        gen_dir = directory / manifest["generation"]
        ann_path, keys_path = gen_dir / "index.ann", gen_dir / "keys.sqlite"
        for path, kind in ((gen_dir, stat.S_ISDIR), (ann_path, stat.S_ISREG), (keys_path, stat.S_ISREG)):
            try:
                mode = os.lstat(path).st_mode
            except OSError as exc:
                raise _Vanished(f"{path.name}: {exc.strerror}") from None
            if not kind(mode):  # a link, or anything else simviewer did not write
                raise ManifestInvalid(f"{path} is not simviewer's own {'folder' if kind is stat.S_ISDIR else 'file'}"
                                      "; re-index the folder to rebuild it")
        try:
            keys = sqlite3.connect(f"file:{keys_path}?mode=ro", uri=True, check_same_thread=False)
            last = keys.execute("SELECT max(item) FROM keys").fetchone()[0]
        except sqlite3.Error as exc:
            raise _Vanished(f"keys.sqlite: {exc}") from None
        ann = AnnoyIndex(manifest["dim"], "angular")
        if manifest["count"]:
            try:
                ann.load(str(ann_path), prefault=False)
            except OSError as exc:
                keys.close()
                if not ann_path.exists():
                    raise _Vanished(f"index.ann: {exc}") from None
                raise IndexMismatch(f"cannot load {ann_path}: {exc}; re-index") from None
            if ann.get_n_items() != manifest["count"] or ann.f != manifest["dim"] or last != manifest["count"] - 1:
                n, f = ann.get_n_items(), ann.f
                ann.unload()
                keys.close()
                raise IndexMismatch(
                    f"{ann_path} holds {n} items of dim {f}, the manifest says "
                    f"{manifest['count']} of dim {manifest['dim']}; re-index"
                )
        return ann, keys

    def close(self) -> None:
        self._ann.unload()
        self._keys.close()

    # -- lookups -------------------------------------------------------------------------------
    @cached_property
    def model(self) -> ModelSpec:
        """The model this index was built with, with the library's calibrated threshold if measured."""
        spec = ModelSpec.from_dict(self.manifest["model"])
        from . import calibration  # imports this module

        cal = calibration.load(self.directory, spec.fingerprint)
        return spec.with_threshold(cal.threshold) if cal is not None else spec

    @property
    def model_fingerprint(self) -> str:
        return self.manifest["model"]["fingerprint"]

    def item_of(self, key: str) -> int | None:
        with self._lock:
            r = self._keys.execute("SELECT item FROM keys WHERE key=?", (key_to_db(key),)).fetchone()
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
        return [key_from_db(rows[i]) for i in items]

    def all_keys(self) -> list[str]:
        with self._lock:
            return [key_from_db(r[0]) for r in self._keys.execute("SELECT key FROM keys ORDER BY item")]

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


class _Vanished(Exception):
    """A generation's files are gone or cannot be opened: it may have been replaced meanwhile."""


def _manifest_changed(directory: Path, seen: dict) -> bool:
    try:
        now = read_manifest(directory)
    except IndexMismatch:
        return True
    return now is None or now.get("generation") != seen.get("generation") or now.get("built_at") != seen.get(
        "built_at")


def read_manifest(directory: Path) -> dict | None:
    """The index folder's manifest, checked (:func:`validate_manifest`); None when there is none."""
    try:
        raw = read_own_file(Path(directory) / MANIFEST, limit=1 << 20)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a link, not a plain file, larger than any manifest, unreadable
        raise ManifestInvalid(f"unreadable index manifest in {directory}: {exc}; re-index the folder to rebuild "
                              "it from the photos") from None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ManifestInvalid(f"unreadable index manifest in {directory}: {exc}; re-index the folder to rebuild "
                              "it from the photos") from None
    return validate_manifest(Path(directory), manifest)


def _int_in(manifest: dict, name: str, low: int, high: int) -> int:
    value = manifest.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} is {value!r}, not a whole number from {low} to {high}")
    return value


def validate_manifest(directory: Path, manifest: object) -> dict:
    """*manifest* if it is one simviewer wrote, else :class:`ManifestInvalid` saying what is wrong.

    The generation must be one of simviewer's own names (``gen-`` and six to nine digits) and so
    lies inside *directory*; counts, dimensions and trees must be within bounds and agree with the
    model; another format or version is reported as such.
    """
    if not isinstance(manifest, dict):
        raise ManifestInvalid(f"the index manifest in {directory} is not an object; re-index the folder")
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise IndexMismatch(
            f"{directory} holds index format {str(manifest.get('format'))[:40]} v{str(manifest.get('version'))[:20]}, "
            f"this simviewer reads {FORMAT} v{FORMAT_VERSION}; re-index the folder"
        )
    try:
        gen = manifest.get("generation")
        if not isinstance(gen, str) or not GENERATION.match(gen):
            raise ValueError(f"generation {str(gen)[:80]!r} is not a simviewer generation name (gen-NNNNNN)")
        if (directory / gen).parent != directory:
            raise ValueError(f"generation {gen!r} lies outside the index folder")
        if manifest.get("metric") != "angular":
            raise ValueError(f"metric is {str(manifest.get('metric'))[:40]!r}, not angular")
        dim = _int_in(manifest, "dim", 1, MAX_DIM)
        _int_in(manifest, "count", 0, MAX_COUNT)
        _int_in(manifest, "trees", 1, MAX_TREES)
        built = manifest.get("built_at", 0.0)
        if isinstance(built, bool) or not isinstance(built, int | float) or not math.isfinite(built):
            raise ValueError(f"built_at is {str(built)[:40]!r}, not a time")
        for name in ("content_digest", "folder"):
            if name in manifest and not isinstance(manifest[name], str):
                raise ValueError(f"{name} is not a text")
        spec = ModelSpec.from_dict(manifest.get("model"))
        if spec.dim != dim:
            raise ValueError(f"dim {dim} is not the {spec.dim} of the model {spec.arch}")
    except (ValueError, ModelSpecError) as exc:
        raise ManifestInvalid(f"the index manifest in {directory} is damaged or was not written by simviewer: "
                              f"{exc}; re-index the folder to rebuild it from the photos") from None
    return manifest


def indexed_model(directory: str | Path) -> ModelSpec | None:
    """The model of the index in *directory*; None when there is no index, or when its manifest is
    damaged (a warning says what is wrong: the next indexing rebuilds it from the photos)."""
    try:
        manifest = read_manifest(Path(directory))
    except IndexMismatch as exc:
        log.warning("%s", exc)
        return None
    return None if manifest is None else ModelSpec.from_dict(manifest["model"])


def _next_generation(directory: Path) -> int:
    """One more than any generation the manifest or the folder names (a damaged manifest counts as none)."""
    numbers = [0]
    try:
        current = read_manifest(directory)
    except IndexMismatch:
        current = None
    if current is not None:
        numbers.append(int(GENERATION.match(current["generation"]).group(1)))
    numbers += [int(m.group(1)) for entry in os.scandir(directory) if (m := GENERATION.match(entry.name))]
    return max(numbers) + 1


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _remove_stale(directory: Path, keep: str) -> None:
    """Delete older generations and temp leftovers of crashed saves (best effort)."""
    for entry in os.scandir(directory):
        if GENERATION.match(entry.name) and entry.name != keep:
            remove_entry(directory / entry.name)
    remove_stale_temporaries(directory)


def clean_index_folder(directory: str | Path) -> list[str]:
    """What killed saves left in *directory*: simviewer's own temporary names, and generations the
    (valid) manifest does not name. Call it where no other process saves (under the library lock),
    before the catalog is opened: a link planted in place of the catalog is refused
    (UnsafeIndexFolder), one in place of the manifest or the calibration removed (its target left
    alone). Returns the names removed."""
    directory = Path(directory)
    removed = refuse_planted_links(directory) + remove_stale_temporaries(directory)
    try:
        current = read_manifest(directory)
    except IndexMismatch:
        current = None  # nothing else is removed: the next save replaces it
    if current is not None and os.path.isdir(directory / current["generation"]):
        for entry in os.scandir(directory):
            if GENERATION.match(entry.name) and entry.name != current["generation"]:
                remove_entry(directory / entry.name)
                removed.append(entry.name)
    if removed:
        log.info("removed what an interrupted save left in %s: %s", directory, ", ".join(sorted(removed)))
    return removed


def usable_manifest(directory: str | Path) -> dict | None:
    """The manifest of the index in *directory*, or None when there is none or it is damaged (said in
    the log): what a writer that rebuilds the index from the photos needs."""
    try:
        return read_manifest(Path(directory))
    except IndexMismatch as exc:
        log.info("%s", exc)
        return None
