"""Augmentations: the random edits that make two photo files duplicates (self-supervised views),
milder views for supervised training, and the fixed edits self-supervised validation ranks."""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps
from torchvision.transforms import functional as TF

CAPTIONS = ("Holiday 2019 - best of", "IMG_2041  14/07/2019", "Family weekend", "(c) photo club",
            "DSC00417.JPG", "Summer '22", "sent from my phone", "Grandma's birthday")


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def add_caption(im: Image.Image, text: str, band: int, top: bool = False) -> Image.Image:
    """A white band with black text below (or above) the picture, like a captioned export."""
    border = (0, band, 0, 0) if top else (0, 0, 0, band)
    out = ImageOps.expand(im, border=border, fill="white")
    y = (band // 3) if top else im.height + band // 3
    ImageDraw.Draw(out).text((max(2, im.width // 40), y), text, fill="black", font=_font())
    return out


def jpeg_roundtrip(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def random_resized_crop(im: Image.Image, size: int, rng: random.Random, scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """A random crop of *scale* of the area and *ratio* aspect, scaled to *size* x *size* (the centre
    square when ten tries find none)."""
    w, h = im.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return im.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    side = min(w, h)
    x, y = (w - side) // 2, (h - side) // 2
    return im.resize((size, size), Image.BILINEAR, box=(x, y, x + side, y + side))


def _frame(im: Image.Image, rng: random.Random) -> Image.Image:
    """Turn, mirror, caption band and border, each at random: the edits before the crop."""
    if rng.random() < 0.25:
        im = im.transpose(rng.choice((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                      Image.Transpose.ROTATE_270)))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    if rng.random() < 0.2:
        band = rng.randint(max(6, im.height // 12), max(8, im.height // 6))
        im = add_caption(im, rng.choice(CAPTIONS), band, top=rng.random() < 0.3)
    if rng.random() < 0.25:
        width = max(1, round(max(im.size) * rng.uniform(0.02, 0.08)))
        u = rng.random()
        fill = (255, 255, 255) if u < 0.6 else (0, 0, 0) if u < 0.8 else tuple(rng.randint(0, 255) for _ in range(3))
        im = ImageOps.expand(im, border=width, fill=fill)
    return im


def _colour(im: Image.Image, rng: random.Random, spread: float) -> Image.Image:
    """Brightness, contrast and saturation each scaled by a factor in [1 - spread, 1 + spread]."""
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(1 - spread, 1 + spread))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(1 - spread, 1 + spread))
    return ImageEnhance.Color(im).enhance(rng.uniform(1 - spread, 1 + spread))


def duplicate_view(im: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """A random edited copy, the kind that makes two photo files duplicates: 90-degree rotation,
    mirror, caption band, border, a crop keeping half the picture or more, colour changes, grey,
    JPEG re-encoding at a random quality. Returns a *size* x *size* RGB image."""
    im = random_resized_crop(_frame(im, rng), size, rng, (0.5, 1.0))
    if rng.random() < 0.8:
        im = _colour(im, rng, 0.4)
        if rng.random() < 0.5:
            im = TF.adjust_hue(im, rng.uniform(-0.05, 0.05))
    if rng.random() < 0.2:
        im = im.convert("L").convert("RGB")
    if rng.random() < 0.5:
        im = jpeg_roundtrip(im, rng.randint(15, 90))
    return im


def class_view(im: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """A mild random view for supervised training: crop, mirror, a little colour change."""
    im = random_resized_crop(im, size, rng, (0.5, 1.0))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    if rng.random() < 0.5:
        im = _colour(im, rng, 0.2)
    return im


# Fixed edits for self-supervised validation (as in benchmarks/make_neardup_set.py).
VAL_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop": lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
    "jpeg": lambda im: jpeg_roundtrip(im, 25),
    "resize": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.LANCZOS),
    "mirror": ImageOps.mirror,
    "rotate": lambda im: im.rotate(90, expand=True),
    "border": lambda im: ImageOps.expand(im, border=max(im.size) // 16, fill="white"),
    "colour": lambda im: ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(1.6)).enhance(1.15),
    "caption": lambda im: add_caption(im, "Holiday 2019 - best of", max(12, im.height // 8)),
}
