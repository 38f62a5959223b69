"""Sample quality in the feature space of a small classifier we train per dataset (not Inception, so
not "FID"): Fréchet distance (FD), precision / recall (k-NN manifolds, Kynkäänniemi et al. 2019) and
the classifier's accuracy on class-conditional samples. The FD of two halves of real data is the floor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from interp.checkpoints import load_checkpoint
from interp.errors import DataError
from interp.methods.feature_net import FeatureNetwork
from interp.models.feature_net import FeatureNet, classifier_accuracy


def load_feature_net(path: str | os.PathLike[str]) -> FeatureNet:
    """The :class:`~interp.models.feature_net.FeatureNet` of a ``feature_net`` checkpoint (``.meta`` set)."""
    network = load_checkpoint(path)
    if not isinstance(network, FeatureNetwork):
        raise DataError(f"{path} is a {network.kind!r} checkpoint, not a feature network")
    network.model.meta = network.meta
    return network.model


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
