"""cli.drive: the one Ctrl+C loop every long command runs its core generator in."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from simviewer.cli.drive import drive


def _steps(should_stop, interrupts: int, log: list):
    for step in range(10):
        if should_stop():
            log.append("stopped")
            return
        if step == 2:
            for _ in range(interrupts):
                os.kill(os.getpid(), signal.SIGINT)
        yield step


def test_first_ctrl_c_asks_the_job_to_stop_at_its_next_safe_point(capsys):
    before = signal.getsignal(signal.SIGINT)
    seen, log = [], []
    stopped = drive(lambda should_stop: _steps(should_stop, 1, log), seen.append, stopping="stopping after this batch")
    assert stopped and seen == [0, 1, 2] and log == ["stopped"]
    assert "simviewer: stopping after this batch (Ctrl+C again to abort)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before


def test_second_ctrl_c_aborts_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        drive(lambda should_stop: _steps(should_stop, 2, []), lambda ev: None, stopping="stopping")
    assert signal.getsignal(signal.SIGINT) is before


def test_a_job_that_ends_is_not_stopped_and_a_handler_error_restores_the_handler():
    before = signal.getsignal(signal.SIGINT)
    assert drive(lambda should_stop: iter(range(3)), lambda ev: None, stopping="stopping") is False

    def fail(ev):
        raise ValueError("bad event")

    with pytest.raises(ValueError):
        drive(lambda should_stop: iter(range(3)), fail, stopping="stopping")
    assert signal.getsignal(signal.SIGINT) is before


def test_off_the_main_thread_the_job_runs_without_a_signal_handler():
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        stopped=drive(lambda should_stop: iter(range(3)), lambda ev: result.setdefault("seen", []).append(ev),
                      stopping="stopping")))
    thread.start()
    thread.join()
    assert result == {"stopped": False, "seen": [0, 1, 2]}
