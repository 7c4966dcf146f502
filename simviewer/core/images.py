"""Finding photo files and decoding them safely into RGB.

Every decode problem becomes an :class:`ImageError` whose message is a short, human reason
("empty file (0 bytes)", "truncated or corrupt JPEG data", ...). Callers record the reason and go
on; nothing here is allowed to abort a run because of one bad file.

What a file holds is decided from its first bytes (:func:`sniff`) before the rest is read, so a
large file that is not a photo costs one small read whatever its name. Files up to
:data:`READ_WHOLE_LIMIT` are read once, hashed and decoded from memory; larger ones are hashed in
chunks and decoded from the file, so memory stays bounded. The size limits are checked from the
header, before any pixel is decoded: at most :data:`MAX_PIXELS` pixels and sides at most
:data:`MAX_ASPECT` to 1. Camera RAW files go through LibRaw (:mod:`simviewer.core.raw`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

try:  # HEIC/HEIF (iPhone photos) through pillow-heif; optional at run time, a dependency at install.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the installation
    HEIF_SUPPORTED = False


def _pillow_has(feature: str) -> bool:
    from PIL import features

    try:
        return bool(features.check(feature))
    except ValueError:  # a Pillow too old to know the feature at all
        return False


# AVIF is read by Pillow itself when it was built with libavif (its wheels are, from 11.3 on).
AVIF_SUPPORTED = _pillow_has("avif")

# Camera RAW suffixes LibRaw reads (stills cameras; its video formats are left out).
RAW_EXTENSIONS = frozenset(
    {
        ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".fff", ".iiq", ".k25", ".kdc",
        ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf", ".ori", ".pef", ".raf", ".raw", ".rw2", ".rwl",
        ".sr2", ".srf", ".srw", ".x3f",
    }
)

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff",
        ".gif", ".heic", ".heif", ".hif", ".avif", ".ppm", ".pgm", ".pbm", ".pnm",
    }
) | RAW_EXTENSIONS

# Formats we accept from Pillow's content sniffing. Anything else (an EPS, a PDF, an ICO that
# Pillow happens to open) is not a photo and is skipped with a reason.
SUPPORTED_FORMATS = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF", "HEIF", "AVIF", "PPM"}
)

# A decode that would need more pixels than this is refused before any pixel is decoded.
# 250 MP covers stitched panoramas; decompression bombs claim billions.
MAX_PIXELS = 250_000_000
# Nor is a picture whose long side is more than this many times its short side: scaling a 1x20000
# strip to the network's input would take gigabytes. A 360-degree panorama is about 6 to 1.
MAX_ASPECT = 50
# Files up to this size are read whole (one read for the hash and the decode); larger ones are
# hashed in chunks and decoded from the file.
READ_WHOLE_LIMIT = 64 << 20
HEAD_BYTES = 4096  # what sniff() looks at
_CHUNK = 1 << 20

# The pixel limit is ours, checked from the header in decode (the same in every thread). Pillow's
# own check would warn from 89 MP and fail from 179 MP, through the process-wide warnings filters.
Image.MAX_IMAGE_PIXELS = None


class ImageError(Exception):
    """A file that cannot be used as a photo; ``str(err)`` is the reason shown to the user."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image ready for the network plus facts about the original file."""

    image: Image.Image
    width: int  # original width after EXIF orientation, before any draft reduction
    height: int
    format: str  # Pillow's format name, or "RAW" for a camera RAW file
    taken_at: float | None = None  # EXIF capture time (seconds since the epoch, local time as UTC)


