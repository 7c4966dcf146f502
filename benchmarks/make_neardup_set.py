"""Build a labelled near-duplicate set from real photos, for `simviewer eval`.

For each object of a UKBench-style folder (groups of consecutive photos of one object), the first
photo is the original and gets eight edited copies (crop, JPEG, resize, mirror, rotate, border,
colour, caption band): one duplicate group. The object's other photos (other viewpoints: alike but
not duplicates) go in as distractors, each in a group of its own.

    python benchmarks/make_neardup_set.py ../shared/data/ukbench_subset56 benchmarks/out/neardup
    simviewer eval benchmarks/out/neardup --labels benchmarks/out/neardup/labels.csv --weights none

The same module builds the sets of benchmarks/bench_quality.py with seeded *random* edits
(:data:`RANDOM_EDITS`, 5-7 per original, parameters drawn per copy) from three sources:
:func:`build_ukbench` (as above), :func:`build_coil` (COIL-100 turntable views: a few originals per
object, the neighbouring angles as distractors) and :func:`build_imagededup` (imagededup's test
photos, with the transformed copies that set provides kept in their originals' groups).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import random
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def caption(im: Image.Image) -> Image.Image:
    band = max(24, im.height // 8)
    out = ImageOps.expand(im, border=(0, 0, 0, band), fill="white")
    ImageDraw.Draw(out).text((10, im.height + band // 3), "Holiday 2019 - best of", fill="black")
    return out


# The fixed edits of the command line set (README, "Measured on near-duplicates of real photos").
EDITS = {
    "crop": lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
    "jpeg": lambda im: jpeg(im, 25),
    "resize": lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS),
    "mirror": ImageOps.mirror,
    "rotate": lambda im: im.rotate(90, expand=True),
    "border": lambda im: ImageOps.expand(im, border=max(im.size) // 16, fill="white"),
    "colour": lambda im: ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(1.6)).enhance(1.15),
    "caption": caption,
}


# -- seeded random edits ------------------------------------------------------------------------
# Each returns (edited image, what was done). Ranges differ on purpose from the fixed list above
# and from simviewer.core.calibration.EDITS, so an evaluation does not score the edits a threshold
# was calibrated on.
Edit = Callable[[Image.Image, random.Random], tuple[Image.Image, str]]

_TEXTS = ("Summer in Lisbon", "IMG_7731.JPG", "(c) 2021 J. Doe", "for sale - call now", "Day 3: the lake",
          "shared via WhatsApp", "Scan 0042", "Kids' party")


def _random_crop(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    fw, fh = rng.uniform(0.70, 0.90), rng.uniform(0.70, 0.90)  # each side on its own: the aspect changes
    w, h = max(8, round(im.width * fw)), max(8, round(im.height * fh))
    x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
    return im.crop((x, y, x + w, y + h)), f"crop {fw:.2f}x{fh:.2f}"


def _random_jpeg(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    q = rng.randint(10, 40)
    return jpeg(im, q), f"jpeg q{q}"


def _random_downscale(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    f = rng.uniform(0.2, 0.5)
    how = rng.choice((Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX))
    f = max(f, min(1.0, 32 / min(im.size)))  # never below 32 px a side (a 128 px COIL photo at 0.2)
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), how), f"downscale {f:.2f}"


def _random_gamma(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    g = rng.choice((rng.uniform(0.55, 0.8), rng.uniform(1.25, 1.8)))
    lut = [round(255 * (i / 255) ** g) for i in range(256)]
    return im.point(lut * len(im.getbands())), f"gamma {g:.2f}"


def _random_colour_cast(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    gains = [rng.uniform(0.8, 1.2) for _ in range(3)]
    sat = rng.uniform(0.6, 1.5)
    bands = [b.point(lambda v, k=k: min(255, round(v * k))) for b, k in zip(im.convert("RGB").split(), gains)]
    out = ImageEnhance.Color(Image.merge("RGB", bands)).enhance(sat)
    return out, "colour cast " + "/".join(f"{k:.2f}" for k in gains) + f" sat {sat:.2f}"


def _grey(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    return im.convert("L"), "grey"


def _mirror(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    return ImageOps.mirror(im), "mirror"


def _turn(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    deg = rng.choice((90, 270))
    how = Image.Transpose.ROTATE_90 if deg == 90 else Image.Transpose.ROTATE_270
    return im.transpose(how), f"turn {deg}"


def _random_border(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    side = min(im.size)
    widths = tuple(round(side * rng.uniform(0.03, 0.12)) for _ in range(4))  # left, top, right, bottom
    out = ImageOps.expand(im.convert("RGB"), border=widths, fill=colour)
    return out, f"border {max(widths)}px #{bytes(colour).hex()}"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: one bitmap size
        return ImageFont.load_default()


def _random_caption(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    band = max(12, round(im.height * rng.uniform(0.10, 0.18)))
    top = rng.random() < 0.4
    dark = rng.random() < 0.5
    fill, ink = ((20, 20, 20), (240, 240, 240)) if dark else ((250, 250, 245), (10, 10, 10))
    out = ImageOps.expand(im.convert("RGB"), border=(0, band, 0, 0) if top else (0, 0, 0, band), fill=fill)
    y = (0 if top else im.height) + band // 5
    ImageDraw.Draw(out).text((max(2, im.width // 30), y), rng.choice(_TEXTS), fill=ink, font=_font(band * 3 // 5))
    return out, f"caption {'top' if top else 'bottom'} {band}px"


def _small_rotation(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    deg = rng.uniform(2.0, 5.0) * rng.choice((-1, 1))
    return im.convert("RGB").rotate(deg, resample=Image.BICUBIC, expand=False), f"rotate {deg:+.1f}"


RANDOM_EDITS: dict[str, Edit] = {
    "crop": _random_crop, "jpeg": _random_jpeg, "downscale": _random_downscale, "gamma": _random_gamma,
    "colour": _random_colour_cast, "grey": _grey, "mirror": _mirror, "turn": _turn, "border": _random_border,
    "caption": _random_caption, "rotate": _small_rotation,
}
# Edits that combine into one copy (two of them): no turn, whose combination with a mirror no
# matching of variants could undo, and no small rotation, already the hardest alone.
COMBINABLE = ("crop", "jpeg", "downscale", "gamma", "colour", "grey", "mirror", "border", "caption")


def random_edits(im: Image.Image, rng: random.Random, count: int = 6) -> list[tuple[str, Image.Image, str]]:
    """*count* edited copies of *im* (5 to 7 recommended): count - 1 different single edits and one
    combination of two. Returns (kind, image, what was done); kind is the edit's name or "combo"."""
    im = im.convert("RGB")
    singles = rng.sample(list(RANDOM_EDITS), min(count - 1, len(RANDOM_EDITS)))
    out = []
    for name in singles:
        edited, what = RANDOM_EDITS[name](im, rng)
        out.append((name, edited, what))
    if count > len(singles):
        a, b = rng.sample(COMBINABLE, 2)
        first, w1 = RANDOM_EDITS[a](im, rng)
        second, w2 = RANDOM_EDITS[b](first.convert("RGB"), rng)
        out.append(("combo", second, f"{w1} + {w2}"))
    return out


