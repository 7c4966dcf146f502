"""Driving a core generator from the command line: Ctrl+C asks it to stop, a progress bar shows it.

Every long job of the core (indexing, mirrored copies, training) is a generator of events that
takes a ``should_stop`` callable. :func:`drive` runs one to its end, handing each event to the
command's handler: the first Ctrl+C asks the job to stop at its next safe point (it keeps what it
finished), a second one aborts at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

Event = TypeVar("Event")


class StopFlag:
    """The ``should_stop`` of a driven job: true once Ctrl+C was pressed."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


def drive(start: Callable[[StopFlag], Iterable[Event]], handle: Callable[[Event], None], *,
          stopping: str) -> bool:
    """Run the generator ``start(should_stop)`` to its end, passing each event to *handle*.

    The first Ctrl+C prints ``simviewer: <stopping> (Ctrl+C again to abort)`` and sets the flag;
    the second raises KeyboardInterrupt. Returns whether a stop was asked for. The previous
    SIGINT handler is back in place when this returns or raises. Off the main thread (where
    Python cannot install signal handlers) the job runs without Ctrl+C handling.
    """
    stop = StopFlag()

    def on_sigint(signum, frame) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        print(f"\nsimviewer: {stopping} (Ctrl+C again to abort)", file=sys.stderr, flush=True)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        for ev in start(stop):
            handle(ev)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return stop.requested


class Bar:
    """One tqdm progress bar on stderr at a time, shown only on a terminal (and not when *quiet*)."""

    def __init__(self, quiet: bool = False) -> None:
        self.show = sys.stderr.isatty() and not quiet
        self._bar = None

    def start(self, total: int | None, desc: str, unit: str = "img") -> None:
        """Close the bar shown (if any) and show a new one."""
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(total=total, unit=unit, desc=desc, disable=not self.show, file=sys.stderr,
                         dynamic_ncols=True)

    @property
    def started(self) -> bool:
        return self._bar is not None

    def update(self, done: int, total: int | None = None, **postfix) -> None:
        """Move the bar to *done* (of *total*, when it changed) with *postfix* figures."""
        if self._bar is None:
            return
        if total is not None:
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        if postfix:
            self._bar.set_postfix(**postfix, refresh=False)

    def describe(self, desc: str) -> None:
        if self._bar is not None:
            self._bar.set_description(desc)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