@dataclass
class WalkErrors:
    """What a walk could not list: folders and files, each with its reason.

    *folders*: folders that could not be read, or listed but not entered. *files*: entries with a
    photo's name that are not listed: FIFOs, sockets, devices, dangling links, and links to a
    photo the walk lists already (under its own path).
    """

    folders: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_raw_name(name: str) -> bool:
    """True for a camera RAW suffix (.nef, .cr2, .dng, ...)."""
    return os.path.splitext(name)[1].lower() in RAW_EXTENSIONS


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

    Hidden files and folders (leading dot) are skipped. Entries come out sorted by name within
    each folder so runs are repeatable. Nothing but a folder is ever opened: a FIFO would block.
    What is not listed is recorded in *errors* with its reason: unreadable folders, folders that
    can be listed but not entered, and, among names with a photo suffix, FIFOs, sockets, devices
    and dangling links.

    Symbolic links: a photo is listed once, under its real path when that lies in the library.
    A link to a file the walk lists anyway is recorded as "link to ..., listed once"; a link to a
    photo outside the library is listed under the link's own path (the first of several links to
    one file). A linked folder inside the library is not followed (its photos are listed under
    their real paths); one outside is followed once, so loops end.
    """
    root = os.fspath(root)
    try:
        st = os.stat(root)
    except OSError as exc:
        raise ImageError(f"cannot open folder {root!r}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ImageError(f"not a folder: {root!r}")
    yield from _Walk(root, errors if errors is not None else WalkErrors()).run(st)


def _special_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in Path(rel).parts)


class _Walk:
    """One walk of :func:`walk_images`: the folders seen, and the photos reached through links."""

    def __init__(self, root: str, errors: WalkErrors) -> None:
        self.root, self.errors = root, errors
        self.real_root = os.path.realpath(root)
        self.seen_dirs: set[tuple[int, int]] = set()
        # Photos reached through a link to outside the library: (device, inode) -> the path listed.
        self.outside: dict[tuple[int, int], str] = {}

    def run(self, st: os.stat_result) -> Iterator[os.DirEntry]:
        self.seen_dirs.add((st.st_dev, st.st_ino))
        stack: list[tuple[str, bool]] = [(self.root, False)]
        while stack:
            folder, outside = stack.pop()
            entries = self._list(folder)
            subfolders: list[tuple[str, bool]] = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_symlink():
                        yield from self._link(entry, subfolders)
                    elif entry.is_dir(follow_symlinks=False):
                        est = entry.stat(follow_symlinks=False)
                        if (est.st_dev, est.st_ino) not in self.seen_dirs:
                            self.seen_dirs.add((est.st_dev, est.st_ino))
                            subfolders.append((entry.path, outside))
                    elif not is_image_name(entry.name):
                        continue
                    elif entry.is_file(follow_symlinks=False):
                        if not outside or self._first(entry.path, entry.stat(follow_symlinks=False), ""):
                            yield entry
                    else:
                        kind = _special_kind(entry.stat(follow_symlinks=False).st_mode)
                        self._skip(entry.path, f"not a regular file ({kind})")
                except OSError as exc:  # vanished or changed while listed
                    log.debug("skipping %s: %s", entry.path, exc)
            stack.extend(reversed(subfolders))

    def _list(self, folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._folder_error(folder, exc.strerror or str(exc))
            return []
        effective = os.access in os.supports_effective_ids
        if entries and not os.access(folder, os.X_OK, effective_ids=effective):
            # Names can be read, but no file in it can be opened (nor its folders entered).
            self._folder_error(folder, "can be listed but not entered: Permission denied")
            return []
        return entries

    def _link(self, entry: os.DirEntry, subfolders: list[tuple[str, bool]]) -> Iterator[os.DirEntry]:
        try:
            st = os.stat(entry.path)
        except OSError as exc:
            if is_image_name(entry.name):
                if isinstance(exc, FileNotFoundError):
                    self._skip(entry.path, f"dangling link to {os.readlink(entry.path)}")
                else:
                    self._skip(entry.path, f"link that cannot be followed: {exc.strerror or exc}")
            return
        real = os.path.realpath(entry.path)
        rel = os.path.relpath(real, self.real_root)
        inside = not (rel == ".." or rel.startswith(".." + os.sep)) and not _hidden(rel)
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if inside or key in self.seen_dirs:
                log.debug("not following %s: its folder %s is walked already", entry.path, real)
            else:
                self.seen_dirs.add(key)
                subfolders.append((entry.path, True))
            return
        if not is_image_name(entry.name):
            return
        if not stat.S_ISREG(st.st_mode):
            self._skip(entry.path, f"not a regular file (link to a {_special_kind(st.st_mode)})")
        elif inside and is_image_name(real):
            self._skip(entry.path, f"link to {Path(rel).as_posix()}, listed once")
        elif self._first(entry.path, st, f"link to {real}, "):
            yield entry

    def _first(self, path: str, st: os.stat_result, what: str) -> bool:
        """True for the first path of a photo reached through a link to outside the library."""
        key = (st.st_dev, st.st_ino)
        first = self.outside.setdefault(key, path)
        if first != path:
            self._skip(path, f"{what}already listed as {Path(os.path.relpath(first, self.root)).as_posix()}")
        return first == path

    def _skip(self, path: str, reason: str) -> None:
        log.info("not listed: %s (%s)", path, reason)
        self.errors.files.append((path, reason))

    def _folder_error(self, folder: str, reason: str) -> None:
        log.warning("cannot read folder %s: %s", folder, reason)
        self.errors.folders.append((folder, reason))


# -- what a file holds, from its first bytes -------------------------------------------------------
_RAW_SIGNATURES = (
    b"FUJIFILM",  # RAF
    b"\0MRM",  # Minolta MRW
    b"FOVb",  # Sigma X3F
    b"IIRO", b"IIRS", b"MMOR",  # Olympus ORF
    b"IIU\0",  # Panasonic RW2
    b"II\x1a\0\0\0HEAPCCDR",  # Canon CRW
)
_TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF; also CR2, NEF, ARW, DNG...
_PHOTO_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1",
                          b"msf1", b"mif2"})


def _bmff_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO base media file (HEIF, AVIF, CR3), else empty."""
    if head[4:8] != b"ftyp":
        return set()
    end = min(int.from_bytes(head[:4], "big"), len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}