# -- writing a set ------------------------------------------------------------------------------
@dataclass
class SetWriter:
    """A labelled set being written: photos under *out*, labels.csv beside them.

    labels.csv has the columns path,group (what `simviewer eval` reads) and, with *detail*, kind
    (original, edit:NAME, given:KIND, distractor), original (the photo an edit or a given copy was
    made from) and note.
    """

    out: Path
    detail: bool = True
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)

    def copy(self, src: Path, name: str, group: str, kind: str, original: str = "", note: str = "") -> str:
        """The file as it is, bytes and format unchanged."""
        shutil.copyfile(src, self.out / name)
        self.rows.append((name, group, kind, original, note))
        return name

    def save(self, im: Image.Image, name: str, group: str, kind: str, original: str = "", note: str = "",
             quality: int = 95) -> str:
        im = im if im.mode in ("RGB", "L") else im.convert("RGB")
        im.save(self.out / name, quality=quality)
        self.rows.append((name, group, kind, original, note))
        return name

    def write_labels(self) -> Path:
        path = self.out / "labels.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            if self.detail:
                w.writerow(("path", "group", "kind", "original", "note"))
                w.writerows(self.rows)
            else:
                w.writerow(("path", "group"))
                w.writerows(r[:2] for r in self.rows)
        return path

    def counts(self) -> tuple[int, int, int]:
        """(photos, duplicate groups of two or more, photos alone in their group)."""
        sizes: dict[str, int] = {}
        for r in self.rows:
            sizes[r[1]] = sizes.get(r[1], 0) + 1
        return len(self.rows), sum(1 for n in sizes.values() if n > 1), sum(1 for n in sizes.values() if n == 1)


