"""What fine-tuning buys, measured on real photos, and what an epoch costs.

(a) Supervised, COIL-100 subset (17 objects x 72 turntable views): each object is a class. Every
    other view of each object is held out (the held-out views sit 10 degrees apart, between views
    trained on); retrieval of the same object among the held-out views, before and after training.
    Harder: train on each object's views 0-175 degrees only and test on the 180-355 half, which
    the network never saw ("unseen").
(b) Self-supervised, the library itself: `simviewer train` on the 56 UKBench photos without any
    label (what a user does with their own folder), then `simviewer eval` on the near-duplicate set
    that benchmarks/make_neardup_set.py builds from those photos (each object's first photo and
    eight edited copies; the object's other views are distractors): dedup F1 at the best threshold
    and recall@1, before and after, beside pHash.
(c) Seconds per training epoch for ResNet-18 and ResNet-50 (bf16 and fp32 for ResNet-18).

Every run starts from an untrained network (`--weights none`): ImageNet weights cannot be
downloaded on the machines these figures come from.

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --quick --coil DIR --ukbench DIR     # a smoke run of a few seconds

--coil and --ukbench folders hold ground_truth.csv (path,group).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # make_neardup_set

import make_neardup_set  # noqa: E402

from simviewer import cli  # noqa: E402
from simviewer.core import evaluate  # noqa: E402
from simviewer.core import training as tr  # noqa: E402
from simviewer.core.embedder import CHECKPOINT_FORMAT, Embedder  # noqa: E402


def read_truth(folder: Path) -> list[dict]:
    with open(folder / "ground_truth.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def halves(source: Path) -> tuple[list[dict], list[dict]]:
    """Each group's photos in name order, split in two: COIL's views 0-175 degrees and 180-355."""
    by_group: dict[str, list[dict]] = {}
    for row in read_truth(source):
        by_group.setdefault(row["group"], []).append(row)
    first, second = [], []
    for rows in by_group.values():
        rows.sort(key=lambda r: tr.natural_key(r["path"]))
        first += rows[:len(rows) // 2]
        second += rows[len(rows) // 2:]
    return first, second


def class_folders(source: Path, dest: Path, rows: list[dict] | None = None) -> Path:
    """One sub-folder per group, of symbolic links to the photos: the layout `simviewer train` reads."""
    for row in read_truth(source) if rows is None else rows:
        link = dest / row["group"] / Path(row["path"]).name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((source / row["path"]).resolve())
    return dest


def run_training(config: tr.TrainConfig, label: str) -> tuple[tr.DatasetReady, tr.TrainingDone]:
    ready = None
    done = None
    t0 = time.perf_counter()
    for ev in tr.train(config):
        if isinstance(ev, tr.DatasetReady):
            ready = ev
            print(f"  [{label}] {ev.mode}: {ev.n_train} photos to train on, {ev.n_val} held out, "
                  f"{ev.steps_per_epoch} steps per epoch, {ev.device} {ev.precision}, {ev.threads} threads", flush=True)
        elif isinstance(ev, tr.BeforeTraining):
            print(f"  [{label}] before: {fmt(ev.metrics)}", flush=True)
        elif isinstance(ev, tr.EpochEnd):
            print(f"  [{label}] epoch {ev.epoch}/{ev.last_epoch}: loss {ev.train_loss:.3f}  {fmt(ev.metrics)}  "
                  f"lr {ev.lr:.2g}  {ev.seconds:.1f} s{'  *' if ev.improved else ''}", flush=True)
        elif isinstance(ev, tr.TrainingDone):
            done = ev
    print(f"  [{label}] {done.summary()}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return ready, done


def fmt(m: dict) -> str:
    return f"R@1 {m['recall@1']:.3f}  R@5 {m['recall@5']:.3f}  mAP {m['mAP']:.3f}"


def trained(done, start: str) -> tuple[str, str]:
    """(weights, what they are) of a run's result: its best checkpoint, or the starting weights when
    no epoch beat them (then nothing was saved)."""
    if done.best_path is None:
        return start, "no epoch beat the start"
    return str(done.best_path), f"epoch {done.best_epoch}"


def embedder_retrieval(arch: str, weights: str, paths: list[str], groups: list[str]) -> dict:
    """Retrieval through the product's path: files decoded and preprocessed by the Embedder."""
    e = Embedder(arch, weights, precision="fp32")
    v = e.embed_paths(paths).astype(np.float64)
    r = evaluate.retrieval(v @ v.T, np.asarray(groups))
    return {"recall@1": r.recall_at_1, "recall@5": r.recall_at_5, "mAP": r.mean_ap}


