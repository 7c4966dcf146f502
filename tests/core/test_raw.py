"""Camera RAW files: LibRaw-readable DNGs made in the test, their preview, demosaic and orientation."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simviewer.core import images, raw
from simviewer.core.decoding import DecoderPool, DecodeSpec, prepare_file
from simviewer.core.images import ImageError, decode_bytes, is_image_name, load_image, walk_images

from ..rawfiles import dng_bytes, jpeg_preview, two_colour_scene

pytestmark = pytest.mark.skipif(not raw.RAW_SUPPORTED, reason="rawpy is not installed")

SCENE = two_colour_scene(64, 96)  # left half red, right half blue


def green_preview(size=(300, 200)) -> Image.Image:
    """A preview that differs from the sensor data: green left, white right."""
    im = Image.new("RGB", size, (255, 255, 255))
    im.paste((0, 200, 0), (0, 0, size[0] // 2, size[1]))
    return im


def colour(px) -> str:
    r, g, b = (int(v) for v in px)
    if r > 150 and g < 80 and b < 150:
        return "red"
    if b > 150 and r < 80:
        return "blue"
    if g > 150 and r < 80 and b < 80:
        return "green"
    if min(r, g, b) > 200:
        return "white"
    return f"other{(r, g, b)}"


def corners(im: Image.Image) -> tuple[str, str]:
    """Colours near the top-left and the bottom-right corner."""
    a = np.asarray(im)
    return colour(a[2, 2]), colour(a[-3, -3])


def test_raw_suffixes_are_listed(tmp_path):
    for suffix in ("CR2", "cr3", "NEF", "arw", "RAF", "orf", "RW2", "dng", "pef", "srw", "x3f"):
        assert is_image_name(f"shot.{suffix}"), suffix
    (tmp_path / "a.NEF").write_bytes(b"x")
    (tmp_path / "b.dng").write_bytes(b"x")
    assert sorted(e.name for e in walk_images(tmp_path)) == ["a.NEF", "b.dng"]


def test_dng_without_preview_is_demosaiced_at_half_size_to_the_scene(tmp_path):
    path = tmp_path / "scene.dng"
    path.write_bytes(dng_bytes(SCENE))
    dec = load_image(path, min_side=32)
    assert dec.format == "RAW" and (dec.width, dec.height) == (96, 64)  # the sensor's size
    assert dec.image.size == (48, 32) and dec.image.mode == "RGB"  # half size
    assert corners(dec.image) == ("red", "blue")
    assert dec.taken_at == 1625423400.0  # the DNG's DateTime, read through its EXIF


def test_a_large_enough_preview_is_used_without_demosaicing(tmp_path, monkeypatch):
    path = tmp_path / "shot.dng"
    path.write_bytes(dng_bytes(SCENE, jpeg_preview(green_preview())))

    def no_demosaic(_raw):
        raise AssertionError("demosaiced although the preview was large enough")

    monkeypatch.setattr(raw, "_demosaic", no_demosaic)
    dec = load_image(path, min_side=150)
    assert corners(dec.image) == ("green", "white")
    assert dec.format == "RAW" and (dec.width, dec.height) == (96, 64)
    assert min(dec.image.size) >= 150 and dec.image.size[0] <= 300  # JPEG draft: no larger than needed


def test_a_preview_smaller_than_the_network_input_is_not_used(tmp_path):
    path = tmp_path / "shot.dng"
    path.write_bytes(dng_bytes(SCENE, jpeg_preview(green_preview((60, 40)))))
    assert corners(load_image(path, min_side=20).image) == ("green", "white")
    assert corners(load_image(path, min_side=224).image) == ("red", "blue")  # the sensor data


TURNS = [  # RAW orientation, upright size of the half-size demosaic, colours of its top-left and bottom-right
    (1, (48, 32), ("red", "blue")),
    (3, (48, 32), ("blue", "red")),
    (6, (32, 48), ("red", "blue")),  # turned clockwise: the left (red) half is now on top
    (8, (32, 48), ("blue", "red")),
]


def two_colour_preview() -> Image.Image:
    return Image.fromarray((two_colour_scene(200, 300) * 255).astype(np.uint8))


@pytest.mark.parametrize("orientation, expected_size, expected", TURNS)
def test_raw_orientation_is_applied_to_the_demosaic(tmp_path, orientation, expected_size, expected):
    path = tmp_path / "turned.dng"
    path.write_bytes(dng_bytes(SCENE, orientation=orientation))
    dec = load_image(path, min_side=16)
    assert dec.image.size == expected_size and corners(dec.image) == expected
    assert (dec.width, dec.height) == ((64, 96) if orientation in (6, 8) else (96, 64))


@pytest.mark.parametrize("orientation, expected_size, expected", TURNS)
def test_raw_orientation_is_applied_to_a_preview_without_its_own(tmp_path, monkeypatch, orientation,
                                                                 expected_size, expected):
    monkeypatch.setattr(raw, "_demosaic", lambda _raw: pytest.fail("demosaiced instead of using the preview"))
    path = tmp_path / "turned.dng"
    path.write_bytes(dng_bytes(SCENE, jpeg_preview(two_colour_preview()), orientation=orientation))
    dec = load_image(path, min_side=100)
    assert corners(dec.image) == expected
    assert (dec.image.width < dec.image.height) == (expected_size[0] < expected_size[1])


def test_a_preview_with_its_own_orientation_is_turned_once(tmp_path, monkeypatch):
    monkeypatch.setattr(raw, "_demosaic", lambda _raw: pytest.fail("demosaiced instead of using the preview"))
    path = tmp_path / "turned.dng"
    path.write_bytes(dng_bytes(SCENE, jpeg_preview(two_colour_preview(), orientation=6), orientation=6))
    dec = load_image(path, min_side=100)
    assert dec.image.size[0] < dec.image.size[1] and corners(dec.image) == ("red", "blue")


def test_corrupt_raw_is_skipped_with_libraw_reason(tmp_path):
    good = dng_bytes(SCENE)
    for name, data in (("cut.dng", good[:300]), ("noise.nef", os.urandom(20000)),
                       ("zeros.cr2", b"II*\0" + bytes(9000))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError, match="camera RAW that LibRaw cannot read"):
            load_image(path)
        prepared = prepare_file(path, DecodeSpec(32, 32, 32))
        assert prepared.pixels is None and "LibRaw" in prepared.reason
        assert prepared.digest is not None  # a photo's name and no photo: recorded like any bad file


def test_text_named_like_a_raw_is_reported_as_text():
    with pytest.raises(ImageError, match="holds text despite its .nef name"):
        decode_bytes(b"shopping list\n" * 50, name="notes.nef")


def test_a_tiff_is_a_tiff_unless_named_like_a_raw():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buf, "TIFF")
    assert decode_bytes(buf.getvalue(), name="plain.tif").format == "TIFF"
    with pytest.raises(ImageError, match="LibRaw"):
        decode_bytes(buf.getvalue(), name="plain.nef")  # TIFF without RAW data: LibRaw's to judge


def test_large_and_oddly_named_raws_are_read_from_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "READ_WHOLE_LIMIT", 1000)  # every test DNG counts as large
    name = os.fsdecode(b"caf\xe9.dng")  # not UTF-8: rawpy cannot take the path itself
    for path in (tmp_path / "big.dng", tmp_path / name):
        path.write_bytes(dng_bytes(SCENE))
        src = images.open_photo(path)
        assert src.data is None and src.kind == "RAW"
        assert corners(src.decode(16).image) == ("red", "blue")


def test_decoders_prepare_raw_like_any_photo(tmp_path):
    path = tmp_path / "shot.dng"
    path.write_bytes(dng_bytes(SCENE))
    spec = DecodeSpec(32, 32, 24)
    here = prepare_file(path, spec)
    assert here.format == "RAW" and here.pixels.shape == (24, 24, 3) and (here.width, here.height) == (96, 64)
    with DecoderPool(1, spec) as pool:
        there = pool.submit(path).result(timeout=60)
    assert there.digest == here.digest and np.array_equal(there.pixels, here.pixels)


def test_missing_rawpy_gives_a_reason_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(raw, "RAW_SUPPORTED", False)
    path = tmp_path / "shot.dng"
    path.write_bytes(dng_bytes(SCENE))
    with pytest.raises(ImageError, match="rawpy package"):
        load_image(path)


def test_bench_raw_runs_and_reports_the_ratio(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_raw.py"
    out = subprocess.run([sys.executable, str(script), "--megapixels", "0.5", "--repeat", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "preview" in out.stdout and "ratio:" in out.stdout