def read_ground_truth(folder: Path) -> list[dict[str, str]]:
    with open(folder / "ground_truth.csv", newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh) if r.get("path")]


def by_group(rows: Iterable[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    return groups


def spread(items: Sequence, n: int | None) -> list:
    """*n* of *items* evenly spread over the list (all of them when n is None or larger)."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    return [items[math.floor(i * len(items) / n)] for i in range(n)]


def _add_edited(w: SetWriter, src: Path, group: str, seed: int, edits: int) -> str:
    """The original (copied as it is) and *edits* random edits of it, all in *group*; returns the
    original's name in the set."""
    original = w.copy(src, src.name, group, "original")
    with Image.open(src) as im:
        im.load()
        im = ImageOps.exif_transpose(im).convert("RGB")
    rng = random.Random(f"{seed}:{src.name}")
    for n, (kind, edited, what) in enumerate(random_edits(im, rng, edits), 1):
        w.save(edited, f"{src.stem}_e{n}_{kind}.jpg", group, f"edit:{kind}", original, what,
               quality=rng.randint(85, 95))
    return original


def build_ukbench(source: Path, out: Path, *, objects: int | None = None, edits: int = 6, seed: int = 0) -> SetWriter:
    """Per object: its first photo and *edits* random edits of it as one duplicate group; its other
    photos (other viewpoints) as distractors, each alone."""
    w = SetWriter(out)
    groups = by_group(read_ground_truth(source))
    for obj in spread(sorted(groups), objects):
        first, *others = sorted(r["path"] for r in groups[obj])
        _add_edited(w, source / first, f"dup_{obj}", seed, edits)
        for other in others:
            w.copy(source / other, Path(other).name, f"view_{Path(other).stem}", "distractor")
    w.write_labels()
    return w


def _nearest_angle(views: dict[int, str], used: set[int], target: int) -> int | None:
    """The free view (degrees) nearest *target* around the circle; None when all are taken."""
    free = [a for a in views if a not in used]
    if not free:
        return None
    target %= 360
    return min(free, key=lambda a: (min(abs(a - target), 360 - abs(a - target)), a))


def build_coil(source: Path, out: Path, *, objects: int | None = 8, originals: Sequence[int] = (0, 120, 240),
               offsets: Sequence[int] = (5, -10, 30), edits: int = 6, seed: int = 0) -> SetWriter:
    """Per object: the views nearest the angles *originals*, each with *edits* random edits as a
    duplicate group, and for each original the views at the angles *offsets* away from it (the
    next turntable step included: 5 degrees is the hardest non-duplicate there is) as distractors,
    each alone."""
    w = SetWriter(out)
    groups = by_group(read_ground_truth(source))
    for obj in spread(sorted(groups), objects):
        views = {int(float(r.get("angle_deg") or 0)): r["path"] for r in groups[obj]}
        used: set[int] = set()
        chosen = []
        for target in originals:
            a = _nearest_angle(views, used, target)
            if a is not None:
                used.add(a)
                chosen.append(a)
        for a in chosen:
            _add_edited(w, source / views[a], f"dup_{obj}_{a}", seed, edits)
        for a in chosen:
            for off in offsets:
                d = _nearest_angle(views, used, a + off)
                if d is None:
                    break
                used.add(d)
                w.copy(source / views[d], Path(views[d]).name, f"view_{Path(views[d]).stem}", "distractor",
                       note=f"{obj} at {d} deg, original at {a}")
    w.write_labels()
    return w


# imagededup's ground truth calls this file unrelated, but it is base_images/ukbench00120.jpg saved
# as an RGBA PNG (opaque alpha, mean pixel difference 0.7 of 255): a duplicate.
IMAGEDEDUP_CORRECTIONS = {"alpha_channel_image.png": ("ukbench_obj0030", "png_rgba")}


def _content(path: Path) -> str | None:
    """Blake2b of the file when Pillow can decode it, None when it cannot (a corrupt test file)."""
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def build_imagededup(source: Path, out: Path, *, objects: int | None = None, edits: int = 6,
                     seed: int = 0) -> SetWriter:
    """imagededup's test photos (ground_truth.csv: path,group,kind,note).

    Each distinct original (kind "original") gets *edits* random edits; the transformed copies the
    set provides (hflip, resize, rotation, grayscale, re-encoded format) join their original's group
    as they are. Files byte-identical to one already taken (the set holds several) are left out:
    exact copies are found by their hash, not by a model. So are files that do not decode. The
    unrelated images are distractors, each alone.
    """
    w = SetWriter(out)
    rows = read_ground_truth(source)
    for r in rows:
        fix = IMAGEDEDUP_CORRECTIONS.get(r["path"])
        if fix and (source / r["path"]).is_file():
            r["group"], r["kind"] = fix
            r["note"] = "labelled unrelated upstream; the same photo as the group's original"
    # Originals first (base_images before copies elsewhere), then given copies, then the rest.
    rank = {"original": 0, "unrelated": 2}
    rows.sort(key=lambda r: (rank.get(r.get("kind", ""), 1), not r["path"].startswith("base_images/"), r["path"]))
    originals = [r for r in rows if r.get("kind") == "original"]
    wanted = set(spread(sorted({r["group"] for r in originals}), objects))
    seen: set[str] = set()
    taken_original: dict[str, str] = {}
    for r in rows:
        src = source / r["path"]
        kind = r.get("kind", "")
        if kind != "unrelated" and r["group"] not in wanted:
            continue
        content = _content(src) if src.is_file() else None
        if content is None or content in seen:
            continue
        seen.add(content)
        name = r["path"].replace("/", "__")
        if kind == "original" and r["group"] not in taken_original:
            taken_original[r["group"]] = _add_edited(w, src, f"dup_{r['group']}", seed, edits)
            continue
        if kind == "unrelated":
            w.copy(src, name, f"alone_{Path(name).stem}", "distractor", note=r.get("note", ""))
        else:
            w.copy(src, name, f"dup_{r['group']}", f"given:{kind}", taken_original.get(r["group"], ""),
                   r.get("note", ""))
    w.write_labels()
    return w


BUILDERS = {"ukbench": build_ukbench, "coil": build_coil, "imagededup": build_imagededup}


# -- the command line set -----------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="folder with ground_truth.csv (path,group)")
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    groups = by_group(read_ground_truth(args.source))
    w = SetWriter(args.out, detail=False)
    for obj in sorted(groups):
        original, *others = sorted(r["path"] for r in groups[obj])
        with Image.open(args.source / original) as im:
            im = im.convert("RGB")
        stem = Path(original).stem
        w.save(im, f"{stem}.jpg", f"dup_{obj}", "original")
        for name, edit in EDITS.items():
            w.save(edit(im).convert("RGB"), f"{stem}_{name}.jpg", f"dup_{obj}", f"edit:{name}", quality=92)
        for other in others:
            with Image.open(args.source / other) as o:
                w.save(o.convert("RGB"), f"{Path(other).stem}.jpg", f"view_{Path(other).stem}", "distractor")
    w.write_labels()
    photos = len(w.rows)
    print(f"wrote {photos} photos in {args.out}: {len(groups)} duplicate groups of "
          f"{len(EDITS) + 1}, {photos - len(groups) * (len(EDITS) + 1)} distractors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
