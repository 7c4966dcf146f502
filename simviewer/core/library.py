"""A Library is a photo folder plus its catalog and index, kept up to date incrementally.

:meth:`Library.update` is a generator of progress events, so the CLI (tqdm), the GUI (a worker
thread) and the tests all drive the same code. It honours a stop flag between batches: a stopped
run keeps every batch it finished and leaves the previous index in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import calibration as calib
from .calibration import Calibration, CalibrationError, CalibrationProgress
from .catalog import Catalog, FileRecord
from .decoding import DECODER_NICE, DecoderPool, Prepared, ThreadDecoders, default_decoders, prepare_file
from .embedder import Embedder
from .images import ARRAY_VARIANTS, VARIANTS, ImageError, WalkErrors, load_image, walk_images
from .index import AnnIndex, read_manifest
from .paths import data_root

log = logging.getLogger(__name__)



class LibraryError(Exception):
    """A folder that cannot be opened or updated; the message says why."""


# -- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanDone:
    """The folder was walked and compared with the catalog."""

    total: int  # image files found
    to_process: int  # new or changed: must be read (and embedded unless the content is known)
    unchanged: int
    removed: int


@dataclass(frozen=True)
class IndexProgress:
    done: int
    total: int  # files to process in this run
    embedded: int
    reused: int
    skipped: int
    elapsed: float
    last_path: str

    @property
    def eta(self) -> float | None:
        if self.done == 0 or self.done >= self.total:
            return None
        return self.elapsed / self.done * (self.total - self.done)


@dataclass(frozen=True)
class FileSkipped:
    path: str
    reason: str


@dataclass(frozen=True)
class IndexBuilding:
    count: int


@dataclass(frozen=True)
class IndexSummary:
    total: int  # image files in the folder
    embedded: int  # computed in this run
    reused: int  # unchanged, or content already known (copies, renames)
    skipped: list[tuple[str, str]]  # every file that is not indexed, with its reason
    removed: int
    indexed: int  # items in the index now
    seconds: float
    embed_seconds: float
    index_rebuilt: bool
    cancelled: bool
    model_label: str
    folder_errors: list[tuple[str, str]] = field(default_factory=list)
    calibration: Calibration | None = None  # the library's duplicate threshold for this model

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "embedded": self.embedded,
            "reused": self.reused,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "removed": self.removed,
            "indexed": self.indexed,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "index_rebuilt": self.index_rebuilt,
            "cancelled": self.cancelled,
            "model": self.model_label,
            "unreadable_folders": [{"path": p, "reason": r} for p, r in self.folder_errors],
            "calibration": None if self.calibration is None else {
                "threshold": round(self.calibration.threshold, 6), "reliable": self.calibration.reliable,
                "photos": self.calibration.photos, "separation": round(self.calibration.separation, 4)},
        }


Event = ScanDone | IndexProgress | FileSkipped | IndexBuilding | CalibrationProgress | IndexSummary


@dataclass(frozen=True)
class VariantProgress:
    """Mirrored/rotated copies embedded for flip- and rotation-invariant matching."""

    done: int
    total: int


@dataclass(frozen=True)
class VariantVectors:
    """The last event of :meth:`Library.variant_vectors`: kind -> content hash -> vector."""

    vectors: dict[str, dict[str, np.ndarray]]
    skipped: list[tuple[str, str]]


def variant_model(fingerprint: str, kind: str) -> str:
    """Catalog key of the vectors of a variant (mirror, rot90, rot180) of each photo."""
    return f"{fingerprint}#{kind}"


def final_summary(events: Iterator[Event]) -> IndexSummary:
    """Drive an update to its end, ignoring progress; returns its summary."""
    summary = None
    for ev in events:
        if isinstance(ev, IndexSummary):
            summary = ev
    if summary is None:
        raise LibraryError("the update ended without a summary")
    return summary


# -- helpers ------------------------------------------------------------------------------------
def default_index_dir(folder: str | os.PathLike) -> Path:
    """Per-user location of a folder's index, keyed by its absolute path."""
    folder = Path(folder).resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name)[:40] or "root"
    digest = hashlib.sha256(str(folder).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return data_root() / "libraries" / f"{slug}-{digest}"


@dataclass
class _Prepared:
    record: FileRecord
    pixels: np.ndarray | None  # None when skipped or when the content's vector is known


class Library:
    def __init__(self, folder: str | os.PathLike, index_dir: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise LibraryError(f"not a folder: {folder}")
        self.index_dir = Path(index_dir).expanduser().resolve() if index_dir else default_index_dir(self.folder)
        self.catalog_path = self.index_dir / "catalog.sqlite"

    def __repr__(self) -> str:
        return f"Library({str(self.folder)!r}, index_dir={str(self.index_dir)!r})"

    # -- paths -------------------------------------------------------------------------------
    def key_for(self, path: str | os.PathLike) -> str | None:
        """Catalog key of an absolute path inside the folder, else None."""
        try:
            rel = Path(path).resolve().relative_to(self.folder)
        except ValueError:
            return None
        return rel.as_posix()

    def path_for(self, key: str) -> Path:
        return self.folder / key

    def open_catalog(self) -> Catalog:
        return Catalog(self.catalog_path)

    def manifest(self) -> dict | None:
        return read_manifest(self.index_dir)

    def load_index(self, expected_model: str | None = None) -> AnnIndex:
        return AnnIndex.load(self.index_dir, expected_model)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        (self.index_dir / "library.json").write_text(json.dumps({"folder": str(self.folder)}, indent=2))
        with open(self.index_dir / "lock", "w") as fh:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows: no advisory lock
                fcntl = None
            try:
                if fcntl is not None:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LibraryError(
                    f"{self.folder} is being indexed by another simviewer process; wait for it to finish"
                ) from None
            yield

    # -- update ------------------------------------------------------------------------------
    def update(
        self,
        embedder: Embedder,
        *,
        batch_size: int = 16,
        workers: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        decoders: str = "threads",
        decoder_nice: int = DECODER_NICE,
        calibrate: bool = True,
        variants: tuple[str, ...] = tuple(VARIANTS),
    ) -> Iterator[Event]:
        """Bring catalog and index up to date with the folder; yields events, ends with IndexSummary.

        *workers* decoders (default: one fewer than the cores, at least 2) read, hash and decode
        photos while the network embeds the previous batch, at a CPU priority *decoder_nice* steps
        below the network's (Linux), so that they fill the gaps the network leaves instead of
        slowing it down. They are threads of this process by default: Pillow and hashlib release
        the GIL, and decoder processes measured no faster (benchmarks/bench_ingest.py).
        *decoders* ``"processes"`` runs them in worker processes instead, which costs start-up
        time and memory but turns a decoder crash on a hostile file into one skipped file and
        leaves the GIL to the caller's other threads (the window indexes this way). Every
        worker has ended when this generator finishes, is stopped, raises or is closed. Batches of
        16 keep a ResNet-50's activations in cache: faster in the network than 32, and the first
        results come sooner. With *calibrate*, a library whose model has no duplicate threshold yet
        (or that changed size a lot) gets one measured on its own photos (core.calibration),
        yielding CalibrationProgress as it goes. Each new photo's *variants* (mirrored and rotated
        copies, core.images.VARIANTS) are embedded with it, from the same decoded pixels, for the
        flip- and rotation-invariant duplicate search: that costs embedding time here, once, instead
        of a decode and an embedding of every photo again at the first "Find duplicates".
        """
        unknown = [k for k in variants if k not in VARIANTS]
        if unknown:
            raise LibraryError(f"unknown variant {unknown[0]!r}; variants: {', '.join(VARIANTS)}")
        if decoders not in ("processes", "threads"):
            raise LibraryError(f"decoders must be 'processes' or 'threads', not {decoders!r}")
        should_stop = should_stop or (lambda: False)
        with self._lock(), self.open_catalog() as cat:
            yield from self._update(cat, embedder, batch_size, max(1, workers or default_decoders()), should_stop,
                                    decoders, decoder_nice, calibrate, tuple(variants))

    def _update(self, cat: Catalog, embedder: Embedder, batch_size: int, workers: int, should_stop,
                decoders: str, decoder_nice: int, calibrate: bool = True,
                variants: tuple[str, ...] = ()) -> Iterator[Event]:
        t0 = time.perf_counter()
        model = embedder.fingerprint
        walk_errors = WalkErrors()
        found: dict[str, tuple[int, int]] = {}
        for entry in walk_images(self.folder, walk_errors):
            try:
                st = entry.stat()
            except OSError as exc:
                log.debug("vanished during scan: %s (%s)", entry.path, exc)
                continue
            found[Path(entry.path).relative_to(self.folder).as_posix()] = (st.st_size, st.st_mtime_ns)

        known = cat.files()
        known_hashes = cat.hashes_with_vectors(model)
        removed = [p for p in known if p not in found]
        # Facts of known content, so a renamed or copied photo needs no decode at all.
        known_content = {r.hash: r for r in known.values() if r.status == "ok" and r.hash in known_hashes}
        todo: list[str] = []
        skipped_before: list[tuple[str, str]] = []
        unchanged = 0
        for key, (size, mtime) in found.items():
            rec = known.get(key)
            if rec is not None and rec.size == size and rec.mtime_ns == mtime:
                if rec.status == "skipped":
                    skipped_before.append((key, rec.reason or "unreadable"))
                    continue
                if rec.hash in known_hashes:
                    unchanged += 1
                    continue
            todo.append(key)
        if removed:
            cat.remove_files(removed)
        yield ScanDone(len(found), len(todo), unchanged + len(skipped_before), len(removed))

        embedded = reused = 0
        skipped_now: list[tuple[str, str]] = []
        embed_seconds = 0.0
        cancelled = False
        done = 0
        spec = embedder.preprocess.spec

        def record(key: str, p: Prepared) -> _Prepared:
            size, mtime = found[key]
            if p.digest is None or p.reason is not None:
                return _Prepared(FileRecord(key, size, mtime, p.digest, None, None, None, "skipped", p.reason), None)
            if p.known:
                same = known_content.get(p.digest)
                if same is None:  # a false hit on the processes' compact digest set: decode it here
                    return record(key, prepare_file(self.folder / key, spec))
                return _Prepared(FileRecord(key, size, mtime, p.digest, same.width, same.height, same.format,
                                            "ok", None, same.taken_at), None)
            rec = FileRecord(key, size, mtime, p.digest, p.width, p.height, p.format, "ok", None, p.taken_at)
            return _Prepared(rec, None if p.digest in known_hashes else p.pixels)

        pool_type = ThreadDecoders if decoders == "threads" else DecoderPool
        pool_or_none = pool_type(workers, spec, known_content, nice=decoder_nice) if todo else contextlib.nullcontext()
        with pool_or_none as pool:
            pending: list[tuple[str, Future]] = []
            it = iter(todo)

            def top_up() -> None:
                # Keep two batches in flight (and every decoder busy) so decoding overlaps inference.
                while len(pending) < 2 * max(batch_size, workers):
                    key = next(it, None)
                    if key is None:
                        return
                    pending.append((key, pool.submit(self.folder / key)))

            top_up()
            if pending and not embedder.built and embedder.builds_offline:
                # Build the network while the decoders read the first batch, not after it. A failure
                # here surfaces again where the network is really needed (if it is).
                with contextlib.suppress(Exception):
                    _ = embedder.inference_model
            while pending:
                if should_stop():
                    cancelled = True
                    break
                batch = [record(key, f.result()) for key, f in pending[:batch_size]]
                del pending[:batch_size]
                top_up()
                # New content is embedded once, however many files in flight share it.
                unique: dict[str, np.ndarray] = {}
                for p in batch:
                    if p.pixels is not None and p.record.hash not in known_hashes:
                        unique.setdefault(p.record.hash, p.pixels)
                vectors: list[tuple[str, np.ndarray]] = []
                extra: dict[str, list[tuple[str, np.ndarray]]] = {}
                if unique:
                    t = time.perf_counter()
                    pixels = list(unique.values())
                    # The mirrored/rotated copies come from the same decoded pixels, in the same batch:
                    # the centre crop commutes with flips and quarter turns.
                    stacked = np.stack(pixels + [ARRAY_VARIANTS[k](a) for k in variants for a in pixels])
                    vecs = embedder.embed_tensors(embedder.preprocess.normalise(stacked))
                    embed_seconds += time.perf_counter() - t
                    n = len(pixels)
                    vectors = list(zip(unique.keys(), vecs[:n]))
                    for v, kind in enumerate(variants, 1):
                        extra[variant_model(model, kind)] = list(zip(unique.keys(), vecs[v * n : (v + 1) * n]))
                    known_hashes.update(unique.keys())
                cat.write_batch([p.record for p in batch], model, vectors)
                for variant_key, pairs in extra.items():
                    cat.put_vectors(variant_key, pairs)
                for p in batch:
                    if p.record.status == "skipped":
                        skipped_now.append((p.record.path, p.record.reason or "unreadable"))
                        yield FileSkipped(p.record.path, p.record.reason or "unreadable")
                    elif p.pixels is not None and unique.get(p.record.hash) is p.pixels:
                        embedded += 1
                    else:
                        reused += 1
                done += len(batch)
                yield IndexProgress(done, len(todo), embedded, reused, len(skipped_now),
                                    time.perf_counter() - t0, batch[-1].record.path)

        skipped = sorted(skipped_before + skipped_now)
        rebuilt = False
        indexed = 0
        calibration = None
        if not cancelled:
            cat.drop_orphan_vectors(keep=self.undoable_hashes())
            rebuilt, indexed = yield from self._rebuild_index(cat, embedder)
            if calibrate:
                calibration = yield from self._calibrate(cat, embedder, indexed, should_stop)
        else:
            with contextlib.suppress(Exception):
                indexed = (self.manifest() or {}).get("count", 0)
        yield IndexSummary(
            total=len(found),
            embedded=embedded,
            reused=reused + unchanged,
            skipped=skipped,
            removed=len(removed),
            indexed=indexed,
            seconds=time.perf_counter() - t0,
            embed_seconds=embed_seconds,
            index_rebuilt=rebuilt,
            cancelled=cancelled,
            model_label=embedder.label,
            folder_errors=walk_errors.folders,
            calibration=calibration,
        )

    def calibration(self, fingerprint: str) -> Calibration | None:
        """The library's duplicate threshold for the model *fingerprint*, if it was measured."""
        return calib.load(self.index_dir, fingerprint)

    def _calibrate(self, cat: Catalog, embedder: Embedder, indexed: int,
                   should_stop: Callable[[], bool]) -> Iterator[Event]:
        """Measure the duplicate threshold on the library's own photos when this model has none
        yet or the library changed size a lot since (core.calibration); returns the one in force."""
        current = calib.load(self.index_dir, embedder.fingerprint)
        if indexed == 0 or not calib.needs_calibration(current, embedder.fingerprint, indexed):
            return current
        hashes = dict(cat.indexed_keys(embedder.fingerprint))
        paths = {key: self.folder / key for key in hashes}
        # The turned copies of the photos calibration will sample (the same sample: same keys, same seed).
        sampled = [hashes[key] for key in calib.sample_keys(list(hashes), calib.DEFAULT_SAMPLE)]
        variants = {kind: {h: v for h in sampled
                           if (v := cat.vector(h, variant_model(embedder.fingerprint, kind))) is not None}
                    for kind in VARIANTS}
        index = self.load_index(embedder.fingerprint)
        try:
            result = None
            for ev in calib.calibrate(index, paths, hashes, embedder, should_stop=should_stop,
                                      variant_vectors=variants):
                if isinstance(ev, Calibration):
                    result = ev
                else:
                    yield ev
        except CalibrationError as exc:
            log.warning("no calibration for %s: %s", self.folder, exc)
            return current
        finally:
            index.close()
        calib.save(self.index_dir, result)
        return result

    def _rebuild_index(self, cat: Catalog, embedder: Embedder) -> Iterator[Event]:
        """Rebuild the Annoy index unless it already holds exactly the catalog's items."""
        model = embedder.fingerprint
        keys: list[str] = []
        h = hashlib.blake2b(digest_size=16)
        for path, content_hash in cat.indexed_keys(model):
            keys.append(path)
            h.update(f"{path}\0{content_hash}\n".encode("utf-8", "surrogateescape"))
        digest = h.hexdigest()
        manifest = self.manifest()
        if (
            manifest is not None
            and manifest.get("model", {}).get("fingerprint") == model
            and manifest.get("content_digest") == digest
        ):
            try:
                self.load_index(model).close()
                return False, len(keys)
            except Exception as exc:  # damaged or missing files: rebuild below
                log.warning("index in %s unusable (%s); rebuilding", self.index_dir, exc)
        yield IndexBuilding(len(keys))
        # Vectors stream from the catalog into the forest: a million photos never sit in memory
        # twice (the library lock keeps the catalog as it was when the keys were read).
        AnnIndex.build_and_save(
            self.index_dir, cat.indexed_vectors(model), keys, embedder.describe(),
            extra={"content_digest": digest, "folder": str(self.folder)},
        ).close()
        return True, len(keys)

    @property
    def journal_dir(self) -> Path:
        """Undo journals of duplicate clean-ups (see core.dedup)."""
        return self.index_dir / "journal"

    def undoable_hashes(self) -> set[str]:
        """Content hashes of files moved away by a clean-up that can still be undone: their
        vectors are kept, so an undo costs no embedding."""
        hashes: set[str] = set()
        if self.journal_dir.is_dir():
            for journal in self.journal_dir.glob("*.jsonl"):
                with contextlib.suppress(OSError, ValueError):
                    for line in journal.read_text(encoding="utf-8").splitlines():
                        rec = json.loads(line)
                        if "hash" in rec:
                            hashes.add(rec["hash"])
        return hashes

    def variant_vectors(
        self, embedder: Embedder, files: list[tuple[str, Path]], kinds: tuple[str, ...] = tuple(VARIANTS),
        *, batch_size: int = 32, workers: int | None = None, should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[VariantProgress | VariantVectors]:
        """Vectors of mirrored and rotated copies of *files* ((content hash, path) pairs).

        Made once per content and model and kept in the catalog, so only new photos cost
        anything on the next run. A stop keeps every finished batch; the final event then
        holds what exists so far.
        """
        unknown = [k for k in kinds if k not in VARIANTS]
        if unknown:
            raise LibraryError(f"unknown variant {unknown[0]!r}; variants: {', '.join(VARIANTS)}")
        should_stop = should_stop or (lambda: False)
        models = {k: variant_model(embedder.fingerprint, k) for k in kinds}
        skipped: list[tuple[str, str]] = []
        with self.open_catalog() as cat:
            have = {k: cat.hashes_with_vectors(m) for k, m in models.items()}
            todo: dict[str, Path] = {}
            for h, path in files:
                if h not in todo and any(h not in have[k] for k in kinds):
                    todo[h] = path
            items = list(todo.items())
            min_side = embedder.preprocess.min_side

            def prepare(item: tuple[str, Path]):
                h, path = item
                try:
                    im = load_image(path, min_side).image
                except ImageError as exc:
                    return h, path, None, str(exc)
                return h, path, {k: embedder.preprocess(VARIANTS[k](im)) for k in kinds if h not in have[k]}, ""

            done = 0
            yield VariantProgress(0, len(items))
            decoders = max(1, workers or default_decoders())
            with ThreadPoolExecutor(decoders, thread_name_prefix="simviewer-variants") as pool:
                for start in range(0, len(items), batch_size):
                    if should_stop():
                        break
                    batch = list(pool.map(prepare, items[start : start + batch_size]))
                    tensors, owners = [], []
                    for h, path, prepared, reason in batch:
                        if prepared is None:
                            skipped.append((str(path), reason))
                            continue
                        for k, t in prepared.items():
                            tensors.append(t)
                            owners.append((k, h))
                    for s in range(0, len(tensors), batch_size):
                        vecs = embedder.embed_tensors(torch.stack(tensors[s : s + batch_size]))
                        chunk = owners[s : s + batch_size]
                        for k in kinds:
                            pairs = [(h, v) for (kk, h), v in zip(chunk, vecs) if kk == k]
                            if pairs:
                                cat.put_vectors(models[k], pairs)
                    done += len(batch)
                    yield VariantProgress(done, len(items))
            wanted = {h for h, _ in files}
            vectors = {k: {h: v for h, v in cat.vectors_for(m).items() if h in wanted} for k, m in models.items()}
        yield VariantVectors(vectors, skipped)

    # -- queries -----------------------------------------------------------------------------
    def stored_vector(self, path: str | os.PathLike, model: str) -> np.ndarray | None:
        """The catalog's vector for *path* if it is in the library and unchanged since indexing."""
        key = self.key_for(path)
        if key is None or not self.catalog_path.exists():
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        with self.open_catalog() as cat:
            rec = cat.file(key)
            if rec is None or rec.status != "ok" or rec.size != st.st_size or rec.mtime_ns != st.st_mtime_ns:
                return None
            return cat.vector(rec.hash, model) if rec.hash else None

    def query_image(
        self, path: str | os.PathLike, k: int, index: AnnIndex, embedder_factory: Callable[[], Embedder]
    ) -> list[tuple[Path, float]]:
        """Lookalikes of any image file, in the library or not; the image itself is left out."""
        model = index.model_fingerprint
        vec = self.stored_vector(path, model)
        if vec is None:
            embedder = embedder_factory()
            if embedder.fingerprint != model:
                raise LibraryError("the embedder does not match the index's model")
            vec = embedder.embed_paths([path])[0]
        key = self.key_for(path)
        return [(self.path_for(k_), s) for k_, s in index.query_vector(vec, k, exclude=key)]