def untrained_checkpoint(arch: str, image_size: int, path: Path) -> Path:
    """The untrained network at the training input size, as a checkpoint: 'before' at the same size."""
    e = Embedder(arch, "none").load()
    resize = max(image_size, round(image_size * tr.RESIZE_RATIO))
    torch.save({"format": CHECKPOINT_FORMAT, "version": tr.CHECKPOINT_VERSION, "arch": arch,
                "model": {k: v.contiguous() for k, v in e.model.state_dict().items()},
                "preprocess": {"resize": resize, "crop": image_size, "mean": list(e.preprocess.mean),
                               "std": list(e.preprocess.std)}}, path)
    return path


def simviewer_eval(folder: Path, labels: Path, arch: str, weights: str, index_dir: Path) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["eval", str(folder), "--labels", str(labels), "--model", arch, "--weights", weights,
                       "--json", "--index-dir", str(index_dir), "--precision", "fp32"])
    if rc != 0:
        raise SystemExit(f"simviewer eval failed ({rc})")
    return {m["method"]: m for m in json.loads(out.getvalue())["methods"]}


def part_supervised(args, out: Path, rows: list) -> None:
    print(f"(a) supervised: {args.coil}", flush=True)
    data = class_folders(args.coil, out / "coil_classes")
    ckpt = out / "coil-resnet18-supervised.pt"
    cfg = tr.TrainConfig(str(data), mode="supervised", arch="resnet18", weights="none", image_size=args.coil_size,
                         batch_size=32, lr=args.sup_lr, epochs=args.sup_epochs, threads=args.threads,
                         val_fraction=0.5, patience=0, seed=0, out=str(ckpt), min_steps=args.min_steps)
    ready, done = run_training(cfg, "COIL")
    groups = [Path(p).parent.name for p in ready.val_paths]
    paths = [os.fspath(p) for p in ready.val_paths]
    weights, which = trained(done, "none")
    through = embedder_retrieval("resnet18", weights, paths, groups)
    default = embedder_retrieval("resnet18", "none", paths, groups)
    rows.append(("COIL, held-out views", "untrained, 224 px (the default)", fmt(default), "", ""))
    rows.append(("COIL, held-out views", f"untrained, {args.coil_size} px", fmt(done.before), "", ""))
    rows.append(("COIL, held-out views", f"supervised, {which}", fmt(done.best or done.before),
                 f"{np.mean(done.seconds_per_epoch):.1f}", f"{done.seconds:.0f}"))
    rows.append(("COIL, held-out views", "same checkpoint through the Embedder", fmt(through), "", ""))


def part_unseen(args, out: Path, rows: list) -> None:
    print(f"(a2) supervised, unseen half: train on the first half of each object's views in {args.coil}, "
          "test on the other half", flush=True)
    first, second = halves(args.coil)
    data = class_folders(args.coil, out / "coil_first_half", first)
    ckpt = out / "coil-half-resnet18-supervised.pt"
    cfg = tr.TrainConfig(str(data), mode="supervised", arch="resnet18", weights="none", image_size=args.coil_size,
                         batch_size=32, lr=args.sup_lr, epochs=args.sup_epochs, threads=args.threads,
                         val_fraction=0.3, patience=0, seed=0, out=str(ckpt), min_steps=args.min_steps)
    _, done = run_training(cfg, "COIL first half")
    paths = [os.fspath(args.coil / r["path"]) for r in second]
    groups = [r["group"] for r in second]
    before = untrained_checkpoint("resnet18", args.coil_size, out / "untrained-coil-resnet18.pt")
    name = "COIL, unseen half of the views"
    rows.append((name, "untrained, 224 px (the default)", fmt(embedder_retrieval("resnet18", "none", paths, groups)),
                 "", ""))
    rows.append((name, f"untrained, {args.coil_size} px", fmt(embedder_retrieval("resnet18", str(before), paths,
                                                                                  groups)), "", ""))
    weights, which = trained(done, "none")
    rows.append((name, f"supervised on the first half, {which}",
                 fmt(embedder_retrieval("resnet18", weights, paths, groups)),
                 f"{np.mean(done.seconds_per_epoch):.1f}", f"{done.seconds:.0f}"))


