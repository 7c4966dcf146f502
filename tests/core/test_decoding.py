"""Decoder processes: same results as decoding in place, crash isolation, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from simviewer.core.decoding import (
    DecoderPool,
    DecodeSpec,
    KnownDigests,
    ThreadDecoders,
    centre_crop_array,
    content_digest,
    default_decoders,
    prepare_file,
)
from simviewer.core.embedder import Embedder

from ..conftest import make_photo, write_jpeg

SPEC = DecodeSpec(256, 256, 224)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def gone(pid: int) -> bool:
    """True when *pid* no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_gone(pids, timeout: float = 10.0) -> list[int]:
    end = time.time() + timeout
    while time.time() < end and not all(gone(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


@pytest.fixture
def files(tmp_path) -> list[Path]:
    out = [write_jpeg(tmp_path / f"p{i}.jpg", make_photo(i, (400 + 16 * i, 300))) for i in range(6)]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not a picture\n")
    good = out[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 3])
    return [*out, tmp_path / "empty.jpg", tmp_path / "notes.png", tmp_path / "cut.jpg", tmp_path / "missing.jpg"]


def same(a, b) -> None:
    assert (a.digest, a.width, a.height, a.format, a.reason, a.known) == (
        b.digest, b.width, b.height, b.format, b.reason, b.known)
    if a.pixels is None:
        assert b.pixels is None
    else:
        assert a.pixels.dtype == np.uint8 and a.pixels.shape == (224, 224, 3)
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_processes_and_threads_prepare_exactly_what_prepare_file_does(files):
    expected = [prepare_file(f, SPEC) for f in files]
    assert [e.reason is None for e in expected] == [True] * 6 + [False] * 4
    assert "empty" in expected[6].reason and "text" in expected[7].reason
    assert "truncated" in expected[8].reason and "cannot read" in expected[9].reason
    for pool_type in (DecoderPool, ThreadDecoders):
        with pool_type(2, SPEC) as pool:
            got = [f.result(timeout=60) for f in [pool.submit(p) for p in files]]
            assert pool.in_threads == (pool_type is ThreadDecoders)
        for a, b in zip(got, expected):
            same(a, b)


def test_known_content_is_hashed_but_not_decoded(files):
    digest = content_digest(files[1].read_bytes())
    known = KnownDigests([digest, "ff" * 16])
    assert digest in known and "00" * 16 not in known and len(known) == 2
    for pool_type, given in ((DecoderPool, known), (DecoderPool, [digest]), (ThreadDecoders, {digest})):
        with pool_type(1, SPEC, given) as pool:
            hit, miss = pool.submit(files[1]).result(timeout=60), pool.submit(files[2]).result(timeout=60)
        assert hit.known and hit.digest == digest and hit.pixels is None
        assert not miss.known and miss.pixels is not None


def test_preprocess_matches_the_network_input_it_always_had():
    """The uint8 crop + batch normalisation equals resize, torchvision centre crop, to-tensor, normalise."""
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    pre = Embedder("resnet18", "none").preprocess
    for size in ((640, 480), (300, 500), (256, 256), (200, 120)):
        im = make_photo(sum(size), size)
        w, h = im.size
        scale = pre.resize / min(w, h)
        resized = im.resize((max(pre.resize, round(w * scale)), max(pre.resize, round(h * scale))),
                            Image.BILINEAR, reducing_gap=3.0)
        ref = TF.normalize(TF.to_tensor(TF.center_crop(resized, [pre.crop, pre.crop])), pre.mean, pre.std)
        torch.testing.assert_close(pre(im), ref, atol=1e-5, rtol=0)
        batch = pre.normalise(np.stack([pre.crop_array(im)] * 2))
        assert batch.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(batch[1], ref, atol=1e-5, rtol=0)
    # A crop larger than the resized photo is padded with black, as torchvision pads.
    small = make_photo(3, (100, 80))
    np.testing.assert_array_equal(centre_crop_array(small, 60, 96),
                                  np.asarray(TF.center_crop(small.resize((75, 60), Image.BILINEAR), [96, 96])))


def test_a_worker_that_dies_costs_only_the_file_it_was_on(files, tmp_path):
    with DecoderPool(1, SPEC) as pool:
        first = pool.submit(files[0]).result(timeout=60)
        (pid,) = pool.processes
        os.kill(pid, signal.SIGSTOP)  # the worker holds still: the next file is the one it is on when it dies
        stuck = pool.submit(files[4])
        after = [pool.submit(f) for f in files[1:4]]
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        reason = stuck.result(timeout=60).reason
        results = [f.result(timeout=60) for f in after]
        assert pool.crashes == 1 and pool.processes and pool.processes != [pid]
    assert first.pixels is not None
    assert "crashed" in reason and "SIGKILL" in reason
    for got, f in zip(results, files[1:4]):
        same(got, prepare_file(f, SPEC))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_named_like_a_photo_is_skipped_without_being_opened(files, tmp_path):
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    assert prepare_file(fifo, SPEC).reason == "not a regular file (FIFO)"
    with DecoderPool(1, SPEC) as pool:
        got = pool.submit(fifo).result(timeout=30)
        assert pool.crashes == 0
    assert got.reason == "not a regular file (FIFO)" and got.digest is None


def test_a_bundled_app_decodes_in_threads(files, monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # sys.executable would start the app again
    with DecoderPool(2, SPEC) as pool:
        got = pool.submit(files[0]).result(timeout=60)
        assert pool.in_threads and pool.processes == []
    same(got, prepare_file(files[0], SPEC))


def test_workers_that_cannot_start_fall_back_to_threads(files, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false" if os.path.exists("/bin/false") else "false")
    with DecoderPool(2, SPEC) as pool:
        got = [pool.submit(f).result(timeout=60) for f in files[:3]]
        assert pool.in_threads
    for a, f in zip(got, files[:3]):
        same(a, prepare_file(f, SPEC))


@linux_only
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_close_ends_busy_workers_at_once(tmp_path):
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)
    pool = DecoderPool(2, SPEC)
    futures = [pool.submit(fifo), pool.submit(fifo)]
    pids = pool.processes
    assert len(pids) == 2
    t = time.perf_counter()
    pool.close()
    assert time.perf_counter() - t < 5
    assert all(gone(p) for p in pids)
    assert all(f.cancelled() for f in futures)


@linux_only
def test_workers_end_when_their_parent_is_killed(tmp_path):
    photo = write_jpeg(tmp_path / "p.jpg", make_photo(1))
    script = textwrap.dedent(f"""
        import sys, time
        from simviewer.core.decoding import DecodeSpec, DecoderPool
        pool = DecoderPool(2, DecodeSpec(256, 256, 224))
        pool.submit({str(photo)!r}).result(timeout=60)
        print(*pool.processes, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(pids) == 2
    assert wait_gone(pids) == []


@pytest.mark.parametrize(("cores", "expected"), [(1, 2), (2, 2), (4, 3), (16, 15)])
def test_decoders_scale_with_the_cores(monkeypatch, cores, expected):
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    else:
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert default_decoders() == expected
