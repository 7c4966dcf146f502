"""Do the bundled EfficientNet-Lite weights see what is in a photo? ImageNet classes on real photos.

For each of Lite0/1/2: the top-5 classes of a few photos; top-1/top-5 accuracy against the hand
labels below (each photo: the ImageNet classes a person would accept), the mean top probability and
the mean log probability given to an acceptable class; milliseconds per photo at batch 1 (decode,
resize + crop, network); images/s of the network alone at batch 16: fp32, BN folded, bf16 autocast.

--compare-preprocessing scores every combination of convolution padding (TensorFlow's SAME or
PyTorch's symmetric) and input normalisation ((x - 127) / 128 or ImageNet's mean/std), since the
weights were converted from TensorFlow. Two label-free columns say which recipe the network was
trained with: "stem scale" compares the spread of the first convolution's output with its batch
norm's running variance (the input normalisation), "deep fit" does the same for the batch norms
of the last stages, whose small maps are mostly border (the padding).

    python benchmarks/bench_classify.py
    python benchmarks/bench_classify.py --compare-preprocessing --coil-every 10 --show 0

--data is the folder holding ukbench_subset56/, imagededup_tests/ and coil100_subset17/
(default: ../shared/data beside the repository).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.fx.experimental.optimization import fuse
from torchvision.models import ResNet50_Weights

from simviewer.core import efficientnet_lite
from simviewer.core.efficientnet_lite import EfficientNetLite
from simviewer.core.images import load_image

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALISATIONS = {
    "(x-127)/128": (efficientnet_lite.LITE_MEAN, efficientnet_lite.LITE_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}

# Photos looked at one by one; each with the ImageNet classes that would be a right answer.
_GROUPS: list[tuple[str, range | tuple[int, ...], tuple[str, ...]]] = [
    ("ukbench_subset56/ukbench{:05d}.jpg", range(0, 4), ("jigsaw puzzle",)),
    ("ukbench_subset56/ukbench{:05d}.jpg", range(12, 16), ("carton", "packet", "pencil box")),
    ("ukbench_subset56/ukbench{:05d}.jpg", range(16, 20), ("book jacket", "comic book")),
    ("ukbench_subset56/ukbench{:05d}.jpg", range(24, 28), ("pillow", "quilt")),
    ("ukbench_subset56/ukbench{:05d}.jpg", range(32, 36), ("book jacket", "comic book")),
    ("ukbench_subset56/ukbench{:05d}.jpg", range(40, 44), ("prayer rug", "doormat")),
    ("ukbench_subset56/ukbench{:05d}.jpg", range(48, 52), ("vase", "pitcher", "water jug")),
    ("imagededup_tests/base_images/ukbench{:05d}.jpg", (9012,), ("acoustic guitar",)),
    ("imagededup_tests/base_images/ukbench{:05d}.jpg", (9040,), ("mailbox",)),
    ("imagededup_tests/base_images/ukbench{:05d}.jpg", (8976,), ("bucket", "ashcan")),
    ("imagededup_tests/base_images/ukbench{:05d}.jpg", (9380,),
     ("water jug", "whiskey jug", "pop bottle", "water bottle", "beer bottle", "wine bottle")),
    ("imagededup_tests/base_images/ukbench{:05d}.jpg", (9348,), ("lotion", "sunscreen")),
    ("imagededup_tests/formats_images/giphy.gif", (0,), ("tabby", "tiger cat", "Persian cat", "Siamese cat",
                                                         "Egyptian cat")),
    ("imagededup_tests/formats_images/baboon.pgm", (0,), ("baboon",)),
]
# COIL-100 turntable objects: the classes hold for every view (checked at 0, 90, 180 and 270 degrees).
COIL_OBJECTS: dict[str, tuple[str, ...]] = {
    "obj1": ("carton", "packet"),
    "obj5": ("pill bottle",),
    "obj10": ("cup", "coffee mug"),
    "obj19": ("fire engine",),
    "obj28": ("tree frog", "bullfrog", "tailed frog"),
    "obj31": ("carton", "packet", "pill bottle"),
    "obj35": ("plate", "soup bowl", "mixing bowl"),
    "obj37": ("tank",),
    "obj46": ("packet", "carton"),
    "obj48": ("piggy bank",),
}


def labels(coil_every: int = 90) -> dict[str, tuple[str, ...]]:
    """Photo (relative to --data) -> acceptable ImageNet classes; COIL views every *coil_every* degrees."""
    out = {pattern.format(i): names for pattern, ids, names in _GROUPS for i in ids}
    for obj, names in COIL_OBJECTS.items():
        out.update({f"coil100_subset17/{obj}__{angle}.png": names for angle in range(0, 360, coil_every)})
    return out

# One photo of each kind, for the top-5 listing.
SHOWN = ("ukbench_subset56/ukbench00000.jpg", "ukbench_subset56/ukbench00048.jpg",
         "imagededup_tests/base_images/ukbench09012.jpg", "imagededup_tests/formats_images/giphy.gif",
         "coil100_subset17/obj19__0.png", "coil100_subset17/obj48__0.png")


def centre_crop(image: Image.Image, pre: efficientnet_lite.Preprocessing) -> np.ndarray:
    """Short side to pre.resize with pre.interpolation, centre square of pre.crop: uint8 HWC."""
    w, h = image.size
    scale = pre.resize / min(w, h)
    size = (max(pre.resize, round(w * scale)), max(pre.resize, round(h * scale)))
    image = image.resize(size, Image.Resampling[pre.interpolation.upper()])
    left, top = (size[0] - pre.crop) // 2, (size[1] - pre.crop) // 2
    return np.array(image.crop((left, top, left + pre.crop, top + pre.crop)), dtype=np.uint8)


def normalise(crops: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class BatchNormInputs:
    """Per-channel variance of what reaches each batch norm of *model*, pooled over every batch run
    while it is attached, against the running variance the batch norm learnt in training.

    A label-free check of preprocessing: photos prepared and convolved the way the training images
    were give activations whose spread matches the running statistics.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        self.sums: dict[str, list] = {n: [0.0, 0.0, 0] for n in self.bns}
        self.hooks = [m.register_forward_hook(self._hook(n)) for n, m in self.bns.items()]

    def _hook(self, name: str):
        def hook(module, inputs, output) -> None:
            x = inputs[0].double()
            acc = self.sums[name]
            acc[0] += x.sum((0, 2, 3))
            acc[1] += (x * x).sum((0, 2, 3))
            acc[2] += x.numel() // x.shape[1]

        return hook

    def log_var_ratio(self, name: str) -> torch.Tensor:
        """log(variance seen / running variance) per channel, channels that never fired left out."""
        total, squares, n = self.sums[name]
        var = squares / n - (total / n) ** 2
        running = self.bns[name].running_var.double()
        live = running > 1e-6  # a running variance of 0: the channel was dead in training
        return torch.log((var[live] + 1e-3) / (running[live] + 1e-3))

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


