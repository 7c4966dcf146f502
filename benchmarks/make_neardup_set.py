"""Build a labelled near-duplicate set from real photos, for `simviewer eval`.

For each object of a UKBench-style folder (groups of consecutive photos of one object), the first
photo is the original and gets eight edited copies (crop, JPEG, resize, mirror, rotate, border,
colour, caption band): one duplicate group. The object's other photos (other viewpoints: alike but
not duplicates) go in as distractors, each in a group of its own.

    python benchmarks/make_neardup_set.py ../shared/data/ukbench_subset56 benchmarks/out/neardup
    simviewer eval benchmarks/out/neardup --labels benchmarks/out/neardup/labels.csv --weights none
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageOps


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def caption(im: Image.Image) -> Image.Image:
    band = max(24, im.height // 8)
    out = ImageOps.expand(im, border=(0, 0, 0, band), fill="white")
    ImageDraw.Draw(out).text((10, im.height + band // 3), "Holiday 2019 - best of", fill="black")
    return out


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="folder with ground_truth.csv (path,group)")
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    with open(args.source / "ground_truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_object: dict[str, list[str]] = {}
    for r in rows:
        by_object.setdefault(r["group"], []).append(r["path"])
    args.out.mkdir(parents=True, exist_ok=True)
    labels = [("path", "group")]
    for obj, paths in sorted(by_object.items()):
        original, *others = sorted(paths)
        with Image.open(args.source / original) as im:
            im = im.convert("RGB")
        stem = Path(original).stem
        im.save(args.out / f"{stem}.jpg", quality=95)
        labels.append((f"{stem}.jpg", f"dup_{obj}"))
        for name, edit in EDITS.items():
            edit(im).convert("RGB").save(args.out / f"{stem}_{name}.jpg", quality=92)
            labels.append((f"{stem}_{name}.jpg", f"dup_{obj}"))
        for other in others:
            with Image.open(args.source / other) as o:
                o.convert("RGB").save(args.out / f"{Path(other).stem}.jpg", quality=95)
            labels.append((f"{Path(other).stem}.jpg", f"view_{Path(other).stem}"))
    with open(args.out / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(labels)
    print(f"wrote {len(labels) - 1} photos in {args.out}: {len(by_object)} duplicate groups of "
          f"{len(EDITS) + 1}, {len(labels) - 1 - len(by_object) * (len(EDITS) + 1)} distractors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
