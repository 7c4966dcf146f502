"""Camera RAW files made on the spot, for tests and benchmarks: no downloaded samples.

:func:`dng_bytes` writes a minimal but complete DNG (a TIFF with the DNG tags) that LibRaw reads: a
Bayer (RGGB) mosaic of a given RGB scene in a sub-IFD, and optionally an embedded JPEG preview in
IFD 0, the way cameras and converters store them.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

# TIFF field types: (type code, struct code of one value, values per item)
_TYPES = {"B": (1, "B", 1), "s": (2, "B", 1), "H": (3, "H", 1), "I": (4, "I", 1), "R": (5, "I", 2), "r": (10, "i", 2)}


def _ifd(entries: dict[int, tuple[str, object]], start: int, next_ifd: int = 0) -> bytes:
    """One little-endian IFD placed at *start*, with its out-of-line values right after it."""
    head = struct.pack("<H", len(entries))
    extra = b""
    extra_at = start + 2 + 12 * len(entries) + 4
    for tag in sorted(entries):
        kind, values = entries[tag]
        code, fmt, per = _TYPES[kind]
        if kind == "s":
            values = list(values.encode("ascii") + b"\0")
        elif isinstance(values, int):
            values = [values]
        values = list(values)
        payload = struct.pack(f"<{len(values)}{fmt}", *values)
        count = len(values) // per
        if len(payload) <= 4:
            field = payload.ljust(4, b"\0")
        else:
            field = struct.pack("<I", extra_at + len(extra))
            extra += payload + (b"\0" if len(payload) % 2 else b"")
        head += struct.pack("<HHI", tag, code, count) + field
    return head + struct.pack("<I", next_ifd) + extra


def mosaic(scene: np.ndarray, white: int = 4095) -> np.ndarray:
    """The RGGB Bayer mosaic a sensor would record of *scene* ((H, W, 3) floats in 0..1)."""
    h, w, _ = scene.shape
    cfa = np.empty((h, w), np.uint16)
    cfa[0::2, 0::2] = scene[0::2, 0::2, 0] * white
    cfa[0::2, 1::2] = scene[0::2, 1::2, 1] * white
    cfa[1::2, 0::2] = scene[1::2, 0::2, 1] * white
    cfa[1::2, 1::2] = scene[1::2, 1::2, 2] * white
    return cfa


def jpeg_preview(image: Image.Image, quality: int = 90, orientation: int | None = None) -> bytes:
    """JPEG bytes of *image*; *orientation*: an EXIF orientation tag of the preview's own."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def dng_bytes(scene: np.ndarray, preview: bytes | None = None, orientation: int = 1, white: int = 4095,
              taken: str = "2021:07:04 18:30:00") -> bytes:
    """A DNG of *scene* ((H, W, 3) floats in 0..1, H and W even) as 16-bit RGGB data.

    *preview*: JPEG bytes stored in IFD 0 as the embedded preview (the raw data then goes to a
    sub-IFD, as in camera DNGs). *orientation*: the TIFF/EXIF orientation tag (1, 3, 6, 8).
    *taken*: the DateTime tag.
    """
    h, w, _ = scene.shape
    cfa = mosaic(scene, white).astype("<u2").tobytes()
    identity = [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1]
    common = {
        271: ("s", "Simviewer"), 272: ("s", "Test camera"), 274: ("H", orientation), 306: ("s", taken),
        50706: ("B", [1, 4, 0, 0]), 50707: ("B", [1, 1, 0, 0]), 50708: ("s", "Simviewer Test camera"),
        50721: ("r", identity), 50728: ("R", [1, 1, 1, 1, 1, 1]), 50778: ("H", 21),
    }
    raw = {
        254: ("I", 0), 256: ("I", w), 257: ("I", h), 258: ("H", 16), 259: ("H", 1), 262: ("H", 32803),
        277: ("H", 1), 278: ("I", h), 279: ("I", len(cfa)), 284: ("H", 1),
        33421: ("H", [2, 2]), 33422: ("B", [0, 1, 1, 2]), 50717: ("I", white),
    }
    out = bytearray(b"II*\0" + struct.pack("<I", 0))
    raw_at = len(out)
    out += cfa
    if preview is None:
        raw.update(common)
        raw[273] = ("I", raw_at)
        ifd0_at = len(out)
        out += _ifd(raw, ifd0_at)
    else:
        pw, ph = Image.open(io.BytesIO(preview)).size
        prev_at = len(out)
        out += preview + (b"\0" if len(preview) % 2 else b"")
        first = {
            **common, 254: ("I", 1), 256: ("I", pw), 257: ("I", ph), 258: ("H", [8, 8, 8]), 259: ("H", 7),
            262: ("H", 6), 273: ("I", prev_at), 277: ("H", 3), 278: ("I", ph), 279: ("I", len(preview)),
            284: ("H", 1), 330: ("I", 0),
        }
        ifd0_at = len(out)
        size0 = len(_ifd(first, ifd0_at))
        first[330] = ("I", ifd0_at + size0)
        out += _ifd(first, ifd0_at)
        raw[273] = ("I", raw_at)
        out += _ifd(raw, len(out))
    struct.pack_into("<I", out, 4, ifd0_at)
    return bytes(out)


def two_colour_scene(h: int, w: int) -> np.ndarray:
    """Left half red, right half blue: any turn or mirror of the picture shows."""
    scene = np.full((h, w, 3), 0.1, np.float32)
    scene[:, : w // 2, 0] = 0.8
    scene[:, w // 2 :, 2] = 0.8
    return scene