# Where the two paddings differ most: the 14x14 and 7x7 maps, whose borders are a large share.
DEEP = ("stage6", "stage7", "head")


def classify(model: EfficientNetLite, x: torch.Tensor, batch: int = 16) -> tuple[torch.Tensor, float, float]:
    """Class probabilities; the stem's input scale (mean log variance ratio of the first batch norm,
    0 when the photos are normalised as the training images were); and the deep layers' fit (mean
    absolute log variance ratio of the batch norms in DEEP, lower is closer to training)."""
    stats = BatchNormInputs(model)
    with torch.inference_mode():
        probs = torch.cat([model(x[i : i + batch]).softmax(1) for i in range(0, len(x), batch)])
    stats.close()
    deep = torch.cat([stats.log_var_ratio(n).abs() for n in stats.bns if n.split(".")[0] in DEEP])
    return probs, float(stats.log_var_ratio("stem.bn").mean()), float(deep.mean())


def score(probs: torch.Tensor, names: list[str], wanted: dict[str, tuple[str, ...]],
          categories: list[str]) -> dict[str, float | np.ndarray]:
    index = {c: i for i, c in enumerate(categories)}
    top5 = probs.topk(5, dim=1).indices
    ok1, ok5, p_label = [], [], []
    for row, name in enumerate(names):
        good = [index[c] for c in wanted[name]]
        ok1.append(int(top5[row, 0]) in good)
        ok5.append(any(int(i) in good for i in top5[row]))
        p_label.append(float(probs[row, good].sum()))
    return {"top1": float(np.mean(ok1)), "top5": float(np.mean(ok5)), "max_p": float(probs.max(1).values.mean()),
            "log_p": np.log(np.maximum(p_label, 1e-12))}


