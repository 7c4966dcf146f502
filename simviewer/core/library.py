"""A Library is a photo folder plus its catalog and index, kept up to date incrementally.

:meth:`Library.update` is a generator of progress events, so the CLI (tqdm), the GUI (a worker
thread) and the tests all drive the same code. It honours a stop flag between batches: a stopped
run keeps every batch it finished and leaves the previous index in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import calibration as calib
from .calibration import Calibration, CalibrationError, CalibrationProgress
from .catalog import Catalog, FileRecord
from .decoding import DECODER_NICE, DecoderPool, Prepared, ThreadDecoders, default_decoders, prepare_file
from .dedup.actions import journalled_hashes
from .embedder import Embedder
from .images import ARRAY_VARIANTS, VARIANTS, WalkErrors, walk_images
from .index import AnnIndex, clean_index_folder, read_manifest, usable_manifest
from .paths import data_root
from .safe_files import check_index_folder, open_lock_file, replace_file, unresolved_index_folder

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


@dataclass
class _Plan:
    """What a scan found: the folder's files, which must be read, and what is known already."""

    found: dict[str, tuple[int, int]]  # key -> (size, mtime_ns)
    todo: list[str]  # new or changed files, and files skipped before (retried on every run)
    unchanged: int
    removed: list[str]
    retried: dict[str, str]  # skipped before and unchanged since: key -> the reason then
    known_hashes: set[str]  # content that has a vector of this model
    known_content: dict[str, FileRecord]  # an ok record of each known content
    walk: WalkErrors
    passed_over: dict[str, str]  # what the walk did not list (a FIFO, a dangling link...): key -> why

    @property
    def needs_network(self) -> bool:
        """Some file to read is not a retry of a skipped one (those rarely need the network)."""
        return len(self.todo) > len(self.retried)


@dataclass
class _Ingest:
    """The middle phase of an update: reads, embeds and stores the plan's files, batch by batch."""

    folder: Path
    cat: Catalog
    embedder: Embedder
    plan: _Plan
    variants: tuple[str, ...]
    embedded: int = 0
    reused: int = 0
    done: int = 0
    embed_seconds: float = 0.0
    cancelled: bool = False
    skipped: dict[str, str] = field(default_factory=dict)  # key -> reason, in this run
    processed: set[str] = field(default_factory=set)

    def record(self, key: str, p: Prepared) -> _Prepared:
        """The catalog row of a decoded (or refused) file, with the pixels to embed if any."""
        size, mtime = self.plan.found[key]
        if p.digest is None or p.reason is not None:
            return _Prepared(FileRecord(key, size, mtime, p.digest, None, None, None, "skipped", p.reason), None)
        if p.known:
            same = self.plan.known_content.get(p.digest)
            if same is None:  # a false hit on the processes' compact digest set: decode it here
                return self.record(key, prepare_file(self.folder / key, self.embedder.preprocess.spec))
            return _Prepared(FileRecord(key, size, mtime, p.digest, same.width, same.height, same.format,
                                        "ok", None, same.taken_at), None)
        rec = FileRecord(key, size, mtime, p.digest, p.width, p.height, p.format, "ok", None, p.taken_at)
        return _Prepared(rec, None if p.digest in self.plan.known_hashes else p.pixels)

    def store(self, batch: list[_Prepared]) -> Iterator[FileSkipped]:
        """Embed the batch's new content (with its variants) and write it in one transaction;
        yields the files newly skipped (a retried file skipped for the same reason is no news)."""
        model = self.embedder.fingerprint
        # New content is embedded once, however many files in flight share it.
        unique: dict[str, np.ndarray] = {}
        for p in batch:
            if p.pixels is not None and p.record.hash not in self.plan.known_hashes:
                unique.setdefault(p.record.hash, p.pixels)
        vectors: list[tuple[str, np.ndarray]] = []
        extra: dict[str, list[tuple[str, np.ndarray]]] = {}
        if unique:
            t = time.perf_counter()
            pixels = list(unique.values())
            # The mirrored/rotated copies come from the same decoded pixels, in the same batch:
            # the centre crop commutes with flips and quarter turns.
            stacked = np.stack(pixels + [ARRAY_VARIANTS[k](a) for k in self.variants for a in pixels])
            vecs = self.embedder.embed_tensors(self.embedder.preprocess.normalise(stacked))
            self.embed_seconds += time.perf_counter() - t
            n = len(pixels)
            vectors = list(zip(unique.keys(), vecs[:n]))
            for v, kind in enumerate(self.variants, 1):
                extra[variant_model(model, kind)] = list(zip(unique.keys(), vecs[v * n : (v + 1) * n]))
            self.plan.known_hashes.update(unique.keys())
        self.cat.write_batch([p.record for p in batch], model, vectors)
        for variant_key, pairs in extra.items():
            self.cat.put_vectors(variant_key, pairs)
        for p in batch:
            key = p.record.path
            self.processed.add(key)
            if p.record.status == "skipped":
                reason = p.record.reason or "unreadable"
                self.skipped[key] = reason
                if self.plan.retried.get(key) != reason:
                    yield FileSkipped(key, reason)
            elif p.pixels is not None and unique.get(p.record.hash) is p.pixels:
                self.embedded += 1
            else:
                self.reused += 1
        self.done += len(batch)

    def all_skipped(self) -> list[tuple[str, str]]:
        """Every file not indexed now: skipped in this run, skipped before and not reached by a
        stopped run, and what the folder walk passed over."""
        left = {k: r for k, r in self.plan.retried.items() if k not in self.processed}
        return sorted({**self.plan.passed_over, **left, **self.skipped}.items())


