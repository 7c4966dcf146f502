"""Finding photo files and decoding them safely into RGB.

Every decode problem becomes an :class:`ImageError` whose message is a short, human reason
("empty file (0 bytes)", "truncated or corrupt JPEG data", ...). Callers record the reason and go
on; nothing here is allowed to abort a run because of one bad file.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

try:  # HEIC/HEIF (iPhone photos) through pillow-heif; optional at run time, a dependency at install.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the installation
    HEIF_SUPPORTED = False

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff",
        ".gif", ".heic", ".heif", ".hif", ".avif", ".ppm", ".pgm", ".pbm", ".pnm",
    }
)

# Formats we accept from Pillow's content sniffing. Anything else (an EPS, a PDF, an ICO that
# Pillow happens to open) is not a photo and is skipped with a reason.
SUPPORTED_FORMATS = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF", "HEIF", "AVIF", "PPM"}
)

# A decode that would need more pixels than this is refused before any pixel is decoded.
# 250 MP covers stitched panoramas; decompression bombs claim billions.
MAX_PIXELS = 250_000_000


class ImageError(Exception):
    """A file that cannot be used as a photo; ``str(err)`` is the reason shown to the user."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image ready for the network plus facts about the original file."""

    image: Image.Image
    width: int  # original width after EXIF orientation, before any draft reduction
    height: int
    format: str
    taken_at: float | None = None  # EXIF capture time (seconds since the epoch, local time as UTC)


@dataclass
class WalkErrors:
    """Folders that could not be read during a walk, with their reasons."""

    folders: list[tuple[str, str]] = field(default_factory=list)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# Edits a near-duplicate finder should see through: a mirrored copy, and rotations a camera or
# an editor may have applied without EXIF orientation. With these three on each photo, the
# symmetric pair search also covers 270 degrees (photo B rotated 90 back is photo A).
VARIANTS = {
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rot180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
}
# The same on (H, W, 3) pixel arrays, as the decoders hand them to the network (same directions).
ARRAY_VARIANTS = {
    "mirror": lambda a: np.ascontiguousarray(a[:, ::-1]),
    "rot90": lambda a: np.ascontiguousarray(np.rot90(a, 1)),
    "rot180": lambda a: np.ascontiguousarray(a[::-1, ::-1]),
}