def throughput(model: torch.nn.Module, crop: int, bf16: bool = False, batch: int = 16, seconds: float = 3.0) -> float:
    """Images/s of the network alone on one batch, channels_last, as the Embedder runs it."""
    x = torch.randn(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += batch
    return n / (time.perf_counter() - t0)


def per_photo_ms(model: EfficientNetLite, files: list[Path], pre: efficientnet_lite.Preprocessing,
                 mean, std) -> tuple[float, float, float]:
    """Milliseconds per photo at batch 1: decode, resize + crop + normalise, network."""
    t = np.zeros(3)
    with torch.inference_mode():
        model(normalise(centre_crop(load_image(files[0]).image, pre)[None], mean, std))  # warm-up
        for f in files:
            t0 = time.perf_counter()
            image = load_image(f).image
            t1 = time.perf_counter()
            x = normalise(centre_crop(image, pre)[None], mean, std)
            t2 = time.perf_counter()
            model(x)
            t += (t1 - t0, t2 - t1, time.perf_counter() - t2)
    return tuple(t / len(files) * 1000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--models", default=",".join(efficientnet_lite.VARIANTS))
    ap.add_argument("--compare-preprocessing", action="store_true",
                    help="score each padding x normalisation combination, not just the shipped one")
    ap.add_argument("--coil-every", type=int, default=90, metavar="DEG",
                    help="COIL-100 views to use, every DEG degrees (5 = all 72 views of each labelled object)")
    ap.add_argument("--show", type=int, default=len(SHOWN), help="photos whose top-5 classes are printed")
    ap.add_argument("--interpolation", choices=("bicubic", "bilinear", "lanczos"),
                    help="resize filter instead of the weights' own (bicubic)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    wanted = labels(args.coil_every)
    names = [n for n in wanted if (args.data / n).is_file()]
    if not names:
        print(f"no labelled photos under {args.data}", file=sys.stderr)
        return 1
    photos = {n: load_image(args.data / n).image for n in names}
    print(f"{len(names)} labelled photos under {args.data} (of {len(wanted)}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    bf16_ok = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    shipped = ("same", "(x-127)/128")
    combos = ([(p, n) for p in efficientnet_lite.PADDINGS for n in NORMALISATIONS]
              if args.compare_preprocessing else [shipped])
    rows = []
    for arch in args.models.split(","):
        pre = efficientnet_lite.preprocessing(arch)
        if args.interpolation:
            pre = dataclasses.replace(pre, interpolation=args.interpolation)
        print(f"\n{arch}: resize {pre.resize} ({pre.interpolation}), crop {pre.crop}, "
              f"mean {pre.mean[0]:.4f}, std {pre.std[0]:.4f}")
        crops = np.stack([centre_crop(photos[n], pre) for n in names])
        models = {}
        for padding, norm in combos:
            if padding not in models:
                models[padding] = efficientnet_lite.efficientnet_lite(arch, pretrained=True, padding=padding).eval()
            model = models[padding]
            probs, stem_scale, deep_fit = classify(model, normalise(crops, *NORMALISATIONS[norm]))
            s = score(probs, names, wanted, categories)
            rows.append((arch, padding, norm, s, stem_scale, deep_fit))
            if (padding, norm) != shipped:
                continue
            for n in [n for n in SHOWN if n in photos][: args.show]:
                p, i = probs[names.index(n)].topk(5)
                print(f"  {n}: " + ", ".join(f"{categories[k]} {v:.2f}" for v, k in zip(p.tolist(), i.tolist())))
            decode, prepare, network = per_photo_ms(model, [args.data / n for n in names[:16]], pre,
                                                    *NORMALISATIONS[norm])
            print(f"  per photo at batch 1: {decode + prepare + network:.1f} ms (decode {decode:.1f}, "
                  f"resize+crop {prepare:.1f}, network {network:.1f})")
        if args.no_throughput:
            continue
        model = models["same"]
        fused = fuse(model)
        line = (f"  network alone, batch 16: fp32 {throughput(model, pre.crop):.1f} images/s, "
                f"BN folded {throughput(fused, pre.crop):.1f}")
        if "symmetric" in models:
            sym = models["symmetric"]
            line += (f"; symmetric padding: fp32 {throughput(sym, pre.crop):.1f}, "
                     f"BN folded {throughput(fuse(sym), pre.crop):.1f}")
        if bf16_ok:
            line += f"; bf16 autocast, BN folded: {throughput(fused, pre.crop, bf16=True):.1f}"
        else:
            line += "; bf16: not supported by this CPU"
        print(line)

    print(f"\n{'model':<20}{'padding':<11}{'normalisation':<14}{'top-1':>7}{'top-5':>7}{'max p':>7}"
          f"{'log p(label)':>14}{'vs shipped':>17}{'stem scale':>12}{'deep fit':>10}")
    base = {arch: s["log_p"] for arch, padding, norm, s, *_ in rows if (padding, norm) == shipped}
    for arch, padding, norm, s, stem_scale, deep_fit in rows:
        diff = s["log_p"] - base[arch]
        print(f"{arch:<20}{padding:<11}{norm:<14}{s['top1']:>7.3f}{s['top5']:>7.3f}{s['max_p']:>7.3f}"
              f"{s['log_p'].mean():>14.3f}{diff.mean():>+10.3f} ± {diff.std() / np.sqrt(len(diff)):.3f}"
              f"{stem_scale:>+12.2f}{deep_fit:>10.3f}")
    print("log p(label): mean log of the probability given to an acceptable class; vs shipped: its mean\n"
          "difference per photo (± standard error) from same + (x-127)/128. stem scale: mean log of the\n"
          "stem convolution's output variance over the running variance of its batch norm (0: the input\n"
          "scale of training). deep fit: mean |log variance ratio| of the batch norms in "
          f"{', '.join(DEEP)} (lower: closer to training).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
