"""The feature network that image sample quality is measured in: a small classifier per dataset
(:mod:`interp.analyses.quality` reads its 64-d features), stored as a normal checkpoint of kind
``feature_net`` (:mod:`interp.methods.feature_net`; ``checkpoints/feature-net-{data}``).

It trains with its own fixed loop (Adam, lr 2e-3, batch 128, one generator for the batch draws), not
the shared trainer: that loop made the shipped networks, and every published FD figure is measured in
their feature spaces, so it stays the one that reproduces them bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureNet(nn.Module):
    """Two conv layers + pooling → a ``dim``-d feature; a linear head classifies."""

    def __init__(self, channels: int = 1, n_classes: int = 10, dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(256, dim),
            nn.GELU(),
        )
        self.head = nn.Linear(dim, n_classes)
        self.meta: dict = {}  # the checkpoint's meta: the data it was trained on, its held-out accuracy, ...

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, C, H, W]`` → ``[N, dim]``."""
        return self.body(x)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every activation of the body (after each GELU): ``[N, 32, H, W]``, ``[N, 64, H, W]``, ``[N, dim]``."""
        maps, h = [], x
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, nn.GELU):
                maps.append(h)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def perceptual_distance(net: FeatureNet, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over ``net``'s activations of the mean |φ_l(a) − φ_l(b)| between images ``a``, ``b [N, C, H, W]``: ``[N]``."""
    pairs = zip(net.activations(a), net.activations(b), strict=True)
    return torch.stack([(fa - fb).abs().flatten(1).mean(1) for fa, fb in pairs]).mean(0)


def train_feature_net(images: torch.Tensor, labels: torch.Tensor, steps: int = 600, seed: int = 0) -> FeatureNet:
    """Classify ``images [N, C, H, W]`` by ``labels [N]``: Adam (lr 2e-3), ``steps`` batches of 128."""
    torch.manual_seed(seed)
    net = FeatureNet(images.shape[1], int(labels.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(images), (128,), generator=gen)
        loss = F.cross_entropy(net(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def classifier_accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of ``images`` ``[N, C, H, W]`` that ``net`` assigns to ``labels`` ``[N]``."""
    with torch.no_grad():
        pred = torch.cat([net(images[i : i + batch_size]).argmax(-1) for i in range(0, len(images), batch_size)])
    return float((pred == labels).float().mean())
