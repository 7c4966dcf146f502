"""The open library, its index and the indexing worker: one object the window and its tabs share.

A :class:`LibrarySession` is what a tab is given instead of the window. It opens a library, brings
it up to date on a :class:`GeneratorThread` (``Library.update``), loads the index and the grid's
rows on another, and says what happened through signals: ``opened`` when a folder is opened,
``index_ready`` when an index is in use, ``indexing_changed`` when a run starts or ends,
``event`` for every event of a run, ``failed`` when a run ends on an error, and ``rows_changed``
when the photos to show change (an index was loaded, or a first indexing embedded more photos).

A library keeps the model it was indexed with: opening it brings it up to date with that model,
and only :meth:`use_model` switches (and re-indexes). A new library gets
``core.embedder.default_model()``, decided on the indexing thread (it may ask the network whether
the ResNet-50 weights can be downloaded), and the bundled pretrained model stands in without a
question where that download then fails.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QObject, QSettings, Signal

from ..core import embedder as embedding
from ..core.embedder import Embedder
from ..core.index import AnnIndex, indexed_model
from ..core.library import IndexProgress, IndexSummary, Library, default_index_dir
from .models import FileRow
from .workers import GeneratorThread, stop_all

log = logging.getLogger(__name__)

KEPT_REASON = "the model this library was indexed with (choose another and press “Use model” to switch)"
CHOSEN_REASON = "your choice"
# While a first indexing runs, the photos embedded so far are read from the catalog this often.
LIVE_ROWS_SECONDS = 1.0


class Feedback(Protocol):
    """What a tab may ask of the person in front of the window."""

    def ask(self, title: str, text: str, yes: str, no: str = "Cancel") -> bool: ...

    def error(self, title: str, text: str) -> None: ...


@dataclass(frozen=True)
class ModelInUse:
    """The first event of every indexing run: the model it uses and why."""

    embedder: Embedder
    reason: str
    automatic: bool = False  # chosen for the user: a new library's default
    fallback: bool = False  # the default's ImageNet weights could not be had: the bundled model stands in


def model_for_run(library: Library, chosen: Embedder | None, default: bool) -> Iterator[ModelInUse]:
    """Decide the model of an indexing run (on its thread); yields ModelInUse, returns the embedder.

    *chosen*: the user's explicit choice. Otherwise the library's own model (its index's), or for a
    new library (or with *default*) the default model; where that is ResNet-50 and its weights
    cannot be downloaded, the pretrained model installed with simviewer, without asking: an
    untrained network is only ever the user's choice.
    """
    if chosen is not None:
        yield ModelInUse(chosen, CHOSEN_REASON)
        return chosen
    spec = None if default else indexed_model(library.index_dir)
    if spec is not None:
        own = Embedder.from_spec(spec)
        yield ModelInUse(own, KEPT_REASON)
        return own
    emb, choice = embedding.default_embedder()
    yield ModelInUse(emb, choice.reason, automatic=True, fallback=choice.fallback)
    return emb


def library_rows(library: Library, keys: list[str] | None = None) -> list[FileRow]:
    """Grid rows of *keys* (all readable photos of the catalog when None), from the catalog."""
    with library.open_catalog() as cat:
        files = cat.files()
    if keys is None:
        keys = [k for k, rec in files.items() if rec.status == "ok"]
    rows = []
    for key in keys:
        rec = files.get(key)
        if rec is not None:
            rows.append(FileRow(library.path_for(key), rec.size, rec.mtime_ns, rec.width, rec.height))
    return rows


def has_index(library: Library) -> bool:
    try:
        return library.manifest() is not None
    except Exception:  # an unreadable manifest: the run says what is wrong
        return True


class LibrarySession(QObject):
    """The open library, its index and the one indexing run at a time (see the module's text)."""

    opened = Signal(object)  # the Library just opened
    index_ready = Signal(object)  # the AnnIndex now in use (or None)
    indexing_changed = Signal(bool)  # True while an indexing run is going
    event = Signal(object)  # each event of an indexing run: ModelInUse, ScanDone, IndexProgress, ...
    failed = Signal(object)  # the exception an indexing run ended on
    rows_changed = Signal(object)  # list[FileRow]: the photos of the open library to show

    def __init__(self, settings: QSettings | None = None, index_root: Path | None = None, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings or QSettings("simviewer", "simviewer")
        self.index_root = index_root  # tests put indexes here; None: the per-user data folder
        self.library: Library | None = None
        self.index: AnnIndex | None = None
        self.rows: list[FileRow] = []
        self.embedder: Embedder | None = None  # the model of the current (or last) run
        self.worker: GeneratorThread | None = None
        self.loading = False  # True while the index and grid rows load on a worker
        self.last_summary: IndexSummary | None = None
        self.skipped: list[tuple[str, str]] = []
        self.closing = False
        self._indexing = False
        self._first_run = False  # the current run indexes a library that had no index
        self._restart: tuple[Embedder | None, bool, str] | None = None
        self._load_worker: GeneratorThread | None = None
        self._rows_worker: GeneratorThread | None = None
        self._rows_at = 0.0

    # -- state ---------------------------------------------------------------------------------
    @property
    def indexing(self) -> bool:
        """True from start_indexing until the run's last event has been handled."""
        return self._indexing

    def recent(self) -> list[str]:
        return [p for p in (self.settings.value("recent", []) or []) if os.path.isdir(p)]

    def _remember(self, folder: str) -> None:
        recent = [folder] + [p for p in (self.settings.value("recent", []) or []) if p != folder]
        self.settings.setValue("recent", recent[:10])

    def index_dir_for(self, folder: Path) -> Path | None:
        return None if self.index_root is None else self.index_root / default_index_dir(folder).name

    # -- opening -------------------------------------------------------------------------------
    def open(self, folder: str | os.PathLike) -> Library:
        """Open *folder* (raises what Library raises: the caller says it), show what is indexed,
        and bring it up to date with its own model (a new library: the default one)."""
        library = Library(folder, self.index_dir_for(Path(folder)))
        self.library = library
        # The previous library's index is dropped, not closed: a search may still be using it.
        self.index = None
        self.rows = []
        self.skipped = []
        self.last_summary = None
        self._remember(str(library.folder))
        self.opened.emit(library)
        self.rows_changed.emit([])
        self.index_ready.emit(None)
        self.load_index()
        self.start_indexing()
        return library

    # -- indexing ------------------------------------------------------------------------------
    def start_indexing(self, reason: str = "") -> None:
        """Index the open library with its own model (a new library: the default model)."""
        self._start(None, False, reason)

    def use_model(self, embedder: Embedder) -> None:
        """The explicit switch: re-index the open library with *embedder*."""
        self._start(embedder, False, "")

    def reindex_with_default_model(self) -> None:
        """Re-index the open library with the pretrained default (what a new library gets)."""
        self._start(None, True, "")

    def stop_indexing(self) -> None:
        if self.worker is not None and self._indexing:
            self.worker.stop()

    def _start(self, embedder: Embedder | None, default: bool, reason: str) -> None:
        if self.library is None or self.closing:
            return
        if self._indexing and self.worker is not None:
            # One run at a time (a library is locked while it updates): stop the current run
            # without blocking the window; _done starts this one when it has ended.
            self._restart = (embedder, default, reason)
            self.worker.stop()
            return
        library = self.library
        self.skipped = []

        def run(stop):
            use = yield from model_for_run(library, embedder, default)
            # Decoder processes, not threads: a decoder thread at its lower priority can hold the
            # GIL while the network's threads run, and the window waits for it (worst stall 21-31 ms
            # against 8 ms with processes, benchmarks/bench_gui_stall.py); and a decoder crash on a
            # hostile file then costs that file, not the window. Same speed.
            yield from library.update(use, should_stop=stop, decoders="processes")

        worker = GeneratorThread(run, "indexing", self)
        # Events of a worker that is no longer current (its done signal was still queued) are dropped.
        worker.yielded.connect(lambda ev, w=worker: self._event(ev) if w is self.worker else None)
        worker.failed.connect(lambda exc, w=worker: self.failed.emit(exc) if w is self.worker else None)
        worker.done.connect(lambda ok, w=worker: self._done(ok) if w is self.worker else None)
        self.worker = worker
        self._indexing = True
        self._first_run = not has_index(library)
        self.indexing_changed.emit(True)
        worker.start()

    def _event(self, ev) -> None:
        if isinstance(ev, ModelInUse):
            self.embedder = ev.embedder
        elif isinstance(ev, IndexSummary):
            self.last_summary = ev
            self.skipped = ev.skipped
        elif isinstance(ev, IndexProgress) and self._first_run and self.index is None:
            self._show_embedded_so_far()
        self.event.emit(ev)

    def _done(self, _completed: bool) -> None:
        self._indexing = False
        self.indexing_changed.emit(False)
        if self._restart is not None:
            embedder, default, reason = self._restart
            self._restart = None
            self._start(embedder, default, reason)
            return
        self.load_index()

    def _show_embedded_so_far(self) -> None:
        """During a first indexing: the photos embedded so far, read from the catalog (at most
        once a LIVE_ROWS_SECONDS, on a worker), so the grid fills as the run goes."""
        now = time.monotonic()
        if now - self._rows_at < LIVE_ROWS_SECONDS or (self._rows_worker and self._rows_worker.isRunning()):
            return
        self._rows_at = now
        library = self.library

        def read(_stop):
            yield library, library_rows(library)

        worker = GeneratorThread(read, "live-rows", self)
        worker.yielded.connect(self._live_rows)
        self._rows_worker = worker
        worker.start()

    def _live_rows(self, loaded) -> None:
        library, rows = loaded
        if library is self.library and self.index is None and not self.closing:
            self.rows = rows
            self.rows_changed.emit(rows)

    # -- loading the index ---------------------------------------------------------------------
    def load_index(self) -> None:
        """Load the index and the grid rows on a worker (100k rows take a while), then show them."""
        if self.library is None or self.closing:
            return
        library = self.library

        def load(stop):
            try:
                index = library.load_index()
            except Exception as exc:  # no index yet, or a damaged one: indexing will make one
                log.info("no usable index yet: %s", exc)
                # What a stopped first indexing read is still shown (searchable once indexed).
                if library.catalog_path.exists():
                    yield library, None, library_rows(library)
                return
            yield library, index, library_rows(library, index.all_keys())

        worker = GeneratorThread(load, "load-index", self)
        worker.yielded.connect(self._loaded)
        # Only the latest load ends "loading": an earlier one finishing must not hide a later one.
        worker.done.connect(lambda _ok, w=worker: setattr(self, "loading", False) if w is self._load_worker else None)
        self.loading = True
        self._load_worker = worker
        worker.start()

    def _loaded(self, loaded) -> None:
        library, index, rows = loaded
        if library is not self.library or self.closing:  # another folder was opened meanwhile
            if index is not None:
                index.close()
            return
        if index is None:
            if self.index is None and rows:
                self.rows = rows
                self.rows_changed.emit(rows)
            return
        self.index = index  # the old one is released when no search holds it any more
        self.rows = rows
        self.rows_changed.emit(rows)
        self.index_ready.emit(index)

    # -- closing -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every worker, wait for them, and close the index."""
        self.closing = True  # events still queued from workers must not start new ones
        stop_all()
        if self.index is not None:
            self.index.close()
            self.index = None