def walk_images(root: str | os.PathLike, errors: WalkErrors | None = None) -> Iterator[os.DirEntry]:
    """Yield ``DirEntry`` objects for image files under *root*, recursively.

    Hidden files and folders (leading dot) are skipped. Symlinked folders are followed, but each
    real folder is visited once, so symlink loops end. Unreadable folders are recorded in *errors*
    and skipped. Entries come out sorted by name within each folder so runs are repeatable.
    """
    root = os.fspath(root)
    seen: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
    except OSError as exc:
        raise ImageError(f"cannot open folder {root!r}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ImageError(f"not a folder: {root!r}")
    stack = [root]
    seen.add((st.st_dev, st.st_ino))
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot read folder %s: %s", folder, exc)
            if errors is not None:
                errors.folders.append((folder, exc.strerror or str(exc)))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    est = entry.stat(follow_symlinks=True)
                    key = (est.st_dev, est.st_ino)
                    if key not in seen:
                        seen.add(key)
                        subfolders.append(entry.path)
                elif entry.is_file(follow_symlinks=True) and is_image_name(entry.name):
                    yield entry
            except OSError as exc:  # broken symlink, permission race
                log.debug("skipping %s: %s", entry.path, exc)
        stack.extend(reversed(subfolders))


def decode_bytes(data: bytes, min_side: int | None = None, name: str = "") -> DecodedImage:
    """Decode *data* into an RGB :class:`PIL.Image.Image`.

    *min_side*: the smallest short side the caller needs. JPEGs are decoded with ``draft()`` at the
    largest DCT reduction (1/2, 1/4, 1/8) that keeps both sides at least that large, which skips
    most of the work for camera photos. EXIF orientation is applied.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(_unidentified_reason(data, name)) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: image too large to decode safely ({exc})") from None
    except Image.DecompressionBombWarning:
        raise ImageError("refused: image too large to decode safely") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot read image header: {exc}") from None

    fmt = im.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"unsupported format {fmt}: not a photo format simviewer reads")
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"invalid image size {w}x{h}")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"refused: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the {MAX_PIXELS // 1_000_000} MP "
            "safety limit (possible decompression bomb)"
        )
    try:
        exif = im.getexif()
        orientation = exif.get(0x0112, 1)
        taken_at = exif_time(exif)
    except Exception:  # malformed EXIF must not cost the photo
        orientation, taken_at = 1, None
    if orientation in (5, 6, 7, 8):
        w, h = h, w

    try:
        if min_side and fmt in ("JPEG", "MPO") and im.mode in ("RGB", "L", "CMYK", "YCbCr"):
            # draft() keeps both sides >= the requested size; orientation does not matter here
            # because the request is square.
            im.draft(im.mode if im.mode != "YCbCr" else "RGB", (min_side, min_side))
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animated GIF/WebP/APNG, multi-page TIFF: the first frame
        im.load()
        im = _orient(im)
        rgb = to_rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: image too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as exc:
        raise ImageError(_decode_reason(fmt, exc)) from None
    except MemoryError:
        raise ImageError("not enough memory to decode this image") from None
    return DecodedImage(rgb, w, h, fmt, taken_at)


def exif_time(exif: Image.Exif) -> float | None:
    """DateTimeOriginal (else DateTime) as a timestamp; None when absent or unreadable."""
    import calendar
    import time as _time

    raw = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)  # DateTimeOriginal, DateTime
    if not raw:
        return None
    try:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return float(calendar.timegm(_time.strptime(text.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")))
    except (ValueError, UnicodeDecodeError):
        return None


def load_image(path: str | os.PathLike, min_side: int | None = None) -> DecodedImage:
    """Read and decode one file; see :func:`decode_bytes`."""
    data = read_file(path)
    return decode_bytes(data, min_side, name=os.fspath(path))


def read_file(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except IsADirectoryError:
        raise ImageError("is a folder, not a file") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None


def file_digest(path: str | os.PathLike, digest_size: int = 16) -> str:
    """BLAKE2b of a file's bytes, read in 1 MiB chunks (the catalog's content hash at size 16)."""
    import hashlib

    h = hashlib.blake2b(digest_size=digest_size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _orient(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # a broken EXIF block is not worth losing the photo over
        log.debug("ignoring bad EXIF orientation: %s", exc)
        return im


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, the way a person would expect it to look.

    Transparency is composited onto white (how viewers show it). 16-bit and 32-bit grey are
    scaled into 8 bits instead of clipped, which would turn most of the picture white.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if mode == "F":
            arr = arr.astype(np.float64)
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
            arr8 = np.nan_to_num(scaled).astype(np.uint8)
        else:
            arr = arr.astype(np.int64)
            arr8 = (arr >> 8).clip(0, 255).astype(np.uint8) if arr.max() > 255 else arr.clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX


_SIGNATURES = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF document"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"<svg", "SVG drawing"),
    (b"<?xml", "XML/SVG document"),
]


def _unidentified_reason(data: bytes, name: str) -> str:
    head = data[:64].lstrip()
    ext = os.path.splitext(name)[1].lower().lstrip(".")
    for sig, kind in _SIGNATURES:
        if head.startswith(sig):
            if kind in ("JPEG", "PNG", "GIF", "BMP", "TIFF"):
                return f"corrupt {kind} file (header is damaged)"
            return f"not a photo: the file holds a {kind}" + (f" despite its .{ext} name" if ext else "")
    if head[:4] in (b"RIFF",) and data[8:12] != b"WEBP":
        return "not a photo: RIFF file that is not WebP"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in data[:512]):
        return "not an image: the file holds text" + (f" despite its .{ext} name" if ext else "")
    return "not a recognised image: unknown or corrupt file content" + (f" (named .{ext})" if ext else "")


def _decode_reason(fmt: str, exc: BaseException) -> str:
    msg = str(exc)
    if "truncated" in msg.lower() or isinstance(exc, EOFError):
        return f"truncated {fmt} file (the end of the image data is missing)"
    return f"corrupt {fmt} data: {msg}" if msg else f"corrupt {fmt} data"


def path_key(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """The catalog key of *path*: relative to *root* with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()
