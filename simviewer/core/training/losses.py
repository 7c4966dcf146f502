"""The two losses: NormSoftmax over learned class proxies (supervised) and NT-Xent between two
edited views of each photo (self-supervised)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .events import TrainingError

SUPERVISED_TEMPERATURE = 0.05
SELFSUP_TEMPERATURE = 0.1


class ProxyLoss(nn.Module):
    """NormSoftmax (Zhai & Wu 2019, the Proxy-NCA++ family): cross-entropy over the cosines between
    each embedding and one learned proxy per class, divided by a small temperature."""

    def __init__(self, n_classes: int, dim: int, temperature: float = SUPERVISED_TEMPERATURE) -> None:
        super().__init__()
        if n_classes < 2:
            raise TrainingError("supervised training needs at least two classes")
        self.temperature = temperature
        gen = torch.Generator().manual_seed(n_classes * 7919 + dim)
        self.proxies = nn.Parameter(F.normalize(torch.randn(n_classes, dim, generator=gen), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        e = F.normalize(embeddings.float().flatten(1), dim=1)
        p = F.normalize(self.proxies, dim=1)
        return F.cross_entropy(e @ p.T / self.temperature, labels)


class NTXentLoss(nn.Module):
    """NT-Xent (SimCLR) over a batch where ``ids`` says which rows are views of one photo: each
    view's positive is the other view of its photo, every other row is a negative."""

    def __init__(self, temperature: float = SELFSUP_TEMPERATURE) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        z = F.normalize(embeddings.float().flatten(1), dim=1)
        n = z.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = (z @ z.T / self.temperature).masked_fill(eye, float("-inf"))
        positive = (ids[:, None] == ids[None, :]) & ~eye
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        per_row = -log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1).clamp(min=1)
        return per_row[positive.any(1)].mean()


def make_criterion(mode: str, n_classes: int, dim: int, temperature: float | None) -> nn.Module:
    """The loss of *mode*; *temperature* None: the mode's default."""
    if mode == "supervised":
        return ProxyLoss(n_classes, dim, temperature or SUPERVISED_TEMPERATURE)
    return NTXentLoss(temperature or SELFSUP_TEMPERATURE)


def default_temperature(mode: str) -> float:
    return SUPERVISED_TEMPERATURE if mode == "supervised" else SELFSUP_TEMPERATURE
