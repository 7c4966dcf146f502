"""Indexing speed: a naive torchvision pipeline against simviewer's, in the same run.

naive: full-size PIL decode, torchvision Resize + CenterCrop + ToTensor + Normalize, fp32,
       one process, batches of 32.
ours:  Library.update (JPEG draft decoding, decoding threads overlapped with inference,
       channels_last, bf16 autocast where it matches fp32, batched catalog writes).

Also prints: a re-index with nothing changed, and how far bf16 vectors are from fp32 ones.

    python benchmarks/bench_index.py FOLDER --model resnet50 [--naive-limit 128]
    python benchmarks/bench_index.py --make-12mp OUT --source ../shared/data/ukbench_subset56 --count 64
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from simviewer.core.embedder import Embedder, cpu_supports_bf16
from simviewer.core.images import walk_images
from simviewer.core.library import IndexSummary, Library, final_summary


def make_12mp(out: Path, source: Path, count: int) -> None:
    """Upscale real photos to 4000x3000 and re-encode them like a camera would (q 92, 4:2:0)."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(e.path for e in walk_images(source))
    rng = np.random.default_rng(0)
    for i in range(count):
        src = files[i % len(files)]
        with Image.open(src) as im:
            big = im.convert("RGB").resize((4000, 3000), Image.BICUBIC)
        if i >= len(files):  # later rounds: mirror so the content differs from the first round
            big = big.transpose(Image.FLIP_LEFT_RIGHT)
        # Sensor-like grain, so files weigh what camera JPEGs weigh (an upscale alone compresses too well).
        grain = rng.normal(0, 4, (3000, 4000, 1)).astype(np.float32)
        big = Image.fromarray((np.asarray(big, np.float32) + grain).clip(0, 255).astype(np.uint8))
        big.save(out / f"img{i:04d}.jpg", "JPEG", quality=92, subsampling=2)
    print(f"wrote {count} 12-MP JPEGs to {out}")


def naive(files: list[str], embedder: Embedder, batch: int = 32) -> float:
    """Images per second of the textbook pipeline."""
    p = embedder.preprocess
    tf = T.Compose([T.Resize(p.resize), T.CenterCrop(p.crop), T.ToTensor(), T.Normalize(p.mean, p.std)])
    model = embedder.model
    t0 = time.perf_counter()
    for i in range(0, len(files), batch):
        x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files[i : i + batch]])
        with torch.inference_mode():
            model(x)
    return len(files) / (time.perf_counter() - t0)


def bf16_agreement(files: list[str], arch: str, weights: str) -> dict:
    e32 = Embedder(arch, weights, precision="fp32")
    e16 = Embedder(arch, weights, precision="bf16")
    a = e32.embed_paths(files)
    b = e16.embed_paths(files)
    cos = (a * b).sum(1)
    # Cosine after removing the mean vector: the part of the vector that tells images apart.
    m = a.mean(0)
    ac, bc = a - m, b - m
    ccos = (ac * bc).sum(1) / np.linalg.norm(ac, axis=1) / np.linalg.norm(bc, axis=1)
    same_top1 = float(np.mean((a @ a.T - 2 * np.eye(len(a))).argmax(1) == (b @ b.T - 2 * np.eye(len(b))).argmax(1)))
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "min_centred_cosine": float(ccos.min()), "same_top1": same_top1, "n": len(files)}


def run_ours(folder: Path, arch: str, weights: str, index_dir: Path, batch: int, workers: int) -> IndexSummary:
    return final_summary(Library(folder, index_dir).update(Embedder(arch, weights), batch_size=batch,
                                                           workers=workers))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", type=Path)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--naive-limit", type=int, default=128, help="images the naive pipeline processes")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None, help="decoders (default: as simviewer picks)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--make-12mp", type=Path, metavar="OUT")
    ap.add_argument("--source", type=Path)
    ap.add_argument("--count", type=int, default=64)
    args = ap.parse_args(argv)
    if args.make_12mp:
        make_12mp(args.make_12mp, args.source, args.count)
        return 0
    if args.folder is None:
        ap.error("FOLDER is required")

    files = sorted(e.path for e in walk_images(args.folder))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s1 = run_ours(args.folder, args.model, args.weights, Path(tmp), args.batch_size, args.workers)
        ours_wall = time.perf_counter() - t
        t = time.perf_counter()
        s2 = run_ours(args.folder, args.model, args.weights, Path(tmp), args.batch_size, args.workers)
        unchanged_wall = time.perf_counter() - t
    naive_ips = naive(files[: args.naive_limit], Embedder(args.model, args.weights, precision="fp32"))
    agreement = bf16_agreement(files[:32], args.model, args.weights) if cpu_supports_bf16() else None

    ours_ips = s1.embedded / s1.seconds if s1.seconds else 0.0
    result = {
        "folder": str(args.folder), "model": args.model, "weights": args.weights, "files": len(files),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "naive_images_per_s": round(naive_ips, 2), "naive_images": min(len(files), args.naive_limit),
        "ours_images_per_s": round(ours_ips, 2), "ours_embed_only_images_per_s": round(s1.images_per_second, 2),
        "ratio": round(ours_ips / naive_ips, 2) if naive_ips else None,
        "ours_first_run_s": round(ours_wall, 2), "reindex_unchanged_s": round(s2.seconds, 3),
        "reindex_unchanged_wall_s": round(unchanged_wall, 3), "bf16": agreement,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.folder}: {len(files)} images, {args.model} ({args.weights})")
        print(f"  naive  (full decode, fp32, 1 process): {naive_ips:7.2f} images/s over {result['naive_images']}")
        print(f"  simviewer Library.update:              {ours_ips:7.2f} images/s end to end "
              f"({s1.images_per_second:.2f} in the network alone)")
        print(f"  ratio: {result['ratio']}x")
        print(f"  re-index with nothing changed: {s2.seconds:.3f} s in update ({unchanged_wall:.3f} s with set-up)")
        if agreement:
            print(f"  bf16 vs fp32 over {agreement['n']} images: min cosine {agreement['min_cosine']:.6f}, "
                  f"min centred cosine {agreement['min_centred_cosine']:.4f}, same top-1 {agreement['same_top1']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
