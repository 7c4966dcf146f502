"""Decoding: every odd input either becomes a correct RGB image or a clear reason."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from simviewer.core import images
from simviewer.core.images import ImageError, decode_bytes, load_image, walk_images

from ..conftest import jpeg_bytes, make_photo


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
