"""Fidelity and plausibility of conditional restorations (FlowBender's metrics): restore held-out
images from their observations y = A(x) and measure

- fidelity: PSNR to the ground truth (images in [−1, 1], peak-to-peak 2) and the consistency residual
  RMS(A(x̂) − y) per sample (both averaged over samples);
- plausibility: FD / precision / recall against the held-out images in the feature space of the data's
  feature network (:mod:`interp.analyses.quality`), with its real-vs-real floor;
- cost: model evaluations per sample.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from interp.analyses.quality import load_feature_net, quality
from interp.errors import DataError
from interp.evaluation import feature_net_dir


@dataclass
class Restoration:
    """Per-run means: ``psnr`` (dB), ``residual`` (consistency RMS), FD / floor / precision / recall,
    ``evaluations`` per sample, ``n`` samples."""

    psnr: float
    residual: float
    fd: float | None
    fd_floor: float | None
    precision: float | None
    recall: float | None
    evaluations: int
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def psnr(x: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) per sample ``[B]`` of images in [−1, 1] (peak-to-peak 2)."""
    mse = (x.clamp(-1, 1) - truth).flatten(1).pow(2).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def restoration_quality(
    method,
    images: torch.Tensor,
    sampler=None,
    seed: int = 0,
    net=None,
    batch_size: int = 256,
) -> tuple[Restoration, torch.Tensor]:
    """Restore ``images [N, C, H, W]`` from their observations with ``method`` (a FlowBender method) and
    ``sampler``; FD etc. only when a feature network ``net`` is given (and N ≥ 2). Returns the scores and
    the restorations ``[N, C, H, W]``."""
    outs, evaluations = [], 0
    for start in range(0, len(images), batch_size):
        y = method.observe(images[start : start + batch_size])
        record = method.sample(y, sampler, seed + start)
        outs.append(record[-1].x)
        if start == 0:
            evaluations = sum(s.evaluations for s in record)
    fake = torch.cat(outs)
    y = method.observe(images)
    fd = fd_floor = precision = recall = None
    if net is not None and len(fake) >= 2:
        q = quality(net, method.data("heldout")[0], fake.clamp(-1, 1), reference=method.reference_images(seed))
        fd, fd_floor, precision, recall = q.fd, q.fd_floor, q.precision, q.recall
    scores = Restoration(
        psnr=float(psnr(fake, images).mean()),
        residual=float(method.consistency(fake.clamp(-1, 1), y).mean()),
        fd=fd,
        fd_floor=fd_floor,
        precision=precision,
        recall=recall,
        evaluations=evaluations,
        n=len(images),
    )
    return scores, fake


def feature_net_for(method, feature_net: str | os.PathLike[str] | None = None):
    """The feature network at ``feature_net``, or the shipped one of the method's data."""
    net = load_feature_net(Path(feature_net) if feature_net is not None else feature_net_dir(method.cfg.data))
    trained_on = net.meta.get("data")
    if trained_on is not None and trained_on != method.cfg.data:
        raise DataError(
            f"the feature network was trained on {trained_on!r}, the checkpoint's data is {method.cfg.data!r}"
        )
    return net


def evaluate_cli(method, options) -> tuple[dict, str]:
    """``interp eval`` on a FlowBender checkpoint: restore ``--n`` held-out images (default: all) and
    report fidelity, plausibility and evaluations."""
    from interp.methods.flowbender import heldout_observations

    n = options.get("n")
    feature_net = options.get("feature_net")
    cfg = options.sampler(method.spec, method)
    options.done()
    images, _ = heldout_observations(method, n)
    net = feature_net_for(method, feature_net)
    scores, _ = restoration_quality(method, images, cfg, options.seed, net)
    text = (
        f"{method.cfg.operator} with {cfg.name} ({cfg.steps} steps, {scores.evaluations} evaluations per sample): "
        f"PSNR {scores.psnr:.2f} dB, consistency residual {scores.residual:.4f}, FD {scores.fd:.2f} "
        f"(floor {scores.fd_floor:.2f}), precision {scores.precision:.3f}, recall {scores.recall:.3f}"
    )
    payload = {"operator": method.cfg.operator, "sampler": cfg.to_dict(), "seed": options.seed, **scores.to_dict()}
    return payload, text
