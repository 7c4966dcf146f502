"""Measure dedup and retrieval quality on a labelled folder, with a perceptual-hash baseline.

Labels: a CSV with header ``path,group`` (path relative to the folder); photos of one group are
duplicates of each other. Dedup is scored on pairs: a predicted pair is two photos in the same
group as :func:`dedup.group` builds them (keeper-centred, so exactly what a user would see).
Retrieval ranks every other labelled photo by similarity: recall@1, recall@5 (a same-group photo
in the top 1 / 5) and mAP. Both run on all pairs of the labelled photos (exact, no ANN), so the
figures describe the model, not the index.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import dedup
from .images import ImageError, load_image


class EvalError(Exception):
    """Labels or photos that cannot be evaluated; the message says why."""


@dataclass(frozen=True)
class PairScores:
    threshold: float
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Retrieval:
    recall_at_1: float
    recall_at_5: float
    mean_ap: float


@dataclass(frozen=True)
class MethodReport:
    name: str
    at_threshold: PairScores
    best: PairScores
    retrieval: Retrieval

    def to_dict(self) -> dict:
        def pairs(p: PairScores) -> dict:
            return {"threshold": round(p.threshold, 6), "precision": round(p.precision, 4),
                    "recall": round(p.recall, 4), "f1": round(p.f1, 4)}

        return {"method": self.name, "dedup": pairs(self.at_threshold), "best": pairs(self.best),
                "retrieval": {"recall@1": round(self.retrieval.recall_at_1, 4),
                              "recall@5": round(self.retrieval.recall_at_5, 4),
                              "mAP": round(self.retrieval.mean_ap, 4)}}


def read_labels(path: str | Path) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "group"} <= set(reader.fieldnames):
                raise EvalError(f"{path} needs a header with the columns path,group")
            labels = {Path(row["path"]).as_posix(): row["group"] for row in reader if row.get("path")}
    except OSError as exc:
        raise EvalError(f"cannot read labels {path}: {exc.strerror or exc}") from exc
    if not labels:
        raise EvalError(f"{path} lists no photos")
    return labels


def phash(image: Image.Image) -> np.ndarray:
    """63-bit perceptual hash: the signs of the 8x8 lowest DCT frequencies of a 32x32 grey copy
    against their median (Zauner's pHash, without the DC term)."""
    grey = np.asarray(image.convert("L").resize((32, 32), Image.LANCZOS), np.float64)
    n = np.arange(32)
    dct = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64)  # DCT-II basis, rows = frequency
    low = (dct @ grey @ dct.T)[:8, :8].ravel()[1:]  # 63 coefficients
    return low > np.median(low)


def pair_scores(groups: list[dedup.Group], truth: set[tuple[int, int]], index_of: dict[str, int],
                threshold: float) -> PairScores:
    predicted = set()
    for g in groups:
        ids = sorted(index_of[m.item.key] for m in g.members)
        predicted.update((a, b) for x, a in enumerate(ids) for b in ids[x + 1:])
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairScores(threshold, precision, recall, f1)


def retrieval(sim: np.ndarray, groups: np.ndarray) -> Retrieval:
    s = sim.astype(np.float64).copy()
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :-1]
    relevant = groups[order] == groups[:, None]
    has = relevant.any(axis=1)
    if not has.any():
        raise EvalError("no photo has another of its group: nothing to retrieve")
    relevant = relevant[has]
    hits = np.cumsum(relevant, axis=1)
    ap = (hits / np.arange(1, relevant.shape[1] + 1) * relevant).sum(1) / relevant.sum(1)
    return Retrieval(float(relevant[:, 0].mean()), float(relevant[:, :5].any(1).mean()), float(ap.mean()))


def evaluate_method(name: str, items: list[dedup.Item], sim: np.ndarray, groups: np.ndarray, threshold: float,
                    rules: tuple[str, ...] = dedup.DEFAULT_RULES) -> MethodReport:
    n = len(items)
    i, j = np.triu_indices(n, 1)
    truth = {(a, b) for a, b in zip(i.tolist(), j.tolist()) if groups[a] == groups[b]}
    index_of = {it.key: k for k, it in enumerate(items)}
    scores = np.clip(sim[i, j], -1.0, 1.0)
    floor = float(min(threshold, scores.min())) if len(scores) else threshold
    nb = dedup.Neighbours(items, i, j, scores, floor)

    def at(t: float) -> PairScores:
        return pair_scores(dedup.group(nb, dedup.GroupingOptions(threshold=t, rules=rules)), truth, index_of, t)

    # Candidate thresholds: the distinct pair scores near the top (where decisions happen).
    candidates = np.unique(np.quantile(scores, np.linspace(0.5, 1.0, 201))) if len(scores) else [threshold]
    best = max((at(float(t)) for t in candidates), key=lambda p: (p.f1, p.threshold))
    return MethodReport(name, at(threshold), best, retrieval(sim, groups))


def phash_similarity(paths: list[Path]) -> np.ndarray:
    bits = []
    for p in paths:
        try:
            bits.append(phash(load_image(p, min_side=64).image))
        except ImageError as exc:
            raise EvalError(f"{p}: {exc}") from exc
    b = np.array(bits, np.int8)
    hamming = (b[:, None, :] != b[None, :, :]).sum(-1)
    return 1.0 - hamming / b.shape[1]


def model_similarity(vectors: np.ndarray, items: list[dedup.Item],
                     variants: dict[str, dict[str, np.ndarray]] | None = None) -> np.ndarray:
    """Cosine similarity of every pair of *items* (the rows of *vectors*, normalised here).

    With *variants* (kind -> content hash -> vector of a mirrored or rotated copy, as
    :func:`dedup.variant_vectors` makes them) a pair scores the best of the two photos as they are
    and of either one's turned copy against the other: the invariant matching dedup does. A photo
    without a copy (unreadable now) keeps its own vector there: no extra match.
    """
    v = np.asarray(vectors, np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    sim = v @ v.T
    if variants is None:
        return sim
    for by_hash in variants.values():
        turned = np.stack([by_hash.get(it.hash, v[n]) for n, it in enumerate(items)]).astype(np.float64)
        cross = turned @ v.T
        sim = np.maximum(sim, np.maximum(cross, cross.T))
    np.fill_diagonal(sim, 1.0)
    return sim
