"""The Grad-CAM behaviour checks of the test suite, as figures: patch mass and deletion.

patch mass: unrelated pictures share one 64 px patch (8 % of the picture); the share of the map
            on the second picture that falls on the patch (chance: 0.08).
deletion:   masking the hottest 10 % of the second picture lowers the similarity by "top"; masking
            random 32 px blocks of the same area lowers it by "random" (the naive baseline).

    python benchmarks/bench_gradcam_checks.py --model resnet18 --layers layer2 layer3 layer4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for the shared test scenes
from simviewer.core.embedder import Embedder  # noqa: E402
from simviewer.core.gradcam import Explainer  # noqa: E402
from tests.gradcam_scenes import deletion_drops, patch_masses  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--layers", nargs="+", default=None)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--pooling", choices=("gem", "avg"), default="gem")
    args = ap.parse_args(argv)
    embedder = Embedder(args.model, args.weights, precision="fp32", pooling=args.pooling)
    layers = args.layers or [Explainer(embedder).layer]
    print(f"{args.model} ({args.weights}, {args.pooling} pooling), {args.pairs} pairs sharing a 64 px patch "
          "(8 % of the picture)")
    for layer in layers:
        explainer = Explainer(embedder, layer)
        masses = patch_masses(explainer, args.pairs)
        top, rand = deletion_drops(explainer, args.pairs)
        wins = sum(t > r for t, r in zip(top, rand))
        print(f"  {layer:10s} patch mass {np.mean(masses):.2f} (min {min(masses):.2f}); "
              f"deletion drop top {np.mean(top):.5f} vs random {np.mean(rand):.5f}, top wins {wins}/{len(top)}; "
              f"ratio: {np.mean(masses) / (64 * 64 / 224**2):.1f}x chance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
