"""Camera RAW photos (CR2/CR3, NEF, ARW, RAF, ORF, RW2, DNG, ...) through rawpy, LibRaw's binding.

Most RAW files carry the camera's own JPEG rendering of the shot. When that preview is at least
as large as the caller needs (the network's input, a thumbnail), it is what simviewer decodes: a
JPEG decode with ``draft()`` and no demosaicing at all (benchmarks/bench_raw.py measures the
difference). Otherwise the sensor data is demosaiced at half size (each 2x2 Bayer cell becomes one
pixel) with the camera's white balance. Either way the picture is turned upright by the RAW
file's orientation, and a file LibRaw cannot read becomes an :class:`ImageError` with LibRaw's
reason.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

from .images import (
    _TIFF_SIGNATURES,
    _TRANSPOSE,
    HEAD_BYTES,
    DecodedImage,
    ImageError,
    PhotoSource,
    check_dimensions,
    decode_stream,
    exif_time,
    to_rgb,
)

log = logging.getLogger(__name__)

try:
    import rawpy

    RAW_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the installation
    rawpy = None
    RAW_SUPPORTED = False

# LibRaw's "flip" (0, 3 = 180 degrees, 5 = 90 counter-clockwise, 6 = 90 clockwise) as EXIF orientation.
_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}
_EXIF_SPAN = 1 << 20  # how much of a large RAW file is read for its capture time


def decode_raw(src: PhotoSource, min_side: int | None = None) -> DecodedImage:
    """Decode a camera RAW file into upright RGB.

    The embedded JPEG preview is used when its short side is at least *min_side* (when *min_side*
    is None: at least half the sensor's short side, what a half-size demosaic gives); else the
    sensor data is demosaiced at half size. The reported width and height are the sensor image's,
    upright.
    """
    taken_at = None
    with _open(src) as raw:
        sizes = raw.sizes
        check_dimensions(sizes.raw_width, sizes.raw_height)  # what LibRaw will unpack
        orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
        w, h = (sizes.height, sizes.width) if orientation in (6, 8) else (sizes.width, sizes.height)
        check_dimensions(w, h)
        preview = _preview(raw, src.name, min_side or min(w, h) // 2, min_side, orientation)
        if preview is not None:
            image, taken_at = preview.image, preview.taken_at
        else:
            image = _demosaic(raw)
    if taken_at is None:
        taken_at = _tiff_time(src)
    return DecodedImage(image, w, h, "RAW", taken_at)


def _reason(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text).strip() or type(exc).__name__
    return text[:1].lower() + text[1:]


def _open(src: PhotoSource):
    """LibRaw's reader on *src*: on its bytes when they were read whole, else on the file itself."""
    try:
        if src.data is not None:
            return rawpy.imread(io.BytesIO(src.data))
        try:
            src.path.encode("utf-8")
        except UnicodeEncodeError:  # rawpy passes paths as UTF-8: give it the bytes instead
            with src.open() as fh:
                return rawpy.imread(fh)
        return rawpy.imread(src.path)
    except rawpy.LibRawError as exc:
        raise ImageError(f"camera RAW that LibRaw cannot read: {_reason(exc)}") from None
    except MemoryError:
        raise ImageError("not enough memory to read this RAW file") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read RAW file: {exc}") from None


def _preview(raw, name: str, need: int, min_side: int | None, orientation: int) -> DecodedImage | None:
    """The embedded preview, upright, when its short side is at least *need*; else None."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, ValueError, MemoryError) as exc:  # none, or none LibRaw can unpack
        log.debug("%s: no usable preview (%s)", name, _reason(exc))
        return None
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        arr = np.asarray(thumb.data)
        if arr.ndim != 3 or min(arr.shape[:2]) < need:
            return None
        image = to_rgb(Image.fromarray(np.ascontiguousarray(arr[:, :, :3]).astype(np.uint8, copy=False)))
        image = _TRANSPOSE.get(orientation, lambda im: im)(image)
        return DecodedImage(image, image.width, image.height, "RAW")
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None
    data = bytes(thumb.data)
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            short = min(im.size)
    except Exception as exc:  # a damaged preview: the sensor data may still be fine
        log.debug("%s: unreadable preview (%s)", name, exc)
        return None
    if short < need:
        return None
    try:
        return decode_stream(io.BytesIO(data), data[:HEAD_BYTES], name, min_side, default_orientation=orientation)
    except ImageError as exc:
        log.debug("%s: preview does not decode (%s)", name, exc)
        return None


def _demosaic(raw) -> Image.Image:
    """Half-size demosaic with the camera's white balance, 8 bits, turned upright by LibRaw."""
    try:
        rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    except rawpy.LibRawError as exc:
        raise ImageError(f"camera RAW data that LibRaw cannot decode: {_reason(exc)}") from None
    except MemoryError:
        raise ImageError("not enough memory to decode this RAW file") from None
    if rgb.ndim == 3 and rgb.shape[2] == 1:  # a monochrome sensor
        rgb = rgb[:, :, 0]
    return to_rgb(Image.fromarray(np.ascontiguousarray(rgb)))


def _tiff_time(src: PhotoSource) -> float | None:
    """The capture time from a TIFF-based RAW's EXIF (CR2, NEF, ARW, DNG, ...), parsed by Pillow."""
    if not src.head.startswith(_TIFF_SIGNATURES):
        return None
    try:
        if src.data is not None:
            data = src.data
        else:  # camera files keep their EXIF near the start
            with src.open() as fh:
                data = fh.read(_EXIF_SPAN)
        exif = Image.Exif()
        exif.load(data)
        return exif_time(exif)
    except Exception as exc:  # the time is a nicety; the photo does not depend on it
        log.debug("%s: no capture time (%s)", src.name, exc)
        return None