class Library:
    def __init__(self, folder: str | os.PathLike, index_dir: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise LibraryError(f"not a folder: {folder}")
        self.index_dir = unresolved_index_folder(index_dir) if index_dir else default_index_dir(self.folder)
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

    def open_catalog(self, readonly: bool = False) -> Catalog:
        """The library's catalog; *readonly* needs no write access to the index folder."""
        return Catalog(self.catalog_path, readonly=readonly)

    def manifest(self) -> dict | None:
        return read_manifest(self.index_dir)

    def for_evaluation(self, fingerprint: str) -> Library:
        """The same folder with an index of its own for the model *fingerprint*, kept under this
        library's index folder (``eval/``): measuring another model neither replaces the folder's
        index nor costs its embeddings, and a second measurement reuses the first one's."""
        digest = hashlib.sha256(fingerprint.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return Library(self.folder, self.index_dir / "eval" / digest)

    def load_index(self, expected_model: str | None = None) -> AnnIndex:
        return AnnIndex.load(self.index_dir, expected_model)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        check_index_folder(self.index_dir, create=True)  # links in it are never written through
        replace_file(self.index_dir / "library.json", json.dumps({"folder": str(self.folder)}, indent=2).encode())
        with open_lock_file(self.index_dir / "lock") as fh:
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
            clean_index_folder(self.index_dir)  # what a killed save left
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

        In three phases: a scan compares the folder with the catalog and plans the work
        (:meth:`_scan`); the ingest reads, embeds and stores the new and changed files batch by
        batch (:meth:`_ingest`); the index is rebuilt from the catalog and the duplicate threshold
        calibrated (:meth:`_finish`). Files skipped before are read again on every run (they are
        few): one whose permissions were fixed is indexed.

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

        A stopped first indexing (no index yet) still builds the index of the photos embedded so
        far; a stopped update of an indexed folder leaves its previous index in use. A full disk
        ends the update with a CatalogFull or LibraryError that says so; every batch written
        before is kept, and so is the previous index.
        """
        unknown = [k for k in variants if k not in VARIANTS]
        if unknown:
            raise LibraryError(f"unknown variant {unknown[0]!r}; variants: {', '.join(VARIANTS)}")
        if decoders not in ("processes", "threads"):
            raise LibraryError(f"decoders must be 'processes' or 'threads', not {decoders!r}")
        should_stop = should_stop or (lambda: False)
        try:
            with self._lock(), self.open_catalog() as cat:
                yield from self._update(cat, embedder, batch_size, max(1, workers or default_decoders()),
                                        should_stop, decoders, decoder_nice, calibrate, tuple(variants))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise LibraryError(f"the disk holding {self.index_dir} is full ({exc.strerror}); the previous index "
                               "and every photo indexed before are kept; free some space and run again") from None

    def _update(self, cat: Catalog, embedder: Embedder, batch_size: int, workers: int, should_stop,
                decoders: str, decoder_nice: int, calibrate: bool = True,
                variants: tuple[str, ...] = ()) -> Iterator[Event]:
        t0 = time.perf_counter()
        plan = self._scan(cat, embedder.fingerprint)
        yield ScanDone(len(plan.found), len(plan.todo), plan.unchanged, len(plan.removed))
        for key, reason in plan.passed_over.items():
            yield FileSkipped(key, reason)
        ingest = _Ingest(self.folder, cat, embedder, plan, variants)
        yield from self._ingest(ingest, batch_size, workers, should_stop, decoders, decoder_nice, t0)
        rebuilt, indexed, calibration = yield from self._finish(cat, embedder, ingest, calibrate, should_stop)
        yield IndexSummary(
            total=len(plan.found),
            embedded=ingest.embedded,
            reused=ingest.reused + plan.unchanged,
            skipped=ingest.all_skipped(),
            removed=len(plan.removed),
            indexed=indexed,
            seconds=time.perf_counter() - t0,
            embed_seconds=ingest.embed_seconds,
            index_rebuilt=rebuilt,
            cancelled=ingest.cancelled,
            model_label=embedder.label,
            folder_errors=plan.walk.folders,
            calibration=calibration,
        )

    def _scan(self, cat: Catalog, model: str) -> _Plan:
        """Walk the folder, compare it with the catalog, forget removed files; plan the reads."""
        walk = WalkErrors()
        found: dict[str, tuple[int, int]] = {}
        for entry in walk_images(self.folder, walk):
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
        retried: dict[str, str] = {}
        unchanged = 0
        for key, (size, mtime) in found.items():
            rec = known.get(key)
            if rec is not None and rec.size == size and rec.mtime_ns == mtime:
                if rec.status == "skipped":
                    retried[key] = rec.reason or "unreadable"
                elif rec.hash in known_hashes:
                    unchanged += 1
                    continue
            todo.append(key)
        if removed:
            cat.remove_files(removed)
        passed_over = {Path(os.path.relpath(p, self.folder)).as_posix(): r for p, r in walk.files}
        return _Plan(found, todo, unchanged, removed, retried, known_hashes, known_content, walk, passed_over)

    def _ingest(self, ingest: _Ingest, batch_size: int, workers: int, should_stop: Callable[[], bool],
                decoders: str, decoder_nice: int, t0: float) -> Iterator[Event]:
        """Decode the plan's files in *workers* decoders while the network embeds the batch before;
        a stop ends it between batches, keeping every batch written."""
        plan, embedder = ingest.plan, ingest.embedder
        if not plan.todo:
            return
        pool_type = ThreadDecoders if decoders == "threads" else DecoderPool
        with pool_type(workers, embedder.preprocess.spec, plan.known_content, nice=decoder_nice) as pool:
            pending: list[tuple[str, Future]] = []
            it = iter(plan.todo)

            def top_up() -> None:
                # Keep two batches in flight (and every decoder busy) so decoding overlaps inference.
                while len(pending) < 2 * max(batch_size, workers):
                    key = next(it, None)
                    if key is None:
                        return
                    pending.append((key, pool.submit(self.folder / key)))

            top_up()
            if plan.needs_network and not embedder.built and embedder.builds_offline:
                # Build the network while the decoders read the first batch, not after it. A failure
                # here surfaces again where the network is really needed (if it is).
                with contextlib.suppress(Exception):
                    _ = embedder.inference_model
            while pending:
                if should_stop():
                    ingest.cancelled = True
                    break
                batch = [ingest.record(key, f.result()) for key, f in pending[:batch_size]]
                del pending[:batch_size]
                top_up()
                yield from ingest.store(batch)
                yield IndexProgress(ingest.done, len(plan.todo), ingest.embedded, ingest.reused,
                                    len(ingest.skipped), time.perf_counter() - t0, batch[-1].record.path)

    def _finish(self, cat: Catalog, embedder: Embedder, ingest: _Ingest, calibrate: bool,
                should_stop: Callable[[], bool]) -> Iterator[Event]:
        """Rebuild the index (and calibrate) after a full run; returns (rebuilt, indexed, calibration).

        A stopped run keeps the previous index; a stopped first indexing, which has none, gets the
        index of what it embedded, so its photos can be shown and searched at once."""
        if ingest.cancelled:
            manifest = None
            with contextlib.suppress(Exception):  # an unreadable one is as good as none
                manifest = self.manifest()
            if manifest is not None or ingest.done == 0:
                return False, (manifest or {}).get("count", 0), None
        if not ingest.cancelled:
            cat.drop_orphan_vectors(keep=self.undoable_hashes())
        rebuilt, indexed = yield from self._rebuild_index(cat, embedder)
        calibration = None
        if calibrate and not ingest.cancelled:
            calibration = yield from self._calibrate(cat, embedder, indexed, should_stop)
        return rebuilt, indexed, calibration

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
        manifest = usable_manifest(self.index_dir)  # a damaged one is rebuilt below
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
        return journalled_hashes(self.journal_dir)

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
        with self.open_catalog(readonly=True) as cat:
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
