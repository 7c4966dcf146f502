"""The backbones simviewer offers, importable without torch (the CLI's --help stays instant)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str
    dim: int  # length of the pooled feature vector
    label: str


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
    )
}
DEFAULT_ARCH = "resnet50"