def part_selfsup(args, out: Path, rows: list) -> None:
    print(f"(b) self-supervised: train on {args.ukbench} (no labels), evaluate on its near-duplicate set",
          flush=True)
    neardup = out / "neardup"
    if not (neardup / "labels.csv").is_file():
        with contextlib.redirect_stdout(io.StringIO()):
            make_neardup_set.main([str(args.ukbench), str(neardup)])
    ckpt = out / "ukbench-resnet18-selfsup.pt"
    cfg = tr.TrainConfig(str(args.ukbench), mode="selfsup", arch="resnet18", weights="none",
                         image_size=args.selfsup_size, batch_size=args.selfsup_batch, lr=args.selfsup_lr,
                         epochs=args.selfsup_epochs, threads=args.threads, patience=0, seed=0, out=str(ckpt),
                         min_steps=args.min_steps)
    _, done = run_training(cfg, "UKBench library")
    before = untrained_checkpoint("resnet18", args.selfsup_size, out / "untrained-resnet18.pt")
    weights, which = trained(done, str(before))
    labels = neardup / "labels.csv"
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            ("untrained, 224 px (the default)", simviewer_eval(neardup, labels, "resnet18", "none", Path(tmp) / "a")),
            (f"untrained, {args.selfsup_size} px", simviewer_eval(neardup, labels, "resnet18", str(before),
                                                                  Path(tmp) / "b")),
            (f"self-supervised, {which}", simviewer_eval(neardup, labels, "resnet18", weights, Path(tmp) / "c")),
        ]
    for name, methods in results:
        model = next(m for k, m in methods.items() if k != "pHash")
        rows.append(("near-duplicate set", name, dedup_text(model), "", ""))
    rows.append(("near-duplicate set", "pHash", dedup_text(results[0][1]["pHash"]), "", ""))
    rows.append(("near-duplicate set", "(training on the library)", f"held-out edited copies: before "
                 f"{done.before['mAP']:.3f} mAP, after {done.best['mAP']:.3f}" if done.best else "no epoch finished",
                 f"{np.mean(done.seconds_per_epoch):.1f}" if done.seconds_per_epoch else "",
                 f"{done.seconds:.0f}"))


def dedup_text(m: dict) -> str:
    b, r = m["best"], m["retrieval"]
    return (f"F1 {b['f1']:.3f} (P {b['precision']:.2f} R {b['recall']:.2f} at {b['threshold']:.4f})  "
            f"R@1 {r['recall@1']:.3f}")


def part_speed(args, out: Path, rows: list) -> None:
    print("(c) seconds per epoch", flush=True)
    data = class_folders(args.coil, out / "coil_classes")
    runs = [("resnet18", "bf16", False), ("resnet18", "fp32", False), ("resnet18", "bf16", True),
            ("resnet50", "bf16", False), ("resnet50", "bf16", True)]
    if args.quick:
        runs = [("resnet18", "bf16", False), ("resnet50", "bf16", False)]
    for arch, precision, freeze in runs:
        cfg = tr.TrainConfig(str(data), mode="supervised", arch=arch, weights="none", image_size=args.speed_size,
                             batch_size=32, lr=args.sup_lr, epochs=args.speed_epochs, threads=args.threads,
                             val_fraction=0.5, patience=0, seed=0, precision=precision, freeze=freeze,
                             out=str(out / f"speed-{arch}-{precision}{'-freeze' if freeze else ''}.pt"),
                             min_steps=args.min_steps)
        ready, done = run_training(cfg, f"{arch} {precision}{' freeze' if freeze else ''}")
        per_epoch = float(np.mean(done.seconds_per_epoch))
        images = ready.steps_per_epoch * ready.batch_size
        name = f"{arch} {precision}{', last stage only' if freeze else ''}"
        rows.append((f"speed, {args.speed_size} px, batch 32", name,
                     f"{images / per_epoch:.1f} images/s; after {done.epochs_run} epochs "
                     f"{fmt(done.best or done.before)}",
                     f"{per_epoch:.1f}", f"{done.seconds:.0f}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coil", type=Path, default=ROOT.parent / "shared/data/coil100_subset17")
    ap.add_argument("--ukbench", type=Path, default=ROOT.parent / "shared/data/ukbench_subset56")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/train")
    ap.add_argument("--parts", default="supervised,unseen,selfsup,speed",
                    help="comma-separated: supervised, unseen, selfsup, speed (default: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a few seconds: tiny images, one epoch")
    args = ap.parse_args(argv)
    if args.quick:
        settings = dict(coil_size=32, sup_epochs=1, sup_lr=None, selfsup_size=32, selfsup_batch=8, selfsup_lr=None,
                        selfsup_epochs=1, speed_size=32, speed_epochs=1, min_steps=1)
    else:
        settings = dict(coil_size=112, sup_epochs=15, sup_lr=None, selfsup_size=128, selfsup_batch=16,
                        selfsup_lr=None, selfsup_epochs=25, speed_size=112, speed_epochs=2, min_steps=20)
    for k, v in settings.items():
        setattr(args, k, v)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str, str]] = []
    parts = {"supervised": part_supervised, "unseen": part_unseen, "selfsup": part_selfsup, "speed": part_speed}
    t0 = time.perf_counter()
    for name in args.parts.split(","):
        if name not in parts:
            ap.error(f"unknown part {name!r}")
        parts[name](args, args.out, rows)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; every run starts untrained")
    widths = [max(len(r[i]) for r in rows + [("set", "model", "result", "s/epoch", "s total")]) for i in range(5)]
    header = ("set", "model", "result", "s/epoch", "s total")
    for r in [header] + rows:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
