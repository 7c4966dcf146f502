"""The duplicate threshold of one library and model, measured on the library's own photos.

A cosine that separates duplicates from different photos depends on the model (an untrained
network scores everything above 0.99, a fine-tuned one spreads scores out) and on the library (a
folder of turntable shots of one object has far closer non-duplicates than a folder of holiday
photos). So no constant can be right. Instead, for a sample of the library's photos:

- **duplicates**: each photo against edited copies of itself (crop, JPEG, resize, colour, grey,
  mirror, 90-degree turns, border, caption band: the edits that make two files duplicates), scored
  as the duplicate finder scores a pair, with the mirrored and rotated variants;
- **different photos**: each photo against its k-th nearest other photo in the library (k = 10 by
  default), so that the few real duplicates and burst shots a photo may have among its nearest
  neighbours do not count as "different". A photo with more than k look-alikes (one picture saved a
  dozen times) would still meet one of them there: when its nearest neighbours form a cluster of more
  than k that ends at the largest drop among its first 40 scores, its "different photo" is the first
  one after that drop.

The threshold is the one that separates the two score sets best (largest true-positive rate minus
false-positive rate, in the middle of the widest such gap). How reliable it is, is judged on the
plain k-th neighbours: a library whose photos sit in tight clusters of different shots (a turntable,
a long burst) is not separated by any threshold, and the calibration says so. Where the sets overlap
too much (an untrained network, say), nothing should be pre-selected.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .embedder import Embedder
from .images import VARIANTS, ImageError, load_image
from .index import AnnIndex
from .safe_files import replace_file

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
CALIBRATION_VERSION = 2  # 2: negatives past a photo's cluster of look-alikes
DEFAULT_SAMPLE = 200  # photos to edit: enough for a stable threshold, about a minute at most
DEFAULT_K = 10  # the "different photo" of each sample photo is its k-th nearest neighbour
CLUSTER_SPAN = 40  # how far down a photo's neighbours a cluster of look-alikes is looked for
EDITS_PER_PHOTO = 4
# Below this separation (true-positive rate minus false-positive rate at the threshold, the latter
# counted on the plain k-th neighbours) the model cannot tell duplicates from different photos well
# enough to pre-select anything.
MIN_SEPARATION = 0.8


class CalibrationError(Exception):
    """A library that cannot be calibrated; the message says why."""


@dataclass(frozen=True)
class CalibrationProgress:
    done: int
    total: int  # photos in the sample


@dataclass(frozen=True)
class Calibration:
    """A library's duplicate threshold for one model, with the evidence it was chosen on."""

    fingerprint: str  # the model's
    threshold: float
    separation: float  # TPR - FPR (on k-th neighbours) at the threshold: 1.0 = no overlap
    reliable: bool
    photos: int  # photos sampled
    library_size: int
    k: int
    positives: tuple[float, ...]  # edited copy vs its original
    negatives: tuple[float, ...]  # photo vs its k-th nearest other photo
    seconds: float
    created: float

    @property
    def true_positive_rate(self) -> float:
        return _rate(self.positives, self.threshold)

    @property
    def false_positive_rate(self) -> float:
        return _rate(self.negatives, self.threshold)

    @property
    def sure_level(self) -> float:
        """The score from which a pair is a *sure* duplicate: the median of the edited copies'
        scores, never below the threshold.

        Between the threshold and this level a pair may be an edited copy or a different photo of
        the same subject (another viewpoint, the next shot of a burst): with a pretrained model
        those score as high as a crop, so the score cannot tell them apart, and such members are
        shown to be checked, never pre-selected. From the median up a pair is as alike as half of
        the library's own edited copies. Without edited copies to go by, only a perfect score is
        sure."""
        if not self.positives:
            return 1.0
        return max(self.threshold, float(np.median(self.positives)))

    def summary(self) -> str:
        """One line for a status bar or a terminal."""
        if not self.reliable:
            return (f"this model cannot tell duplicates apart reliably on your photos (calibrated on "
                    f"{self.photos} of them: edited copies and different photos score alike); use the pretrained "
                    f"model or fine-tune it on your photos")
        return (f"threshold {self.threshold:.4f}, calibrated on {self.photos} of your photos: "
                f"{self.true_positive_rate:.0%} of their edited copies above it, "
                f"{self.false_positive_rate:.0%} of their nearest other photos")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["positives"] = [round(x, 6) for x in self.positives]
        d["negatives"] = [round(x, 6) for x in self.negatives]
        return {"version": CALIBRATION_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        if d.get("version") != CALIBRATION_VERSION:
            raise CalibrationError(f"calibration format {d.get('version')!r} is not {CALIBRATION_VERSION}")
        try:
            cal = cls(
                fingerprint=str(d["fingerprint"]), threshold=float(d["threshold"]),
                separation=float(d["separation"]), reliable=bool(d["reliable"]), photos=int(d["photos"]),
                library_size=int(d["library_size"]), k=int(d["k"]),
                positives=tuple(float(x) for x in d["positives"]),
                negatives=tuple(float(x) for x in d["negatives"]),
                seconds=float(d["seconds"]), created=float(d["created"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"damaged calibration: {exc}") from exc
        if not (-1.0 <= cal.threshold <= 1.0 and math.isfinite(cal.threshold)):
            raise CalibrationError(f"damaged calibration: threshold {cal.threshold}")
        return cal


def _rate(scores: Sequence[float], threshold: float) -> float:
    return float(np.mean(np.asarray(scores) >= threshold)) if len(scores) else 0.0


# -- the threshold ------------------------------------------------------------------------------
def pick_threshold(positives: Sequence[float], negatives: Sequence[float]) -> tuple[float, float]:
    """(threshold, separation): the cut that maximises TPR - FPR, placed in the gap below it.

    Every distinct score is a candidate cut ("score >= cut is a duplicate"). Of the cuts with the
    best separation the middle one is taken, and the threshold is put halfway between it and the
    next lower score, so it sits in the gap between the two sets rather than on the weakest
    duplicate. With no different photos to compare with (a library of one photo), it sits as far
    below the weakest duplicate as that one is below 1.

    Leaving out the highest k-th-neighbour scores (photos with more than k copies, whose k-th
    neighbour is a copy) was measured and rejected: it fixed one set where a photo has 12 copies
    and cost untrained networks 0.14 F1 (benchmarks/bench_quality.py). Looking past each such
    photo's own cluster (:func:`different_photo_scores`) fixes that set and leaves the others alone.
    """
    pos = np.sort(np.asarray(positives, np.float64))
    neg = np.sort(np.asarray(negatives, np.float64))
    if not len(pos):
        raise CalibrationError("no edited copies could be scored")
    if not len(neg):
        return float(max(-1.0, pos[0] - (1.0 - pos[0]))), 1.0
    cuts = np.unique(np.concatenate([pos, neg]))
    tpr = 1.0 - np.searchsorted(pos, cuts, side="left") / len(pos)
    fpr = 1.0 - np.searchsorted(neg, cuts, side="left") / len(neg)
    j = tpr - fpr
    best = float(j.max())
    on_top = np.flatnonzero(j >= best - 1e-12)
    at = int(on_top[len(on_top) // 2])
    below = cuts[at - 1] if at > 0 else cuts[at] - (1.0 - cuts[at])
    return float((below + cuts[at]) / 2), best


# -- edits --------------------------------------------------------------------------------------
def _crop(im: Image.Image, rng: random.Random) -> Image.Image:
    keep = rng.uniform(0.6, 0.9)
    w, h = round(im.width * keep), round(im.height * keep)
    x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
    return im.crop((x, y, x + w, y + h))


def _jpeg(im: Image.Image, rng: random.Random) -> Image.Image:
    from .training import jpeg_roundtrip

    return jpeg_roundtrip(im, rng.randint(15, 50))


def _resize(im: Image.Image, rng: random.Random) -> Image.Image:
    f = rng.uniform(0.25, 0.6)
    return im.resize((max(16, round(im.width * f)), max(16, round(im.height * f))), Image.BILINEAR)


def _colour(im: Image.Image, rng: random.Random) -> Image.Image:
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.6))


def _grey(im: Image.Image, rng: random.Random) -> Image.Image:
    return im.convert("L").convert("RGB")


def _mirror(im: Image.Image, rng: random.Random) -> Image.Image:
    return ImageOps.mirror(im)


def _turn(im: Image.Image, rng: random.Random) -> Image.Image:
    return im.transpose(rng.choice((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                    Image.Transpose.ROTATE_270)))


def _border(im: Image.Image, rng: random.Random) -> Image.Image:
    width = max(1, round(max(im.size) * rng.uniform(0.02, 0.08)))
    return ImageOps.expand(im, border=width, fill=rng.choice(((255, 255, 255), (0, 0, 0))))


def _caption(im: Image.Image, rng: random.Random) -> Image.Image:
    from .training import _CAPTIONS, add_caption

    band = rng.randint(max(6, im.height // 14), max(8, im.height // 8))
    return add_caption(im, rng.choice(_CAPTIONS), band, top=rng.random() < 0.3)


EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "crop": _crop, "jpeg": _jpeg, "resize": _resize, "colour": _colour, "grey": _grey,
    "mirror": _mirror, "turn": _turn, "border": _border, "caption": _caption,
}


# -- measuring ----------------------------------------------------------------------------------
def sample_keys(keys: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """*n* keys spread over the library, the same ones every time for the same library."""
    keys = sorted(keys)
    if len(keys) <= n:
        return keys
    return sorted(random.Random(seed).sample(keys, n))


def _ranked_others(index: AnnIndex, key: str, content: str, vectors: list[np.ndarray], want: int,
                   hash_of: dict[str, str]) -> list[float]:
    """The scores of the other photos nearest to *key*, highest first (a pair scores its best over
    the variants, as the finder does). Exact copies of the photo are not "other photos"."""
    best: dict[str, float] = {}
    for vec in vectors:
        for other, score in index.query_vector(vec, want):
            if other == key or hash_of.get(other) == content:
                continue
            if score > best.get(other, -2.0):
                best[other] = score
    return sorted(best.values(), reverse=True)


def past_cluster(ranked: Sequence[float], k: int, span: int = CLUSTER_SPAN) -> float:
    """The score of a photo's "different photo" among its neighbours' *ranked* scores: the k-th,
    unless the photo's nearest neighbours form a cluster of more than k (the members above the
    largest drop among the first *span*), then the first one after that drop."""
    top = np.asarray(ranked[:span], np.float64)
    kth = float(top[min(k, len(top)) - 1])
    if len(top) <= k:
        return kth
    members = int(np.argmax(top[:-1] - top[1:])) + 1
    return float(top[members]) if members >= k else kth


def different_photo_scores(index: AnnIndex, queries: Sequence[tuple[str, str, list[np.ndarray]]], k: int,
                           hash_of: dict[str, str]) -> tuple[list[float], list[float]]:
    """(k-th neighbour scores, scores past each photo's cluster of look-alikes) of the *queries*,
    one each per photo that has other photos: see :func:`past_cluster`."""
    kth, past = [], []
    for key, content, vectors in queries:
        ranked = _ranked_others(index, key, content, vectors, max(k, CLUSTER_SPAN) + 8, hash_of)
        if ranked:
            kth.append(ranked[min(k, len(ranked)) - 1])
            past.append(past_cluster(ranked, k))
    return kth, past


def _photo_views(im: Image.Image, n: int, vector: np.ndarray, content: str,
                 variant_vectors: dict[str, dict[str, np.ndarray]] | None, edits_per_photo: int,
                 rng: random.Random) -> tuple[np.ndarray | None, list[Image.Image]]:
    """(the vectors of the photo and its turned copies, or None when they must be embedded; the
    images to embed) for the *n*-th sampled photo: its edited copies, and its turned copies where
    the library has not stored them."""
    kinds = list(EDITS)
    chosen = [kinds[(n * edits_per_photo + e) % len(kinds)] for e in range(edits_per_photo)]
    edits = [EDITS[c](im, rng) for c in chosen]
    kept = [(variant_vectors or {}).get(v, {}).get(content) for v in VARIANTS]
    if all(v is not None for v in kept):
        return np.stack([vector, *kept]), edits  # the vectors the duplicate finder uses
    return None, [im] + [turn(im) for turn in VARIANTS.values()] + edits


def _score_batch(vecs: np.ndarray, owners: list[tuple[str, np.ndarray | None, int]], index: AnnIndex,
                 hashes: dict[str, str], positives: list[float],
                 queries: list[tuple[str, str, list[np.ndarray]]]) -> None:
    """Score each owner's edited copies in *vecs* (embedded in owner order) against the photo."""
    at, turned = 0, 1 + len(VARIANTS)
    for key, own, count in owners:
        if own is None:
            own = vecs[at : at + turned]
            own[0] = index.vector(key)
            at, count = at + turned, count - turned
        edits = vecs[at : at + count]
        at += count
        # A pair's score is its best over the variants of the original (as the finder scores it).
        positives.extend(float(s) for s in (edits @ own.T).max(axis=1))
        queries.append((key, hashes[key], list(own)))


def calibrate(
    index: AnnIndex,
    paths: dict[str, Path],
    hashes: dict[str, str],
    embedder: Embedder,
    *,
    sample: int = DEFAULT_SAMPLE,
    k: int = DEFAULT_K,
    edits_per_photo: int = EDITS_PER_PHOTO,
    seed: int = 0,
    batch_size: int = 32,
    should_stop: Callable[[], bool] | None = None,
    variant_vectors: dict[str, dict[str, np.ndarray]] | None = None,
) -> Iterator[CalibrationProgress | Calibration]:
    """Measure the library's threshold; yields progress, ends with the Calibration.

    *paths* maps the index's keys to their files and *hashes* to their content hashes. Photos that
    cannot be read now are left out of the sample. *variant_vectors* (kind -> content hash ->
    vector, as the library stores them) saves embedding each sampled photo and its turned copies
    again: only the edited copies are embedded then. Raises CalibrationError if stopped, or if not
    a single photo could be edited and scored.
    """
    if embedder.fingerprint != index.model_fingerprint:
        raise CalibrationError("the embedder does not match the index's model")
    t0 = time.perf_counter()
    should_stop = should_stop or (lambda: False)
    rng = random.Random(seed)
    keys = sample_keys([key for key in paths if key in hashes], sample, seed)
    positives: list[float] = []
    queries: list[tuple[str, str, list[np.ndarray]]] = []
    yield CalibrationProgress(0, len(keys))
    per_batch = max(1, batch_size // edits_per_photo)
    for start in range(0, len(keys), per_batch):
        if should_stop():
            raise CalibrationError("calibration stopped")
        images, owners = [], []
        for n, key in enumerate(keys[start : start + per_batch], start):
            try:
                im = load_image(paths[key], embedder.preprocess.min_side).image
            except ImageError as exc:
                log.info("calibration leaves out %s: %s", key, exc)
                continue
            own, views = _photo_views(im, n, index.vector(key), hashes[key], variant_vectors, edits_per_photo, rng)
            images.extend(views)
            owners.append((key, own, len(views)))
        if images:
            vecs = embedder.embed_images(images, batch_size=batch_size)
            _score_batch(vecs, owners, index, hashes, positives, queries)
        yield CalibrationProgress(min(start + per_batch, len(keys)), len(keys))
    if not positives:
        raise CalibrationError("none of the sampled photos could be read")
    nearest, negatives = different_photo_scores(index, queries, k, hashes)
    threshold, _ = pick_threshold(positives, negatives)
    # How well the threshold separates copies from the plain k-th neighbours: photos in tight
    # clusters of different shots make this low, and the library is then not "reliable".
    separation = _rate(positives, threshold) - _rate(nearest, threshold) if nearest else 1.0
    yield Calibration(
        fingerprint=index.model_fingerprint, threshold=threshold, separation=separation,
        reliable=separation >= MIN_SEPARATION, photos=len(queries), library_size=len(paths), k=k,
        positives=tuple(positives), negatives=tuple(negatives), seconds=time.perf_counter() - t0,
        created=time.time(),
    )


# -- storage ------------------------------------------------------------------------------------
def save(index_dir: str | os.PathLike, cal: Calibration) -> Path:
    """Write the calibration beside the index (atomically: a killed write leaves the old one)."""
    path = Path(index_dir) / CALIBRATION_FILE
    replace_file(path, json.dumps(cal.to_dict()).encode("utf-8"))  # a link planted there is not followed
    return path


def load(index_dir: str | os.PathLike, fingerprint: str) -> Calibration | None:
    """The library's calibration for *fingerprint*; None when there is none for that model (or the
    file is damaged: it is then measured again)."""
    path = Path(index_dir) / CALIBRATION_FILE
    try:
        cal = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, CalibrationError) as exc:
        log.warning("calibration in %s unusable (%s); it will be measured again", path, exc)
        return None
    return cal if cal.fingerprint == fingerprint else None


def needs_calibration(cal: Calibration | None, fingerprint: str, library_size: int) -> bool:
    """A library is calibrated again when its model changed or it has grown or shrunk enough that
    the sample no longer describes it (twice or half the photos it was calibrated on)."""
    if cal is None or cal.fingerprint != fingerprint:
        return True
    if cal.photos < DEFAULT_SAMPLE and library_size > cal.photos:
        return library_size >= 2 * max(cal.library_size, 1) or library_size - cal.library_size >= DEFAULT_SAMPLE // 4
    return library_size >= 2 * max(cal.library_size, 1) or 2 * library_size <= cal.library_size

