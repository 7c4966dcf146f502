"""Duplicate-finding and retrieval quality of each model, all measured the same way in one run.

Near-duplicate sets are built from the real photos in ../shared/data (benchmarks/make_neardup_set.py,
seeded random edits that are neither the fixed edits of make_neardup_set's command line nor the
edits the calibration uses) into --out (git-ignored), never into the repository:

  ukbench     per object one original + edited copies (a duplicate group); its other views alone
  coil        COIL-100 turntable: per object 2 originals (0 and 180 degrees) + edited copies; the
              views 5, 10 and 30 degrees from each original alone (5 degrees: the hardest there is)
  imagededup  imagededup's test photos: each original + edited copies + the transformed copies the
              set provides (kept in their original's group); its unrelated images alone

For every model configuration and set, the set is indexed with Library.update into a fresh index
folder, which also calibrates the library's duplicate threshold on its own photos (core.calibration:
no labels involved). Pairs are then scored as `simviewer eval` scores them (core.evaluate,
keeper-centred groups), at the calibrated threshold and at the threshold with the best F1 (the
labels pick that one: it is the ceiling, not something a user gets). "+ match" scores a pair by its
best over the mirrored and rotated copies, as `simviewer eval --invariant` and `dedup --invariant`
do. pHash has no calibration: best threshold only.

Retrieval (recall@1, recall@5, mAP) ranks every other photo of UKBench (56 photos) and of COIL-100
(every sixth view, 30 degrees apart: 204 photos) by the exact cosine of the indexed vectors; a
photo's relevant ones are the other photos of its object.

    python benchmarks/bench_quality.py --json benchmarks/out/quality/quality.json
    python benchmarks/bench_quality.py --configs r18-none,phash --sets ukbench --quick
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # make_neardup_set

import make_neardup_set as neardup  # noqa: E402

from simviewer.core import dedup, evaluate  # noqa: E402
from simviewer.core.calibration import CALIBRATION_FILE  # noqa: E402
from simviewer.core.library import Library, final_summary  # noqa: E402
from simviewer.core.system import usable_cores  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "out" / "quality"


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    arch: str | None  # None: pHash
    weights: str = "imagenet"
    pooling: str = "gem"
    matching: tuple[bool, ...] = (True,)  # rows without / with mirrored-rotated matching
    precision: str = "auto"

    def embedder(self):
        from simviewer.core.embedder import Embedder

        return Embedder(self.arch, self.weights, pooling=self.pooling, precision=self.precision)


CONFIGS = {c.name: c for c in (
    Config("lite0-avg", "EfficientNet-Lite0 ImageNet, avg", "efficientnet_lite0", "imagenet", "avg", (False, True)),
    Config("lite0-gem", "EfficientNet-Lite0 ImageNet, GeM", "efficientnet_lite0", "imagenet", "gem", (False, True)),
    Config("lite0-gem-bf16", "EfficientNet-Lite0 ImageNet, GeM, bf16", "efficientnet_lite0", "imagenet", "gem",
           (False, True), "bf16"),
    Config("lite2-gem", "EfficientNet-Lite2 ImageNet, GeM", "efficientnet_lite2", "imagenet", "gem"),
    Config("r18-none", "ResNet-18 untrained, GeM", "resnet18", "none", "gem"),
    Config("r50-none", "ResNet-50 untrained, GeM", "resnet50", "none", "gem"),
    Config("phash", "pHash (63-bit DCT)", None),
)}


@dataclass(frozen=True)
class SetSpec:
    source: str  # folder under --data
    full: dict
    quick: dict


# Sizes: 80-odd photos a set. Indexing calibrates on every photo of a set this small (8 embeddings
# each), which is most of the time a configuration takes.
SETS = {
    "ukbench": SetSpec("ukbench_subset56", {"objects": 8}, {"objects": 3}),
    "coil": SetSpec("coil100_subset17", {"objects": 4, "originals": (0, 180)}, {"objects": 2, "originals": (0, 180)}),
    "imagededup": SetSpec("imagededup_tests", {}, {"objects": 3}),
}
RETRIEVAL = {"ukbench": "ukbench_subset56", "coil": "coil100_subset17"}


# -- set-up -------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # no /proc: the platform's own name
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    return (f"{cpu}; {os.cpu_count()} cores ({usable_cores()} usable); Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def read_detail(labels: Path) -> list[dict[str, str]]:
    with open(labels, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def retrieval_folder(source: Path, out: Path, objects: int | None, step: int) -> Path:
    """A copy of *source*'s labelled photos (every *step*-th of each object, *objects* objects
    spread over the set), with ground_truth.csv as labels.csv."""
    rows = neardup.read_ground_truth(source)
    groups = neardup.by_group(rows)
    keep = set(neardup.spread(sorted(groups), objects))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    w = neardup.SetWriter(out, detail=False)
    for g in sorted(keep):

        def order(r: dict) -> tuple:
            return (float(r.get("angle_deg") or 0), r["path"])

        for r in sorted(groups[g], key=order)[::step]:
            w.copy(source / r["path"], Path(r["path"]).name, g, "photo")
    w.write_labels()
    return out


# -- measuring ----------------------------------------------------------------------------------
@dataclass
class Indexed:
    items: list[dedup.Item]
    vectors: np.ndarray  # unit rows, float64
    groups: np.ndarray
    calibration: object  # core.calibration.Calibration | None
    seconds: dict[str, float]
    precision: str
    library: Library


def index(folder: Path, labels: dict[str, str], embedder, index_dir: Path, calibrate: bool = True,
          variants: bool = True) -> Indexed:
    """Index *folder* as the application does, calibrating it. Without *variants* (retrieval, which
    does not use them) the library does not embed mirrored/rotated copies while indexing, where it
    would."""
    library = Library(folder, index_dir)
    kwargs = {"calibrate": calibrate}
    if not variants and "variants" in inspect.signature(library.update).parameters:
        kwargs["variants"] = ()
    t = time.perf_counter()
    summary = final_summary(library.update(embedder, **kwargs))
    seconds = time.perf_counter() - t
    cal = summary.calibration
    cal_s = cal.seconds if cal is not None else 0.0
    index_ = library.load_index(embedder.fingerprint)
    try:
        with library.open_catalog() as cat:
            items = [it for it in dedup.load_items(cat, index_, library.folder) if it.key in labels]
        vectors = np.stack([index_.vector(it.key) for it in items]).astype(np.float64)
    finally:
        index_.close()
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = np.array([labels[it.key] for it in items])
    return Indexed(items, vectors, groups, cal, {"index": seconds - cal_s, "calibration": cal_s},
                   "bf16" if embedder.use_bf16 else "fp32", library)


def invariant(ix: Indexed, embedder) -> np.ndarray:
    """Similarities scored at their best over the mirrored/rotated copies (as cmd_eval --invariant)."""
    t = time.perf_counter()
    result = None
    for ev in dedup.variant_vectors(ix.library, embedder, [(it.hash, it.path) for it in ix.items]):
        if isinstance(ev, dedup.VariantVectors):
            result = ev
    ix.seconds["variants"] = time.perf_counter() - t
    sim = ix.vectors @ ix.vectors.T
    for by_hash in result.vectors.values():
        v = np.stack([by_hash.get(it.hash, ix.vectors[n]) for n, it in enumerate(ix.items)]).astype(np.float64)
        cross = v @ ix.vectors.T
        sim = np.maximum(sim, np.maximum(cross, cross.T))
    np.fill_diagonal(sim, 1.0)
    return sim


def finer_best(items: list[dedup.Item], sim: np.ndarray, groups: np.ndarray) -> evaluate.PairScores:
    """The best-F1 threshold among the distinct scores near the top (evaluate_method tries 201
    quantiles of all pairs, which in a set of a few hundred photos leaves dozens of pairs between
    two tries just where duplicates and the closest other photos meet)."""
    n = len(items)
    i, j = np.triu_indices(n, 1)
    scores = np.clip(sim[i, j], -1.0, 1.0)
    same = groups[i] == groups[j]
    truth = {(a, b) for a, b, s in zip(i.tolist(), j.tolist(), same.tolist()) if s}
    if not truth:
        return evaluate.PairScores(1.0, 1.0, 1.0, 0.0)
    top = np.sort(scores)[::-1][: 3 * len(truth)]
    candidates = np.unique(top)
    if len(candidates) > 600:
        candidates = candidates[np.linspace(0, len(candidates) - 1, 600).round().astype(int)]
    nb = dedup.Neighbours(items, i, j, scores, float(candidates.min()))
    index_of = {it.key: k for k, it in enumerate(items)}
    return max((evaluate.pair_scores(dedup.group(nb, dedup.GroupingOptions(threshold=float(t))), truth, index_of,
                                     float(t)) for t in candidates), key=lambda p: (p.f1, p.threshold))


def quantiles(x: Sequence[float], qs=(0.0, 0.05, 0.5, 0.95, 1.0)) -> list[float] | None:
    return [round(float(v), 4) for v in np.quantile(np.asarray(x, np.float64), qs)] if len(x) else None


def diagnose(items: list[dedup.Item], sim: np.ndarray, groups: np.ndarray, detail: list[dict[str, str]],
             threshold: float | None) -> dict:
    """Copy-vs-original scores by edit, and the closest pairs that are not duplicates."""
    at = {it.key: k for k, it in enumerate(items)}
    by_kind: dict[str, list[float]] = {}
    for r in detail:
        if r.get("original") and r["path"] in at and r["original"] in at:
            kind = r["kind"].split(":", 1)[-1]
            by_kind.setdefault(kind, []).append(float(sim[at[r["path"]], at[r["original"]]]))
    n = len(items)
    i, j = np.triu_indices(n, 1)
    s = sim[i, j]
    other = groups[i] != groups[j]
    worst = np.argsort(-np.where(other, s, -np.inf))[:3]
    out = {
        "copies": {k: {"n": len(v), "min": round(min(v), 4), "median": round(float(np.median(v)), 4),
                       "found": None if threshold is None else int(sum(x >= threshold for x in v))}
                   for k, v in sorted(by_kind.items())},
        "duplicate_pairs": quantiles(s[~other]),
        "other_pairs": quantiles(s[other], (0.5, 0.99, 0.999, 1.0)),
        "closest_others": [(items[i[w]].key, items[j[w]].key, round(float(s[w]), 4)) for w in worst if other[w]],
    }
    if threshold is not None:
        out["duplicate_pairs_below"] = int((s[~other] < threshold).sum())
        out["other_pairs_above"] = int((s[other] >= threshold).sum())
    return out


def calibration_facts(cal) -> dict | None:
    if cal is None:
        return None
    return {"threshold": round(cal.threshold, 6), "separation": round(cal.separation, 4), "reliable": cal.reliable,
            "photos": cal.photos, "k": cal.k, "tpr": round(cal.true_positive_rate, 4),
            "fpr": round(cal.false_positive_rate, 4), "positives": quantiles(cal.positives),
            "negatives": quantiles(cal.negatives), "seconds": round(cal.seconds, 2)}


def scores_dict(p: evaluate.PairScores | None) -> dict | None:
    if p is None:
        return None
    return {"threshold": round(p.threshold, 6), "precision": round(p.precision, 4), "recall": round(p.recall, 4),
            "f1": round(p.f1, 4)}


def score_rows(name: str, cfg: Config, matching: bool, ix_items, sim, groups, cal, detail) -> dict:
    threshold = cal.threshold if cal is not None else None
    report = evaluate.evaluate_method(name, ix_items, sim, groups, threshold if threshold is not None else 0.99)
    best = max((report.best, finer_best(ix_items, sim, groups)), key=lambda p: (p.f1, p.threshold))
    at_cal = report.at_threshold if threshold is not None else None
    if at_cal is not None and at_cal.f1 > best.f1:
        best = at_cal
    return {
        "config": cfg.name, "method": name, "matching": matching,
        "calibrated": scores_dict(at_cal), "best": scores_dict(best),
        "delta_f1": None if at_cal is None else round(best.f1 - at_cal.f1, 4),
        "retrieval": report.to_dict()["retrieval"],
        "diagnosis": diagnose(ix_items, sim, groups, detail, threshold),
    }


# -- printing -----------------------------------------------------------------------------------
def print_set(name: str, facts: dict, rows: list[dict], calibrations: dict) -> None:
    print(f"\n== {name}: {facts['photos']} photos, {facts['dup_groups']} duplicate groups, "
          f"{facts['alone']} photos alone, {facts['duplicate_pairs']} duplicate pairs  ({facts['folder']})")
    print(f"  {'method':44s} {'calibrated':>10s}  {'P':>4s} {'R':>4s} {'F1':>4s} | {'best':>8s}  {'P':>4s} "
          f"{'R':>4s} {'F1':>4s} | {'ΔF1':>5s} | calibration")
    for r in rows:
        c, b = r["calibrated"], r["best"]
        cal = calibrations.get(r["config"])
        left = (f"{c['threshold']:10.4f}  {c['precision']:4.2f} {c['recall']:4.2f} {c['f1']:4.2f}" if c
                else f"{'n/a':>10s}  {'':4s} {'':4s} {'':4s}")
        delta = f"{r['delta_f1']:+5.2f}" if r["delta_f1"] is not None else f"{'':5s}"
        how = (f"separation {cal['separation']:.2f}, {'reliable' if cal['reliable'] else 'NOT reliable'}"
               if cal else ("none" if r["config"] != "phash" else ""))
        print(f"  {r['method']:44s} {left} | {b['threshold']:8.4f}  {b['precision']:4.2f} {b['recall']:4.2f} "
              f"{b['f1']:4.2f} | {delta} | {how}")
    # Which edits the calibrated threshold lets through, and what the calibration saw.
    print("  copies at or above the calibrated threshold, by edit (found/n):")
    for r in rows:
        copies = r["diagnosis"]["copies"]
        if r["calibrated"] is None or not copies:
            continue
        missed = ", ".join(f"{k} {v['found']}/{v['n']}" for k, v in copies.items() if v["found"] < v["n"])
        print(f"    {r['method']:44s} {missed or 'all'}")
    print("  calibration positives (edit vs original) / negatives (k-th neighbour): 5% / 50% / 95%; "
          "this set's duplicate pairs 5%, other pairs 99.9% / max:")
    shown = set()
    for r in rows:
        cal = calibrations.get(r["config"])
        d = r["diagnosis"]
        if cal is None or r["config"] in shown or d["duplicate_pairs"] is None or d["other_pairs"] is None:
            continue
        shown.add(r["config"])
        p, n = cal["positives"], cal["negatives"]
        print(f"    {CONFIGS[r['config']].label:44s} pos {p[1]:.4f} {p[2]:.4f} {p[3]:.4f}  neg {n[1]:.4f} {n[2]:.4f} "
              f"{n[3]:.4f}  TPR {cal['tpr']:.2f} FPR {cal['fpr']:.2f} | set dup {d['duplicate_pairs'][1]:.4f}, "
              f"others {d['other_pairs'][2]:.4f} / {d['other_pairs'][3]:.4f}")


def print_retrieval(results: dict, sets: dict) -> None:
    names = list(sets)
    print("\n== retrieval: exact cosine of the indexed vectors; relevant = the other photos of the object")
    head = "".join(f"{n + ' (' + str(sets[n]['photos']) + ' photos, ' + str(sets[n]['groups']) + ' objects)':>34s}"
                   for n in names)
    print(f"  {'method':44s}{head}")
    print(f"  {'':44s}" + "".join(f"{'R@1':>22s} {'R@5':>5s} {'mAP':>5s}" for _ in names))
    for label, per in results.items():
        cells = "".join(f"{per[n]['recall@1']:22.3f} {per[n]['recall@5']:5.3f} {per[n]['mAP']:5.3f}" if n in per
                        else f"{'-':>34s}" for n in names)
        print(f"  {label:44s}{cells}")


def print_timing(timing: dict) -> None:
    print("\n== time per configuration (s): index = decode + embed (+ mirrored/rotated copies where the "
          "library embeds them while indexing); copies = what variant_vectors still had to embed")
    print(f"  {'configuration':36s} {'precision':>9s} {'index':>7s} {'calib':>7s} {'copies':>7s} "
          f"{'scoring':>8s} {'retrieval':>9s} {'total':>7s} {'cpu':>7s}")
    for name, t in timing.items():
        total = sum(t.get(k, 0.0) for k in ("index", "calibration", "variants", "scoring", "retrieval"))
        print(f"  {CONFIGS[name].label:36s} {t.get('precision', ''):>9s} {t.get('index', 0):7.1f} "
              f"{t.get('calibration', 0):7.1f} {t.get('variants', 0):7.1f} {t.get('scoring', 0):8.1f} "
              f"{t.get('retrieval', 0):9.1f} {total:7.1f} {t.get('cpu', 0):7.1f}")


# -- main ---------------------------------------------------------------------------------------
def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad[0]!r}; choose from {', '.join(allowed)}")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help=f"folder with the source photo sets (default {DATA})")
    ap.add_argument("--out", type=Path, default=OUT, help="where the sets are written (default %(default)s)")
    ap.add_argument("--sets", default=",".join(SETS), help="near-duplicate sets (default %(default)s)")
    ap.add_argument("--retrieval", default=",".join(RETRIEVAL), help="retrieval sets ('' for none)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="model configurations (default %(default)s)")
    ap.add_argument("--edits", type=int, default=6, help="edited copies per original (default %(default)s)")
    ap.add_argument("--coil-step", type=int, default=6,
                    help="every n-th COIL view for retrieval (default %(default)s: 12 views an object, 30 degrees "
                         "apart; views 5 or 10 degrees apart find each other whatever the model)")
    ap.add_argument("--quick", action="store_true", help="a few objects per set (a smoke test, not figures)")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    sets = parse_list(args.sets, list(SETS), "set")
    retrieval_sets = parse_list(args.retrieval, list(RETRIEVAL), "retrieval set")
    configs = [CONFIGS[n] for n in parse_list(args.configs, list(CONFIGS), "configuration")]

    print("command: python benchmarks/bench_quality.py " + shlex.join(argv))
    print(f"machine: {machine()}")
    print(f"data: {args.data}   sets written to: {args.out}   load average at start: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    report: dict = {"command": ["benchmarks/bench_quality.py", *argv], "machine": machine(), "quick": args.quick,
                    "load_average_start": os.getloadavg(), "sets": {}, "retrieval": {}, "timing": {}, "unavailable": {}}
    embedders: dict[str, object] = {}
    timing: dict[str, dict] = {}

    def embedder_for(cfg: Config):
        if cfg.name not in embedders:
            try:
                embedders[cfg.name] = cfg.embedder()
            except Exception as exc:  # a model that cannot be built here: say so, measure the rest
                embedders[cfg.name] = None
                report["unavailable"][cfg.name] = str(exc)
                print(f"  {cfg.label}: not available ({exc})", file=sys.stderr)
        return embedders[cfg.name]

    def networks(configs):
        """(configuration, embedder) of every network configuration that can be built here."""
        for cfg in configs:
            if cfg.arch is not None and (embedder := embedder_for(cfg)) is not None:
                yield cfg, embedder

    cal_out = args.out / "calibration"
    cal_out.mkdir(parents=True, exist_ok=True)
    for set_name in sets:
        spec = SETS[set_name]
        folder = args.out / set_name
        if folder.exists():
            shutil.rmtree(folder)
        builder = neardup.BUILDERS[set_name]
        w = builder(args.data / spec.source, folder, edits=args.edits, **(spec.quick if args.quick else spec.full))
        labels = evaluate.read_labels(folder / "labels.csv")
        detail = read_detail(folder / "labels.csv")
        photos, dup_groups, alone = w.counts()
        sizes = np.unique(list(labels.values()), return_counts=True)[1]
        facts = {"folder": str(folder), "photos": photos, "dup_groups": dup_groups, "alone": alone,
                 "duplicate_pairs": int(sum(c * (c - 1) // 2 for c in sizes))}
        rows: list[dict] = []
        calibrations: dict[str, dict] = {}
        items_for_phash = None
        print(f"[{set_name}] {photos} photos", file=sys.stderr, flush=True)
        for cfg, embedder in networks(configs):
            t = timing.setdefault(cfg.name, {})
            c0 = time.process_time()
            with tempfile.TemporaryDirectory(prefix="simviewer-quality-") as tmp:
                ix = index(folder, labels, embedder, Path(tmp) / "index", calibrate=True)
                if (Path(tmp) / "index" / CALIBRATION_FILE).is_file():
                    shutil.copyfile(Path(tmp) / "index" / CALIBRATION_FILE, cal_out / f"{set_name}-{cfg.name}.json")
                calibrations[cfg.name] = calibration_facts(ix.calibration)
                items_for_phash = items_for_phash or ix.items
                for matching in cfg.matching:
                    sim = invariant(ix, embedder) if matching else ix.vectors @ ix.vectors.T
                    s0 = time.perf_counter()
                    name = cfg.label + (" + match" if matching else "")
                    rows.append(score_rows(name, cfg, matching, ix.items, sim, ix.groups, ix.calibration, detail))
                    ix.seconds["scoring"] = ix.seconds.get("scoring", 0.0) + time.perf_counter() - s0
                ix.library = None  # the index folder goes with the temporary directory
            ix.seconds["cpu"] = time.process_time() - c0
            for k, v in ix.seconds.items():
                t[k] = t.get(k, 0.0) + v
            t["precision"] = "bf16" if embedder.use_bf16 else "fp32"
            t.setdefault("per_set", {})[set_name] = {k: round(v, 2) for k, v in ix.seconds.items()}
            print(f"[{set_name}] {cfg.name}: {sum(v for k, v in ix.seconds.items() if k != 'cpu'):.1f} s",
                  file=sys.stderr, flush=True)
        if any(c.arch is None for c in configs):
            if items_for_phash is None:  # no network ran: the items' facts straight from the files
                items_for_phash = file_items(folder, labels)
            s0 = time.perf_counter()
            groups = np.array([labels[it.key] for it in items_for_phash])
            sim = evaluate.phash_similarity([it.path for it in items_for_phash])
            rows.append(score_rows(CONFIGS["phash"].label, CONFIGS["phash"], False, items_for_phash, sim, groups, None,
                                   detail))
            t = timing.setdefault("phash", {})
            t["scoring"] = t.get("scoring", 0.0) + time.perf_counter() - s0
        print_set(set_name, facts, rows, calibrations)
        report["sets"][set_name] = {**facts, "calibrations": calibrations, "rows": rows}

    retrieval: dict[str, dict] = {}
    retrieval_facts: dict[str, dict] = {}
    for set_name in retrieval_sets:
        source = args.data / RETRIEVAL[set_name]
        objects = 3 if args.quick else None
        step = max(args.coil_step, 6 if args.quick else 1) if set_name == "coil" else 1
        folder = retrieval_folder(source, args.out / f"retrieval-{set_name}", objects, step)
        labels = evaluate.read_labels(folder / "labels.csv")
        retrieval_facts[set_name] = {"folder": str(folder), "photos": len(labels), "groups": len(set(labels.values()))}
        print(f"[retrieval {set_name}] {len(labels)} photos", file=sys.stderr, flush=True)
        items_for_phash = None
        for cfg, embedder in networks(configs):
            s0, c0 = time.perf_counter(), time.process_time()
            with tempfile.TemporaryDirectory(prefix="simviewer-quality-") as tmp:
                ix = index(folder, labels, embedder, Path(tmp) / "index", calibrate=False, variants=False)
                r = evaluate.retrieval(ix.vectors @ ix.vectors.T, ix.groups)
            items_for_phash = items_for_phash or ix.items
            retrieval.setdefault(cfg.label, {})[set_name] = {
                "recall@1": round(r.recall_at_1, 4), "recall@5": round(r.recall_at_5, 4), "mAP": round(r.mean_ap, 4)}
            t = timing.setdefault(cfg.name, {})
            t["retrieval"] = t.get("retrieval", 0.0) + time.perf_counter() - s0
            t["precision"] = "bf16" if embedder.use_bf16 else "fp32"
            t["cpu"] = t.get("cpu", 0.0) + time.process_time() - c0
        if any(c.arch is None for c in configs):
            s0 = time.perf_counter()
            items = items_for_phash or file_items(folder, labels)
            r = evaluate.retrieval(evaluate.phash_similarity([it.path for it in items]),
                                   np.array([labels[it.key] for it in items]))
            retrieval.setdefault(CONFIGS["phash"].label, {})[set_name] = {
                "recall@1": round(r.recall_at_1, 4), "recall@5": round(r.recall_at_5, 4), "mAP": round(r.mean_ap, 4)}
            t = timing.setdefault("phash", {})
            t["retrieval"] = t.get("retrieval", 0.0) + time.perf_counter() - s0
    if retrieval:
        print_retrieval(retrieval, retrieval_facts)
        report["retrieval"] = {"sets": retrieval_facts, "methods": retrieval}
    print_timing(timing)
    print(f"  load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"(other processes on the machine stretch wall times; cpu = this process's CPU seconds)")
    report["timing"] = {k: {kk: (round(vv, 2) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                        for k, v in timing.items()}
    if report["unavailable"]:
        print("\nnot measured: " + "; ".join(f"{k}: {v}" for k, v in report["unavailable"].items()))
    report["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def file_items(folder: Path, labels: dict[str, str]) -> list[dedup.Item]:
    """Items for a set no network indexed (pHash alone): facts from the files, no catalog."""
    from PIL import Image

    items = []
    for key in sorted(labels):
        p = folder / key
        try:
            with Image.open(p) as im:
                w, h = im.size
        except OSError:
            continue
        st = p.stat()
        items.append(dedup.Item(key, p, f"file:{key}", st.st_size, st.st_mtime_ns, w, h, None))
    return items


if __name__ == "__main__":
    sys.exit(main())
