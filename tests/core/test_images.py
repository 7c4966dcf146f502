"""Decoding: every odd input either becomes a correct RGB image or a clear reason."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simviewer.core import images
from simviewer.core.decoding import DecodeSpec, content_digest, prepare_file
from simviewer.core.images import ImageError, decode_bytes, load_image, walk_images

from ..conftest import jpeg_bytes, make_photo, write_jpeg

try:
    import resource
except ImportError:  # not on Windows
    resource = None


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def test_zero_byte_file_is_skipped_with_reason(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(p)


def test_text_named_jpg_is_reported_as_text():
    with pytest.raises(ImageError, match="holds text despite its .jpg name"):
        decode_bytes(b"hello, this is not a photo\n" * 20, name="notes.jpg")


def test_png_named_jpg_is_read_by_content():
    im = make_photo(1)
    dec = decode_bytes(png_bytes(im), name="really_a_png.jpg")
    assert dec.format == "PNG"
    assert np.array_equal(np.asarray(dec.image), np.asarray(im))


def test_truncated_jpeg_is_skipped_with_reason():
    data = jpeg_bytes(make_photo(2))
    with pytest.raises(ImageError, match="truncated"):
        decode_bytes(data[: len(data) // 2], name="cut.jpg")


def test_corrupt_header_is_skipped_with_reason():
    data = bytearray(jpeg_bytes(make_photo(2)))
    data[3:200] = os.urandom(197)
    with pytest.raises(ImageError):
        decode_bytes(bytes(data), name="bad.jpg")


def test_exif_orientation_is_applied():
    # A landscape picture whose left half is red, stored with "rotate 90 CW" (orientation 6).
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :100] = (255, 0, 0)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    dec = decode_bytes(jpeg_bytes(im, quality=95, exif=exif.tobytes()))
    assert (dec.width, dec.height) == (100, 200)
    assert dec.image.size == (100, 200)
    out = np.asarray(dec.image).astype(int)
    # Rotated 90 degrees clockwise, the red half is now on top.
    assert out[20, 50, 0] > 200 and out[20, 50, 2] < 60
    assert out[180, 50, 0] < 60


def test_cmyk_jpeg_converts_to_matching_rgb():
    rgb = Image.new("RGB", (64, 64), (200, 40, 40))
    dec = decode_bytes(jpeg_bytes(rgb.convert("CMYK"), quality=95))
    px = np.asarray(dec.image)[32, 32].astype(int)
    assert dec.image.mode == "RGB"
    assert abs(px[0] - 200) < 20 and px[1] < 70 and px[2] < 70


def test_16bit_grey_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 256)[None, :].repeat(32, 0)).astype(np.uint16)
    im = Image.fromarray(ramp)  # mode I;16
    dec = decode_bytes(png_bytes(im))
    out = np.asarray(dec.image)[:, :, 0].astype(int)
    assert dec.image.mode == "RGB"
    assert out[0, 0] < 5 and out[0, -1] > 250
    assert 110 < out[0, 128] < 145  # mid-grey stays mid-grey (clipping would give 255)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in ((0, 0, 255), (255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    dec = decode_bytes(buf.getvalue())
    px = np.asarray(dec.image)[20, 20]
    assert px[2] > 200 and px[0] < 50


def test_transparent_png_is_composited_on_white():
    im = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    im.paste((0, 0, 255, 255), (0, 0, 10, 20))
    out = np.asarray(decode_bytes(png_bytes(im)).image)
    assert tuple(out[5, 15]) == (255, 255, 255)
    assert tuple(out[5, 5]) == (0, 0, 255)


def test_palette_and_grey_become_rgb():
    for mode in ("P", "L", "1", "LA"):
        im = make_photo(3).convert(mode)
        assert decode_bytes(png_bytes(im)).image.mode == "RGB"


def test_jpeg_draft_decodes_large_photos_small_but_not_below_request():
    big = make_photo(4, size=(2400, 1600))
    dec = decode_bytes(jpeg_bytes(big), min_side=232)
    assert (dec.width, dec.height) == (2400, 1600)  # the original size is still reported
    assert min(dec.image.size) >= 232
    assert dec.image.size[0] <= 600  # decoded at 1/4 scale, not full size


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match="safety limit"):
        decode_bytes(png_bytes(Image.new("RGB", (200, 200))))


def test_formats_webp_bmp_tiff_read():
    im = make_photo(5, size=(64, 48))
    for fmt in ("WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        im.save(buf, fmt)
        dec = decode_bytes(buf.getvalue())
        assert dec.image.size == (64, 48) and dec.format == fmt


@pytest.mark.skipif(not images.HEIF_SUPPORTED, reason="pillow-heif not installed")
def test_heic_reads():
    im = make_photo(6, size=(64, 48))
    buf = io.BytesIO()
    im.save(buf, "HEIF")
    dec = decode_bytes(buf.getvalue())
    assert dec.image.size == (64, 48) and dec.format == "HEIF"


def test_walk_skips_hidden_survives_symlink_loops_and_unreadable(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "locked").mkdir()
    for p in ("a/one.jpg", "a/b/two.PNG", ".hidden/three.jpg", "a/.dot.jpg", "a/notes.txt", "locked/four.jpg"):
        (tmp_path / p).write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a -> b -> loop -> a ...

    real_scandir = os.scandir

    def scandir(path):  # the tests run as root, where chmod 0 does not lock anything
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    errors = images.WalkErrors()
    found = sorted(os.path.relpath(e.path, tmp_path) for e in walk_images(tmp_path, errors))
    assert found == ["a/b/two.PNG", "a/one.jpg"]
    assert errors.folders == [(str(tmp_path / "locked"), "Permission denied")]


def test_exif_capture_time_is_read():
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 18:30:00"
    dec = decode_bytes(jpeg_bytes(make_photo(9), exif=exif.tobytes()))
    assert dec.taken_at == 1625423400.0  # read as UTC: only the order of photos matters
    assert decode_bytes(jpeg_bytes(make_photo(9))).taken_at is None


def test_array_variants_turn_pixels_as_the_image_variants_turn_photos():
    from simviewer.core.images import ARRAY_VARIANTS, VARIANTS

    a = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)  # not square: a turn shows
    assert set(ARRAY_VARIANTS) == set(VARIANTS)
    for kind, turn in VARIANTS.items():
        assert np.array_equal(np.asarray(turn(Image.fromarray(a))), ARRAY_VARIANTS[kind](a)), kind


# -- the walk: what it passes over is reported -------------------------------------------------------
def walk(root, errors=None) -> list[str]:
    return sorted(Path(os.path.relpath(e.path, root)).as_posix() for e in walk_images(root, errors))


def skipped(root, errors) -> dict[str, str]:
    return {Path(os.path.relpath(p, root)).as_posix(): reason for p, reason in errors.files}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_walk_reports_fifos_sockets_devices_and_dangling_links_without_opening_them(tmp_path):
    write_jpeg(tmp_path / "ok.jpg", make_photo(1))
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would block the walk
    os.mkfifo(tmp_path / "pipe.txt")  # not a photo's name: not a skipped photo either
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.png"))
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    os.symlink(os.devnull, tmp_path / "null.jpg")
    errors = images.WalkErrors()
    try:
        assert walk(tmp_path, errors) == ["ok.jpg"]
    finally:
        sock.close()
    assert skipped(tmp_path, errors) == {
        "dangling.jpg": f"dangling link to {tmp_path / 'gone.jpg'}",
        "null.jpg": "not a regular file (link to a character device)",
        "pipe.jpg": "not a regular file (FIFO)",
        "sock.png": "not a regular file (socket)",
    }
    assert errors.folders == []


def test_walk_reports_a_folder_it_can_list_but_not_enter(tmp_path, monkeypatch):
    write_jpeg(tmp_path / "ok.jpg", make_photo(1))
    locked = tmp_path / "listable"
    locked.mkdir()
    write_jpeg(locked / "inside.jpg", make_photo(2))
    real_access = os.access

    def access(path, mode, **kw):  # as root, a folder without x can still be entered: pretend
        if os.path.basename(path) == "listable" and mode & os.X_OK:
            return False
        return real_access(path, mode, **kw)

    monkeypatch.setattr(images.os, "access", access)
    locked.chmod(0o644)  # readable, not enterable (for a user other than root)
    try:
        errors = images.WalkErrors()
        assert walk(tmp_path, errors) == ["ok.jpg"]
    finally:
        locked.chmod(0o755)
    assert errors.folders == [(str(locked), "can be listed but not entered: Permission denied")]


def test_walk_lists_a_linked_photo_once(tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "outside"
    for folder in (lib / "a", lib / "b", out / "trip"):
        folder.mkdir(parents=True)
    for path in (lib / "a" / "one.jpg", out / "far.jpg", out / "trip" / "t1.jpg"):
        write_jpeg(path, make_photo(3))
    os.symlink(lib / "a" / "one.jpg", lib / "b" / "link.jpg")  # a photo of the library: listed as itself
    os.symlink(out / "far.jpg", lib / "b" / "far.jpg")  # a photo from outside: listed as the link
    os.symlink(out / "far.jpg", lib / "b" / "far_again.jpg")  # ... once
    os.symlink(lib / "a", lib / "b" / "a_again")  # a folder of the library: not walked twice
    os.symlink(out / "trip", lib / "trip")  # a folder outside: walked once
    os.symlink(out / "trip", lib / "trip_again")
    os.symlink(lib, out / "trip" / "back")  # a loop back into the library
    errors = images.WalkErrors()
    assert walk(lib, errors) == ["a/one.jpg", "b/far.jpg", "trip/t1.jpg"]
    assert skipped(lib, errors) == {
        "b/link.jpg": "link to a/one.jpg, listed once",
        "b/far_again.jpg": f"link to {out / 'far.jpg'}, already listed as b/far.jpg",
    }


# -- memory and time stay bounded whatever the file --------------------------------------------------
BOUNDED = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from simviewer.core.decoding import DecodeSpec, prepare_file
t0 = time.perf_counter()
p = prepare_file(sys.argv[1], DecodeSpec(232, 256, 224))
seconds = time.perf_counter() - t0
try:  # this process's own peak (ru_maxrss would count the process it was forked from)
    status = open("/proc/self/status").read()
    peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
except (OSError, IndexError):
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"reason": p.reason, "digest": p.digest, "seconds": seconds, "peak_mb": peak_mb}}))
"""


