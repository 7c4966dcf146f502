"""Turning photo files into network-ready pixels for indexing: read, hash, decode, resize, crop.

A 12-MP camera JPEG costs about 30 ms of one core to decode even at 1/8 scale (the entropy
decoding of every coefficient cannot be skipped), far more than anything else per photo but the
network. Library.update runs that work in decoders that return the centre crop as uint8
(normalisation happens per batch, on the inference thread), at a lower CPU priority than the
network, so that decoding fills the gaps the network leaves rather than slowing it down.

:class:`ThreadDecoders` decodes in threads of this process: Pillow and hashlib release the GIL.
:class:`DecoderPool` decodes in worker processes, each a fresh interpreter (never forked from a
process that has torch or Qt threads running); no faster on the machines measured, it turns a
decoder crash on a hostile file into one skipped file, and leaves the GIL to the process's other
threads: a low-priority decoder thread that holds it while the network runs stalls a window's
event loop (benchmarks/bench_gui_stall.py), so the window uses processes. Nothing in this module imports torch: a
worker process costs Python, NumPy and Pillow only (about 45 MB).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Container, Iterable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import ImageError, open_photo
from .system import usable_cores

log = logging.getLogger(__name__)

# How much lower than the network the decoders run (Unix nice increment).
DECODER_NICE = 10


def default_decoders() -> int:
    """How many photos to decode at once: one fewer than the cores this process may use, at least 2.

    A 12-MP JPEG takes about 30 ms of a core to decode, close to what a ResNet-50 spends on it, so
    decoding needs about half the machine; at a lower priority than the network a spare decoder
    only takes what the network leaves idle. Two decoders were the fastest on two cores (one
    decoder: -24 %, three: -7 %; benchmarks/bench_ingest.py); a fixed two would cap any machine at
    about 70 photos/s.
    """
    return max(2, usable_cores() - 1)


@dataclass(frozen=True)
class DecodeSpec:
    """What the network needs from a photo: the JPEG draft size, then resize and centre crop."""

    min_side: int
    resize: int
    crop: int


@dataclass(frozen=True)
class Prepared:
    """One file, prepared for indexing.

    *reason* is set when the file is skipped (it cannot be read or decoded). *known* means the
    content hash matched one already embedded, so nothing was decoded. Otherwise *pixels* holds
    the centre crop, (crop, crop, 3) uint8, and the facts describe the original photo.
    """

    digest: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: float | None = None
    pixels: np.ndarray | None = None
    reason: str | None = None
    known: bool = False


def centre_crop_array(image: Image.Image, resize: int, crop: int) -> np.ndarray:
    """Short side to *resize*, centre square of *crop*: (crop, crop, 3) uint8 RGB.

    Pillow's reducing_gap resize is several times faster than a plain antialiased resize on large
    inputs and visually identical at this scale. (A one-step resize of just the crop box is about
    0.5 ms faster but moves pixels by up to 2 levels, which would change every stored vector.)
    """
    w, h = image.size
    scale = resize / min(w, h)
    size = (max(resize, round(w * scale)), max(resize, round(h * scale)))
    if size != (w, h):
        image = image.resize(size, Image.BILINEAR, reducing_gap=3.0)
    w, h = size
    if w < crop or h < crop:  # a crop larger than the resize (custom checkpoints): pad with black
        padded = Image.new("RGB", (max(w, crop), max(h, crop)))
        padded.paste(image, ((padded.width - w) // 2, (padded.height - h) // 2))
        image, (w, h) = padded, padded.size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    return np.array(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)  # writable


def content_digest(data: bytes) -> str:
    """The catalog's content hash: BLAKE2b-128 of every byte of the file."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class KnownDigests:
    """Content hashes whose vectors exist, compact enough to hand to every decoder process.

    Holds the first 64 bits of each digest, sorted: 8 MB for a million photos. A hit may be
    false (odds about n / 2**64); callers confirm it against the full digest.
    """

    def __init__(self, digests: Iterable[str] = ()) -> None:
        self.prefixes = np.unique(np.fromiter((int(d[:16], 16) for d in digests), np.uint64))

    @classmethod
    def from_prefixes(cls, prefixes: np.ndarray) -> KnownDigests:
        known = cls()
        known.prefixes = prefixes
        return known

    def __contains__(self, digest: str) -> bool:
        p = np.uint64(int(digest[:16], 16))
        i = int(np.searchsorted(self.prefixes, p))
        return i < len(self.prefixes) and self.prefixes[i] == p

    def __len__(self) -> int:
        return len(self.prefixes)


def prepare_file(path: str | os.PathLike, spec: DecodeSpec, known: Container[str] | None = None) -> Prepared:
    """Read, hash and (unless the content is *known*) decode one file. Never raises for a bad file.

    The file's first bytes decide whether it is a photo at all before more is read; the hash is
    taken in bounded memory (:func:`~simviewer.core.images.open_photo`). A file that is no photo
    is skipped without a hash.
    """
    try:
        src = open_photo(path)
        digest = src.digest()
    except ImageError as exc:
        return Prepared(None, reason=str(exc))
    if known is not None and digest in known:
        return Prepared(digest, known=True)
    try:
        dec = src.decode(spec.min_side)
    except ImageError as exc:
        return Prepared(digest, reason=str(exc))
    try:
        pixels = centre_crop_array(dec.image, spec.resize, spec.crop)
    except Exception as exc:  # a pathological size after decoding, for example
        return Prepared(digest, reason=f"cannot prepare image: {exc}")
    return Prepared(digest, dec.width, dec.height, dec.format, dec.taken_at, pixels)


