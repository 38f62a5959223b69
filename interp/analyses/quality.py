"""Sample quality in the feature space of a small classifier we train per dataset (not Inception, so
not "FID"): Fréchet distance (FD), precision / recall (k-NN manifolds, Kynkäänniemi et al. 2019) and
the classifier's accuracy on class-conditional samples. The FD of two halves of real data is the floor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from interp.checkpoints import check_state_dict, load_safetensors
from interp.errors import DataError
from interp.io import atomic_directory


class FeatureNet(nn.Module):
    """Two conv layers + pooling → a 64-d feature; a linear head classifies."""

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
        self.meta: dict = {}  # from config.json: the data it was trained on, its held-out accuracy, ...

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_feature_net(images: torch.Tensor, labels: torch.Tensor, steps: int = 600, seed: int = 0) -> FeatureNet:
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


def save_feature_net(net: FeatureNet, path: str | os.PathLike[str], meta: dict | None = None) -> None:
    """Write ``net`` to the folder ``path`` (atomically): ``model.safetensors`` + ``config.json``
    (``meta``, e.g. the data and held-out accuracy, is stored beside the shape). An existing ``path``
    is replaced only if it is a feature network folder."""
    import json

    from safetensors.torch import save_file

    path = Path(path)
    if path.exists():
        config_file = path / "config.json"
        try:
            kind = json.loads(config_file.read_text()).get("kind") if config_file.is_file() else None
        except (OSError, ValueError):
            kind = None
        if kind != "feature_net":
            raise DataError(f"{path} exists and is not a feature network folder; refusing to replace it")
    config = {"kind": "feature_net", "channels": net.body[0].in_channels, "n_classes": net.head.out_features}
    with atomic_directory(path) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps({**config, "meta": meta or {}}, indent=2))


def classifier_accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of ``images`` ``[N, C, H, W]`` that ``net`` assigns to ``labels`` ``[N]``."""
    with torch.no_grad():
        pred = torch.cat([net(images[i : i + batch_size]).argmax(-1) for i in range(0, len(images), batch_size)])
    return float((pred == labels).float().mean())


def load_feature_net(path: str | os.PathLike[str]) -> FeatureNet:
    import json

    path = Path(path)
    if not (path / "config.json").is_file():
        raise DataError(f"feature network {path} has no config.json")
    cfg = json.loads((path / "config.json").read_text())
    net = FeatureNet(cfg["channels"], cfg["n_classes"])
    net.meta = cfg.get("meta", {})
    weights = load_safetensors(path / "model.safetensors")
    check_state_dict(weights, net.state_dict(), path / "model.safetensors")
    net.load_state_dict(weights)
    return net.eval()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD between Gaussians fitted to feature sets ``a``, ``b`` ``[N, D]``."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    # tr sqrt(ca cb) via the eigenvalues of sqrt(ca) cb sqrt(ca) (symmetric PSD)
    ea, va = torch.linalg.eigh(ca)
    sqrt_ca = va @ torch.diag(ea.clamp_min(0).sqrt()) @ va.T
    cross = torch.linalg.eigvalsh(sqrt_ca @ cb @ sqrt_ca).clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + ca.trace() + cb.trace() - 2 * cross)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Share of fake features inside the real k-NN manifold (precision) and vice versa (recall)."""

    def inside(ref: torch.Tensor, query: torch.Tensor) -> float:
        d_ref = torch.cdist(ref, ref)
        radius = d_ref.kthvalue(k + 1, dim=1).values  # k-th neighbour, excluding self
        return float((torch.cdist(query, ref) <= radius[None]).any(1).float().mean())

    return inside(real, fake), inside(fake, real)


@dataclass
class Quality:
    fd: float
    precision: float
    recall: float
    accuracy: float | None
    fd_floor: float
    n: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def quality(
    net: FeatureNet,
    real: torch.Tensor,
    fake: torch.Tensor,
    fake_labels: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> Quality:
    """Compare ``fake`` images with ``real`` ones. The floor is the FD between ``real`` and as many
    other real images (``reference``, e.g. the training split) as there are fakes: FD is biased by sample
    size, so the floor must use the same sizes. Without ``reference``, two halves of ``real``."""
    if len(fake) < 2 or len(real) < 4:
        raise DataError(f"need at least 2 generated and 4 real images, got {len(fake)} and {len(real)}")
    with torch.no_grad():
        fr, ff = net.features(real), net.features(fake)
        acc = classifier_accuracy(net, fake, fake_labels) if fake_labels is not None else None
        if reference is not None:
            floor = frechet_distance(fr, net.features(reference[: len(fake)]))
        else:
            half = len(fr) // 2
            floor = frechet_distance(fr[:half], fr[half : 2 * half])
    precision, recall = precision_recall(fr, ff)
    return Quality(
        fd=frechet_distance(fr, ff), precision=precision, recall=recall, accuracy=acc, fd_floor=floor, n=len(fake)
    )