def prepare_bounded(path, limit_mb: int = 1024) -> dict:
    """prepare_file in a fresh process that may not use more than *limit_mb* of address space."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", BOUNDED.format(limit=limit_mb << 20), str(path)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_AS"), reason="needs setrlimit")
def test_a_3gb_file_named_jpg_is_refused_from_its_first_bytes(tmp_path):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.write(b"%PDF-1.7\n")
        fh.truncate(3 << 30)  # sparse: no disk used
    got = prepare_bounded(huge)
    assert got["reason"] == "not a photo: the file holds a PDF document despite its .jpg name"
    assert got["digest"] is None and got["seconds"] < 5 and got["peak_mb"] < 300


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_AS"), reason="needs setrlimit")
def test_a_162_byte_strip_png_is_refused_cheaply(tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 20000)).save(strip, optimize=True)
    assert strip.stat().st_size < 400
    got = prepare_bounded(strip)
    assert got["reason"].startswith("refused: 1x20000 is a strip, not a photo")
    assert got["seconds"] < 5 and got["peak_mb"] < 300


def test_aspect_ratio_limit_keeps_panoramas():
    wide = decode_bytes(png_bytes(Image.new("RGB", (400, 10), (9, 9, 9))))  # 40 to 1
    assert wide.image.size == (400, 10)
    with pytest.raises(ImageError, match="strip"):
        decode_bytes(png_bytes(Image.new("RGB", (10, 600))))  # 60 to 1


def test_large_files_are_hashed_and_decoded_in_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "READ_WHOLE_LIMIT", 1 << 20)
    path = tmp_path / "padded.jpg"
    data = jpeg_bytes(make_photo(4, (640, 480))) + os.urandom(24 << 20)  # a photo with 24 MB after it
    path.write_bytes(data)
    tracemalloc.start()
    try:
        got = prepare_file(path, DecodeSpec(232, 256, 224))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.reason is None and got.pixels.shape == (224, 224, 3)
    assert got.digest == content_digest(data)
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB held at once"


# -- the pixel limit: decided once, from the header, the same in every thread --------------------------
@pytest.fixture(scope="module")
def jpeg_108mp() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (12000, 9000), 128).save(buf, "JPEG", quality=50)
    return buf.getvalue()


def test_a_108mp_photo_is_read_in_every_thread_whatever_the_warning_filters(jpeg_108mp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning anywhere would now be an exception
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: decode_bytes(jpeg_108mp, min_side=224, name="big.jpg"), range(8)))
    assert [(d.width, d.height, d.format) for d in results] == [(12000, 9000, "JPEG")] * 8
    assert all(min(d.image.size) >= 224 for d in results)


def test_over_250mp_is_refused_from_the_header_in_every_thread():
    buf = io.BytesIO()
    Image.new("1", (16000, 16000)).save(buf, "PNG")  # 256 MP in a few kilobytes

    def attempt(_):
        try:
            decode_bytes(buf.getvalue(), name="huge.png")
        except ImageError as exc:
            return str(exc)
        return "decoded"

    with ThreadPoolExecutor(8) as pool:
        reasons = set(pool.map(attempt, range(8)))
    assert reasons == {"refused: 16000x16000 is 256 megapixels, over the 250 MP safety limit "
                       "(possible decompression bomb)"}
    images.check_dimensions(20000, 12500)  # exactly 250 MP is allowed
    with pytest.raises(ImageError, match="250 MP"):
        images.check_dimensions(20001, 12500)


# -- AVIF, HEIF: read when the codec is there, a reason naming it when not ------------------------------
AVIF_HEAD = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64)
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)


@pytest.mark.skipif(not images.AVIF_SUPPORTED, reason="this Pillow has no AVIF codec")
def test_avif_round_trip(tmp_path):
    im = make_photo(7, size=(64, 48))
    path = tmp_path / "phone.avif"
    im.save(path, "AVIF", quality=90)
    dec = load_image(path)
    assert dec.format == "AVIF" and dec.image.size == (64, 48)
    diff = np.abs(np.asarray(dec.image).astype(int) - np.asarray(im).astype(int)).mean()
    assert diff < 12
    assert walk(tmp_path) == ["phone.avif"]


def test_avif_without_codec_is_skipped_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "AVIF_SUPPORTED", False)
    path = tmp_path / "phone.avif"
    path.write_bytes(AVIF_HEAD)
    with pytest.raises(ImageError, match=r"AVIF photo, but this installation's Pillow has no AVIF codec \(libavif\)"):
        load_image(path)


def test_heic_without_pillow_heif_is_skipped_naming_it(monkeypatch):
    monkeypatch.setattr(images, "HEIF_SUPPORTED", False)
    with pytest.raises(ImageError, match="pillow-heif package is not installed"):
        decode_bytes(HEIC_HEAD, name="iphone.heic")


def test_sniff_tells_formats_from_their_first_bytes():
    assert images.sniff(AVIF_HEAD) == "AVIF" and images.sniff(HEIC_HEAD) == "HEIF"
    assert images.sniff(b"II*\0" + bytes(8), "x.tif") == "TIFF"
    assert images.sniff(b"II*\0" + bytes(8), "x.NEF") == "RAW"
    assert images.sniff(b"FUJIFILMCCD-RAW 0201", "x.jpg") == "RAW"
    assert images.sniff(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom", "x.cr3") == "RAW"
    assert images.sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert images.sniff(b"P6\n4 4\n255\n") == "PPM"
    assert images.sniff(b"%PDF-1.4", "x.jpg") is None
    assert images.sniff(b"just text", "x.nef") is None