def lower_priority(increment: int, thread: bool = False) -> None:
    """Lower the CPU priority of this process (or, on Linux, of the calling thread only)."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    if thread and not sys.platform.startswith("linux"):
        return  # elsewhere a priority belongs to the whole process, the network included
    who = threading.get_native_id() if thread else 0
    try:
        os.setpriority(os.PRIO_PROCESS, who, min(19, os.getpriority(os.PRIO_PROCESS, who) + increment))
    except OSError as exc:
        log.debug("cannot lower the decoders' priority: %s", exc)


# -- the worker process -------------------------------------------------------------------------
_HEADER = struct.Struct("<Q")


def _send(fh, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEADER.pack(len(data)) + data)
    fh.flush()


def _recv(fh):
    """The next message, or None at the end of the stream (the other side closed or died)."""
    head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    size = _HEADER.unpack(head)[0]
    data = fh.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def serve() -> None:
    """Worker main loop: a setup message, then one path in, one :class:`Prepared` out, until EOF.

    Messages go over private copies of stdin/stdout; fd 1 is pointed at stderr so that anything a
    library prints cannot corrupt them. When the parent goes away, even killed, the next read ends
    the loop (EOF) or the next write fails (broken pipe): no worker outlives its parent by more
    than one photo.
    """
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl+C stops
    try:
        setup = _recv(inp)
        if setup is None:
            return
        spec: DecodeSpec = setup["spec"]
        known = KnownDigests.from_prefixes(setup["known"])
        lower_priority(setup.get("nice", 0))
        _send(out, ("ready", os.getpid()))
        while (msg := _recv(inp)) is not None:
            seq, path = msg
            _send(out, (seq, prepare_file(path, spec, known)))
    except (BrokenPipeError, ConnectionResetError):
        pass


# -- the pool (parent side) -----------------------------------------------------------------------
def _resolve(fut: Future, value: Prepared) -> None:
    with contextlib.suppress(InvalidStateError):  # cancelled meanwhile: nobody wants it
        fut.set_result(value)


class _Worker:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.outstanding: collections.deque[tuple[int, str, Future]] = collections.deque()
        self.ready = False
        self.reader: threading.Thread | None = None


def _worker_command() -> list[str]:
    """A fresh interpreter that serves as a decoder: the working folder is left off its import
    path, and this package's own folder is added last, so the worker runs this very simviewer
    and nothing on the path is shadowed."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    code = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            f"sys.path.append({root!r}); from simviewer.core.decoding import serve; serve()")
    return [sys.executable, "-c", code]


