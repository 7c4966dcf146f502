"""GeneratorThread, stop_all and the tracked thread pools, alone."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QRunnable  # noqa: E402

from simviewer.gui import workers  # noqa: E402
from simviewer.gui.workers import GeneratorThread, busy_pools, make_pool, running_workers, stop_all  # noqa: E402


def collect(worker):
    got = {"events": [], "failed": [], "done": []}
    worker.yielded.connect(got["events"].append)
    worker.failed.connect(got["failed"].append)
    worker.done.connect(got["done"].append)
    return got


def test_every_event_arrives_in_order_then_done_true(qtbot):
    worker = GeneratorThread(lambda stop: iter(range(5)), "count")
    got = collect(worker)
    with qtbot.waitSignal(worker.done, timeout=5000):
        worker.start()
    assert got == {"events": [0, 1, 2, 3, 4], "failed": [], "done": [True]}
    worker.wait()


def test_stop_ends_the_generator_at_its_next_poll(qtbot):
    started = threading.Event()

    def endless(stop):
        n = 0
        while not stop():
            started.set()
            n += 1
            yield n
        yield "wound down"  # a generator's last words after a stop are still forwarded

    worker = GeneratorThread(endless, "endless")
    got = collect(worker)
    worker.start()
    assert started.wait(5)
    with qtbot.waitSignal(worker.done, timeout=5000):
        worker.stop()
    assert got["done"] == [False] and got["events"][-1] == "wound down"
    worker.wait()


def test_an_exception_is_passed_on_and_done_is_false(qtbot):
    def broken(stop):
        yield 1
        raise ValueError("no such photo")

    worker = GeneratorThread(broken, "broken")
    got = collect(worker)
    with qtbot.waitSignal(worker.done, timeout=5000):
        worker.start()
    assert got["events"] == [1] and str(got["failed"][0]) == "no such photo" and got["done"] == [False]
    worker.wait()


def test_stop_all_stops_and_waits_for_every_running_worker(qapp):
    gate = threading.Event()

    def waits(stop):
        gate.set()
        while not stop():
            yield None

    threads = [GeneratorThread(waits, f"w{i}") for i in range(3)]
    for t in threads:
        t.start()
    assert gate.wait(5)
    assert len(running_workers()) == 3
    assert stop_all(5000) is True
    assert running_workers() == [] and not any(t.isRunning() for t in threads)


class Blocking(QRunnable):
    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release = release

    def run(self) -> None:
        self.release.wait(10)


def test_a_busy_pool_is_reported_until_its_runnable_ends(qapp):
    release = threading.Event()
    pool = make_pool(None, 1)
    pool.start(Blocking(release))
    assert pool in busy_pools(wait_ms=50)  # what the test fixture would fail on
    release.set()
    assert busy_pools(wait_ms=5000) == []
    assert pool in list(workers._pools)  # tracked while it lives