def sniff(head: bytes, name: str = "") -> str | None:
    """What the first bytes of a file announce: "JPEG", "PNG", ..., "RAW", or None for no photo.

    A TIFF structure named like a camera RAW (.nef, .cr2, .dng, ...) is "RAW", as is any content
    under such a name that is not text: LibRaw knows formats without a fixed signature.
    """
    brands = _bmff_brands(head)
    if head.startswith(_RAW_SIGNATURES) or b"crx " in brands:
        return "RAW"
    if head.startswith(_TIFF_SIGNATURES):
        return "RAW" if is_raw_name(name) else "TIFF"
    for signature, fmt in _PHOTO_SIGNATURES:
        if head.startswith(signature):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if brands & {b"avif", b"avis"}:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    if len(head) > 2 and head[:1] == b"P" and head[1] in b"123456" and head[2:3].isspace():
        return "PPM"
    if is_raw_name(name) and not _is_text(head):
        return "RAW"
    return None


def _missing_codec(kind: str) -> str | None:
    """Why a photo of *kind* cannot be read by this installation, or None when it can."""
    if kind == "AVIF" and not AVIF_SUPPORTED:
        return ("AVIF photo, but this installation's Pillow has no AVIF codec (libavif); "
                "Pillow's own wheels include it from version 11.3")
    if kind == "HEIF" and not HEIF_SUPPORTED:
        return "HEIC/HEIF photo, but the pillow-heif package is not installed"
    if kind == "RAW":
        from .raw import RAW_SUPPORTED

        if not RAW_SUPPORTED:
            return "camera RAW photo, but the rawpy package (LibRaw) is not installed"
    return None


@dataclass(frozen=True)
class PhotoSource:
    """A file that announced itself as a photo: its first bytes and, when small enough, all of them.

    *data* is the whole content when it was read whole (or given as bytes); otherwise the file at
    *path* is read again, in chunks, for the hash and by the decoder.
    """

    name: str
    kind: str
    head: bytes
    data: bytes | None = None
    path: str | None = None

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or exc}") from None

    def digest(self, digest_size: int = 16) -> str:
        """BLAKE2b of every byte (the catalog's content hash at size 16), in bounded memory."""
        if self.data is not None:
            return hashlib.blake2b(self.data, digest_size=digest_size).hexdigest()
        h = hashlib.blake2b(digest_size=digest_size)
        with self.open() as fh:
            try:
                for chunk in iter(lambda: fh.read(_CHUNK), b""):
                    h.update(chunk)
            except OSError as exc:
                raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
        return h.hexdigest()

    def decode(self, min_side: int | None = None) -> DecodedImage:
        """Decode into RGB; see :func:`decode_bytes`."""
        if self.kind == "RAW":
            from .raw import decode_raw

            return decode_raw(self, min_side)
        with self.open() as fh:
            return decode_stream(fh, self.head, self.name, min_side)


def open_photo(path: str | os.PathLike, whole_limit: int | None = None) -> PhotoSource:
    """Check that *path* is a photo from its first bytes, then read it whole if it is small enough.

    Raises :class:`ImageError` with the reason for anything else (a folder, a FIFO, a file that
    holds something other than a photo, a photo whose codec is missing). Only regular files are
    opened, and without blocking: a FIFO never stops a run. *whole_limit* defaults to
    :data:`READ_WHOLE_LIMIT`.
    """
    name = os.fspath(path)
    limit = READ_WHOLE_LIMIT if whole_limit is None else whole_limit
    try:
        _regular(os.stat(name))
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb", buffering=0, closefd=True) as fh:
            size = _regular(os.fstat(fd)).st_size
            head = _read_upto(fh, HEAD_BYTES)
            if not head:
                raise ImageError("empty file (0 bytes)")
            kind = readable_kind(head, name)
            data = None
            if size <= limit:
                fh.seek(0)  # one read of the whole file into one buffer: no copies to join
                data = _read_upto(fh, size + 1) if size > len(head) else head
                if len(data) > size:  # it grew while being read: hash and decode it from the file
                    data = None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    return PhotoSource(name, kind, head, data, name)


def _regular(st: os.stat_result) -> os.stat_result:
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"not a regular file ({_special_kind(st.st_mode)})")
    return st


