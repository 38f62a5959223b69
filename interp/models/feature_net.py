"""The feature network that image sample quality is measured in: a small classifier per dataset
(:mod:`interp.analyses.quality` reads its 64-d features), stored as a normal checkpoint of kind
``feature_net`` (``checkpoints/feature-net-{data}``; ``interp train feature-net`` writes one).

It trains with its own fixed loop (Adam, lr 2e-3, batch 128, one generator for the batch draws), not
the shared trainer: that loop made the shipped networks, and every published FD figure is measured in
their feature spaces, so it stays the one that reproduces them bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from interp.config import Config, check
from interp.data.images import image_dataset, image_tensors
from interp.registry import MethodSpec, register


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class FeatureNetConfig(Config):
    data: str = field(default="digits", metadata={"help": "Image dataset (as for `interp train image`)."})
    channels: int = field(default=1, metadata={"cli": False})  # from the data
    n_classes: int = field(default=10, metadata={"cli": False})  # from the data
    dim: int = field(default=64, metadata={"cli": False})

    def validate(self) -> None:
        for name in ("channels", "n_classes", "dim"):
            value = getattr(self, name)
            check(isinstance(value, int) and 1 <= value <= 4096, f"{name} must be in 1..4096, got {value!r}")


class FeatureNetwork:
    """The feature net as a checkpoint kind: ``model`` is the :class:`FeatureNet`."""

    def __init__(self, cfg: FeatureNetConfig):
        self.cfg = cfg
        self.model = FeatureNet(cfg.channels, cfg.n_classes, cfg.dim)

    def config_dict(self) -> dict:
        return self.cfg.to_dict()


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


def derive_config(options: dict) -> dict:
    """Channels and classes from the data."""
    data = options.get("data", FeatureNetConfig.data)
    sample = image_dataset(data, "train")
    channels = int(np.asarray(sample[0]["image"]).shape[0])
    return {**options, "channels": channels, "n_classes": int(np.asarray(sample[:]["label"]).max()) + 1}


def train_cli(method: FeatureNetwork, out: Path, steps: int, seed: int, meta: dict) -> str:
    """``interp train feature-net``: train, measure held-out accuracy, write the checkpoint."""
    from interp.checkpoints import check_output, save_checkpoint

    check_output(out, method.kind)
    data = method.cfg.data
    method.model = train_feature_net(*image_tensors(data, "train"), steps=steps, seed=seed)
    accuracy = classifier_accuracy(method.model, *image_tensors(data, "heldout"))
    save_checkpoint(
        out, method, meta={**meta, "data": data, "steps": steps, "seed": seed, "heldout_accuracy": round(accuracy, 4)}
    )
    return f"feature network for {data}: held-out accuracy {accuracy:.3f}; written to {out}"


register(
    MethodSpec(
        kind="feature_net",
        method=FeatureNetwork,
        config=FeatureNetConfig,
        summary="Train the small classifier whose feature space `interp eval` measures sample quality in "
        "(checkpoints/feature-net-DATA is found automatically; otherwise pass --feature-net).",
        derive=derive_config,
        train="interp.models.feature_net:train_cli",
        train_defaults={"steps": 600},
    )
)