def _worker_env() -> dict[str, str]:
    """The parent's environment, with one thread per math library."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


class DecoderPool:
    """Prepares files in *workers* decoder processes; ``submit(path)`` returns a Future[Prepared].

    A worker that dies while decoding (a decoder crash on a hostile file) costs that one file,
    reported as skipped; the files queued behind it go to a fresh worker. If no worker can start
    at all, the pool decodes in threads of this process instead, so indexing still works.
    :meth:`close` ends every worker, at once when work is still queued.
    """

    def __init__(self, workers: int, spec: DecodeSpec, known: KnownDigests | Iterable[str] = (),
                 nice: int = DECODER_NICE) -> None:
        self.spec, self.nice = spec, nice
        self.known = known if isinstance(known, KnownDigests) else KnownDigests(known)
        self._setup = {"spec": spec, "known": self.known.prefixes, "nice": nice}
        self._lock = threading.Lock()
        self._seq = 0
        self._closing = False
        self._fallback: ThreadDecoders | None = None
        self._started = 0
        self.crashes = 0
        self._workers: list[_Worker] = []
        if getattr(sys, "frozen", False):  # a bundled app: its executable is the app, not Python
            self._use_threads(max(1, workers))
            return
        try:
            for _ in range(max(1, workers)):
                self._workers.append(self._start())
        except OSError as exc:  # cannot start a process at all: decode here instead
            if not self._workers:
                log.warning("cannot start decoder processes (%s); decoding in threads", exc)
                self._use_threads(max(1, workers))

    # -- lifecycle -------------------------------------------------------------------------
    def _start(self) -> _Worker:
        proc = subprocess.Popen(
            _worker_command(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_worker_env(), close_fds=True,
            # Ctrl+C in a terminal is the parent's to handle, not theirs: their own process group.
            # Not their own session: on Linux a session is a scheduling group of its own
            # (autogroup), in which their lower priority would not count against the network.
            **({"process_group": 0} if sys.version_info >= (3, 11) else {}),
        )
        self._started += 1
        worker = _Worker(proc)
        with contextlib.suppress(OSError):  # if it died at once, the reader sees the EOF
            _send(proc.stdin, self._setup)
        worker.reader = threading.Thread(target=self._read, args=(worker,), daemon=True,
                                         name=f"simviewer-decoder-{proc.pid}")
        worker.reader.start()
        return worker

    def _use_threads(self, n: int) -> None:
        if self._fallback is None:
            self._fallback = ThreadDecoders(n, self.spec, self.known, self.nice)

    @property
    def processes(self) -> list[int]:
        """Process ids of the running workers."""
        with self._lock:
            return [w.proc.pid for w in self._workers if w.proc.poll() is None]

    @property
    def in_threads(self) -> bool:
        return self._fallback is not None

    def close(self) -> None:
        """End every worker; queued work is dropped (its futures are cancelled)."""
        with self._lock:
            self._closing = True
            workers, self._workers = self._workers, []
        for w in workers:
            busy = bool(w.outstanding)
            if busy:
                w.proc.kill()
            else:
                with contextlib.suppress(OSError):
                    w.proc.stdin.close()
            try:
                w.proc.wait(timeout=None if busy else 5)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            if w.reader is not None:
                w.reader.join()
            for _, _, fut in w.outstanding:
                fut.cancel()
            for fh in (w.proc.stdin, w.proc.stdout):
                with contextlib.suppress(OSError):
                    fh.close()
        if self._fallback is not None:
            self._fallback.close()

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- work ------------------------------------------------------------------------------
    def submit(self, path: str | os.PathLike) -> Future:
        path = os.fspath(path)
        with self._lock:
            if self._closing:
                raise RuntimeError("the decoder pool is closed")
            if self._fallback is None and self._workers:
                fut: Future = Future()
                self._dispatch(path, fut)
                return fut
        self._use_threads(1)
        return self._fallback.submit(path)

    def _dispatch(self, path: str, fut: Future) -> None:
        """Queue *path* on the least busy worker (the lock is held)."""
        worker = min(self._workers, key=lambda w: len(w.outstanding))
        self._seq += 1
        worker.outstanding.append((self._seq, path, fut))
        with contextlib.suppress(OSError):  # if the worker is dead, its reader requeues its queue
            _send(worker.proc.stdin, (self._seq, path))

    def _read(self, worker: _Worker) -> None:
        while True:
            try:
                msg = _recv(worker.proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                log.warning("decoder process %d sent garbage (%s)", worker.proc.pid, exc)
                msg = None
            if msg is None:
                break
            if msg[0] == "ready":
                worker.ready = True
                continue
            seq, prepared = msg
            with self._lock:
                if not worker.outstanding or worker.outstanding[0][0] != seq:
                    continue  # cannot happen: results come back in the order of requests
                _, _, fut = worker.outstanding.popleft()
            _resolve(fut, prepared)
        self._worker_gone(worker)

    def _worker_gone(self, worker: _Worker) -> None:
        """A worker's output ended: normal at close, a crash otherwise."""
        code = worker.proc.wait()
        with self._lock:
            if self._closing:
                return
            if worker in self._workers:
                self._workers.remove(worker)
            queued = list(worker.outstanding)
            worker.outstanding.clear()
            if worker.ready and queued:
                # Results come back in order, so the first file not answered is the one it died on.
                _, path, fut = queued.pop(0)
                self.crashes += 1
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                log.warning("decoder process died (%s) on %s", how, path)
                _resolve(fut, Prepared(None, reason=f"decoding crashed on this file ({how})"))
            replacement = None
            if worker.ready:
                try:
                    replacement = self._start()
                    self._workers.append(replacement)
                except OSError as exc:
                    log.warning("cannot restart a decoder process (%s)", exc)
            elif not any(w.ready for w in self._workers):
                log.warning("decoder processes do not start (exit code %s); decoding in threads", code)
            if not self._workers:
                self._use_threads(max(1, self._started))
            for _, path, fut in queued:
                if self._workers:
                    self._dispatch(path, fut)
                else:
                    self._chain(self._fallback.submit(path), fut)

    @staticmethod
    def _chain(src: Future, dst: Future) -> None:
        def done(f: Future) -> None:
            if f.cancelled():
                dst.cancel()
            elif f.exception() is not None:
                with contextlib.suppress(InvalidStateError):
                    dst.set_exception(f.exception())
            else:
                _resolve(dst, f.result())
        src.add_done_callback(done)


class ThreadDecoders:
    """The same interface as :class:`DecoderPool`, decoding in threads of this process."""

    def __init__(self, workers: int, spec: DecodeSpec, known: Container[str] = frozenset(),
                 nice: int = DECODER_NICE) -> None:
        self.spec = spec
        self.known = known  # read by the decoding threads: must not change while they run
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="simviewer-decode",
                                        initializer=lower_priority, initargs=(nice, True))
        self.processes: list[int] = []
        self.in_threads = True
        self.crashes = 0

    def submit(self, path: str | os.PathLike) -> Future:
        return self._pool.submit(prepare_file, os.fspath(path), self.spec, self.known)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ThreadDecoders:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