def _read_upto(fh: BinaryIO, n: int) -> bytes:
    """Up to *n* bytes: one read for a regular file, more only when the system returns less."""
    first = fh.read(n)
    if not first or len(first) >= n:
        return first
    parts, got = [first], len(first)
    while got < n and (chunk := fh.read(n - got)):
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# -- decoding ----------------------------------------------------------------------------------------
def check_dimensions(w: int, h: int) -> None:
    """Refuse a picture whose header announces a size we do not decode (before any pixel is)."""
    if w <= 0 or h <= 0:
        raise ImageError(f"invalid image size {w}x{h}")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"refused: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the {MAX_PIXELS // 1_000_000} MP "
            "safety limit (possible decompression bomb)"
        )
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(
            f"refused: {w}x{h} is a strip, not a photo: one side is {max(w, h) / min(w, h):.0f} times the "
            f"other (the limit is {MAX_ASPECT} to 1)"
        )


def decode_bytes(data: bytes, min_side: int | None = None, name: str = "") -> DecodedImage:
    """Decode *data* into an RGB :class:`PIL.Image.Image`.

    *min_side*: the smallest short side the caller needs. JPEGs are decoded with ``draft()`` at the
    largest DCT reduction (1/2, 1/4, 1/8) that keeps both sides at least that large, which skips
    most of the work for camera photos; a camera RAW uses its embedded preview when that is large
    enough. EXIF orientation is applied.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    head = data[:HEAD_BYTES]
    kind = readable_kind(head, name)
    return PhotoSource(name, kind, head, data).decode(min_side)


def load_image(path: str | os.PathLike, min_side: int | None = None) -> DecodedImage:
    """Read and decode one file; see :func:`decode_bytes`. Memory is bounded whatever the file."""
    return open_photo(path).decode(min_side)


def _open_checked(fh: BinaryIO, head: bytes, name: str) -> Image.Image:
    """Pillow's view of the header, checked against our limits before any pixel is decoded."""
    try:
        im = Image.open(fh)
    except UnidentifiedImageError:
        raise ImageError(_unidentified_reason(head, name)) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: image too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"cannot read image header: {exc}") from None
    fmt = im.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"unsupported format {fmt}: not a photo format simviewer reads")
    check_dimensions(*im.size)
    return im


def decode_stream(fh: BinaryIO, head: bytes, name: str, min_side: int | None = None,
                  default_orientation: int = 1) -> DecodedImage:
    """Decode the picture Pillow reads from *fh*; see :func:`decode_bytes`.

    *default_orientation*: the EXIF orientation to apply when the picture has none of its own (a
    camera RAW's preview, whose orientation is the RAW file's).
    """
    im = _open_checked(fh, head, name)
    fmt = im.format
    w, h = im.size
    try:
        exif = im.getexif()
        orientation = exif.get(0x0112, 1)
        taken_at = exif_time(exif)
    except Exception:  # malformed EXIF must not cost the photo
        orientation, taken_at = 1, None
    own = orientation in range(2, 9)
    if not own:
        orientation = default_orientation
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
        im = _orient(im) if own else _TRANSPOSE.get(orientation, lambda i: i)(im)
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


# EXIF orientation -> the turn that shows the picture upright (ImageOps.exif_transpose's table).
_TRANSPOSE = {
    n: (lambda method: lambda im: im.transpose(method))(m)
    for n, m in {
        2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.items()
}


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


def read_file(path: str | os.PathLike) -> bytes:
    """Every byte of a file, whatever it holds. Photos are read through :func:`open_photo`, which
    looks at the first bytes before reading more."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except IsADirectoryError:
        raise ImageError("is a folder, not a file") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None


def file_digest(path: str | os.PathLike, digest_size: int = 16) -> str:
    """BLAKE2b of a file's bytes, read in 1 MiB chunks (the catalog's content hash at size 16)."""
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


def readable_kind(head: bytes, name: str) -> str:
    """The kind of photo the first bytes *head* of *name* show; ImageError when they show none, or
    one this installation has no codec for."""
    kind = sniff(head, name)
    if kind is None:
        raise ImageError(_unidentified_reason(head, name))
    missing = _missing_codec(kind)
    if missing:
        raise ImageError(missing)
    return kind


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
    if _is_text(data):
        return "not an image: the file holds text" + (f" despite its .{ext} name" if ext else "")
    return "not a recognised image: unknown or corrupt file content" + (f" (named .{ext})" if ext else "")


def _is_text(head: bytes) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in head[:512])


def _decode_reason(fmt: str, exc: BaseException) -> str:
    msg = str(exc)
    if "truncated" in msg.lower() or isinstance(exc, EOFError):
        return f"truncated {fmt} file (the end of the image data is missing)"
    return f"corrupt {fmt} data: {msg}" if msg else f"corrupt {fmt} data"


def path_key(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """The catalog key of *path*: relative to *root* with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()
