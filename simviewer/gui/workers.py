"""Run core generators off the GUI thread.

A :class:`GeneratorThread` drives a core generator (``Library.update`` and friends) on its own
QThread and forwards every event as a queued signal. ``stop()`` only sets a flag that the generator
polls between steps, so work ends at a clean boundary. Every started thread is tracked so the
window can stop and wait for all of them on close, and tests can check that none is left running.
Thread pools made with :func:`make_pool` are tracked the same way (weakly: a pool goes with its
owner), so tests can check that no runnable outlives its test either.
"""

from __future__ import annotations

import logging
import traceback
import weakref
from collections.abc import Callable, Iterator

import shiboken6
from PySide6.QtCore import QObject, QThread, QThreadPool, Signal

log = logging.getLogger(__name__)

_running: set[GeneratorThread] = set()
_pools: weakref.WeakSet[QThreadPool] = weakref.WeakSet()


def running_workers() -> list[GeneratorThread]:
    return [t for t in _running if t.isRunning()]


class GeneratorThread(QThread):
    yielded = Signal(object)  # each event of the generator
    failed = Signal(object)  # the exception (its message is for the user)
    done = Signal(bool)  # True when it ran to the end, False when stopped or failed

    def __init__(self, make: Callable[[Callable[[], bool]], Iterator], name: str, parent=None) -> None:
        """*make* receives a ``should_stop`` callable and returns the generator to drive."""
        super().__init__(parent)
        self.setObjectName(name)
        self._make = make
        self._stop = False
        self.finished.connect(lambda: _running.discard(self))

    def start(self, *args) -> None:
        _running.add(self)
        super().start(*args)

    def stop(self) -> None:
        self._stop = True

    def should_stop(self) -> bool:
        return self._stop

    def run(self) -> None:
        completed = False
        try:
            # The generator itself polls should_stop and winds down cleanly (its final summary
            # included), so every event it yields is forwarded.
            for event in self._make(self.should_stop):
                self.yielded.emit(event)
            completed = not self._stop
        except Exception as exc:  # shown to the user by the receiver
            log.debug("worker %s failed:\n%s", self.objectName(), traceback.format_exc())
            self.failed.emit(exc)
        self.done.emit(completed)


def stop_all(timeout_ms: int = 30_000) -> bool:
    """Ask every worker to stop and wait for them; True if all ended."""
    threads = running_workers()
    for t in threads:
        t.stop()
    return all(t.wait(timeout_ms) for t in threads)


def make_pool(parent: QObject | None, threads: int) -> QThreadPool:
    """A thread pool of *threads* threads, owned by *parent* and tracked for busy_pools()."""
    pool = QThreadPool(parent)
    pool.setMaxThreadCount(threads)
    _pools.add(pool)
    return pool


def busy_pools(wait_ms: int = 0) -> list[QThreadPool]:
    """The tracked pools and the global one that still run a runnable after waiting *wait_ms* each."""
    pools = [p for p in _pools if shiboken6.isValid(p)] + [QThreadPool.globalInstance()]
    return [p for p in pools if not p.waitForDone(wait_ms)]
