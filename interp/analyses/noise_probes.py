"""How well the noise level can be read without a timestep: from the raw corrupted input (a classical
estimator and a small learned probe) and from each layer's activations (linear and MLP probes).

The classical estimator is Gaussian maximum likelihood: fit the data's mean μ and covariance Σ, then
pick the t whose ``x_t ~ N(α_t μ, α_t² Σ + σ_t² I)`` best explains the corrupted image (grid search in
Σ's eigenbasis). When the noise dominates, the relative error of σ̂ is ~1/√(2d) for d pixels.
Probes regress t; we report R² and the mean relative error |t̂ − t| / t on held-out examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from interp.processes.continuous import ContinuousProcess


@dataclass
class GaussianNoiseEstimator:
    """Maximum-likelihood noise level of a corrupted image under a Gaussian model of the data."""

    mean: torch.Tensor  # [d] in Σ's eigenbasis
    eig: torch.Tensor  # [d]
    basis: torch.Tensor  # [d, d]
    process: ContinuousProcess
    grid: torch.Tensor

    @classmethod
    def fit(cls, images: torch.Tensor, process: ContinuousProcess, grid_size: int = 400) -> GaussianNoiseEstimator:
        x = images.flatten(1).double()
        mu = x.mean(0)
        cov = torch.cov((x - mu).T) if x.shape[0] > 1 else torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        eig, basis = torch.linalg.eigh(cov)
        return cls(
            mean=basis.T @ mu,
            eig=eig.clamp_min(0),
            basis=basis,
            process=process,
            grid=torch.linspace(0.005, 0.995, grid_size, dtype=torch.float64),
        )

    def estimate(self, x_t: torch.Tensor) -> torch.Tensor:
        """t̂ for each image ``[B, ...]`` → ``[B]``."""
        z = x_t.flatten(1).double() @ self.basis  # [B, d]
        a, s = self.process.alpha_sigma(self.grid)  # [G]
        var = a[:, None] ** 2 * self.eig[None] + s[:, None] ** 2  # [G, d]
        resid = z[:, None, :] - a[None, :, None] * self.mean[None, None]  # [B, G, d]
        nll = 0.5 * (var.log()[None] + resid**2 / var[None]).sum(-1)  # [B, G]
        return self.grid[nll.argmin(1)].float()


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    ss_res = ((pred - target) ** 2).sum()
    ss_tot = ((target - target.mean()) ** 2).sum()
    return float(1 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred - target).abs() / target.abs().clamp_min(1e-6)).mean())


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, ridge: float = 1e-3
) -> torch.Tensor:
    """Closed-form ridge regression (features standardised on the training split)."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a = torch.cat([(train_x - mu) / sd, torch.ones(len(train_x), 1)], 1).double()
    w = torch.linalg.solve(
        a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=torch.float64), a.T @ train_y.double()
    )
    b = torch.cat([(test_x - mu) / sd, torch.ones(len(test_x), 1)], 1).double()
    return (b @ w).float()


def mlp_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    seed: int = 0,
    steps: int = 1500,
    hidden: int = 64,
    weight_decay: float = 1e-3,
    val_frac: float = 0.2,
    patience: int = 300,
) -> torch.Tensor:
    """A one-hidden-layer MLP (Adam, full batch, features and target standardised), early-stopped on a
    ``val_frac`` share of the training examples: the weights with the best validation loss are kept, and
    training stops after ``patience`` steps without a better one (or after ``steps``)."""
    gen = torch.Generator().manual_seed(seed)
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    y_mu, y_sd = train_y.mean(), train_y.std().clamp_min(1e-6)
    xs, ys = (train_x - mu) / sd, (train_y - y_mu) / y_sd
    order = torch.randperm(len(xs), generator=gen)
    n_val = max(1, int(len(xs) * val_frac)) if len(xs) > 4 else 0
    val, fit = order[:n_val], order[n_val:]
    net = nn.Sequential(nn.Linear(train_x.shape[1], hidden), nn.GELU(), nn.Linear(hidden, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1 / math.sqrt(p.shape[-1])))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=weight_decay)
    best, best_state, best_step = float("inf"), None, 0
    for step in range(steps):
        if n_val and step - best_step > patience:
            break
        loss = ((net(xs[fit]).squeeze(-1) - ys[fit]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if n_val and step % 10 == 9:
            with torch.no_grad():
                val_loss = float(((net(xs[val]).squeeze(-1) - ys[val]) ** 2).mean())
            if val_loss < best:
                best, best_state, best_step = val_loss, {k: v.clone() for k, v in net.state_dict().items()}, step
    if best_state is not None:
        net.load_state_dict(best_state)
    with torch.no_grad():
        return net((test_x - mu) / sd).squeeze(-1) * y_sd + y_mu


def noisy_examples(
    images: torch.Tensor, process: ContinuousProcess, n: int, seed: int, t_range: tuple[float, float] = (0.05, 0.95)
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(images), (n,), generator=gen)
    t = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(n, generator=gen)
    eps = torch.randn((n, *images.shape[1:]), generator=gen)
    return process.noise(images[idx], t, eps), t


def probe_input(
    train_images: torch.Tensor, test_images: torch.Tensor, process: ContinuousProcess, n: int = 1000, seed: int = 0
) -> list[dict]:
    """Classical (Gaussian ML) and learned (MLP) estimates of t from the raw corrupted input."""
    x_tr, t_tr = noisy_examples(train_images, process, n, seed)
    x_te, t_te = noisy_examples(test_images, process, n, seed + 1)
    est = GaussianNoiseEstimator.fit(train_images, process)
    t_hat = est.estimate(x_te)
    mlp = mlp_probe(x_tr.flatten(1), t_tr, x_te.flatten(1), seed=seed)
    return [
        {
            "source": "input",
            "probe": "gaussian-ml",
            "r2": r2_score(t_hat, t_te),
            "rel_error": relative_error(t_hat, t_te),
        },
        {"source": "input", "probe": "mlp", "r2": r2_score(mlp, t_te), "rel_error": relative_error(mlp, t_te)},
    ]


def probe_layers(
    method,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    capture: str | Sequence[str],
    n: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Linear and MLP probes of t on each captured activation (mean-pooled over positions / pixels)."""
    from interp.hooks import attach

    inst = attach(method.model)
    names = inst.resolve(capture)

    def features(images, s):
        x_t, t = noisy_examples(images, method.process, n, s)
        with torch.no_grad(), inst.session(capture=names) as session:
            method.predict(x_t, t, None)
            session.end_step()
        trace = session.trace
        return {name: _pool(trace[name, 0]) for name in names}, t

    f_tr, t_tr = features(train_images, seed)
    f_te, t_te = features(test_images, seed + 1)
    rows = []
    for name in names:
        lin = linear_probe(f_tr[name], t_tr, f_te[name])
        mlp = mlp_probe(f_tr[name], t_tr, f_te[name], seed=seed)
        rows += [
            {"source": name, "probe": "linear", "r2": r2_score(lin, t_te), "rel_error": relative_error(lin, t_te)},
            {"source": name, "probe": "mlp", "r2": r2_score(mlp, t_te), "rel_error": relative_error(mlp, t_te)},
        ]
    return rows


def _pool(act: torch.Tensor) -> torch.Tensor:
    """``[B, N, D]`` (tokens) → mean over N; ``[B, C, H, W]`` → mean over H, W; plus the std, per channel."""
    if act.dim() == 3:
        return torch.cat([act.mean(1), act.std(1)], -1)
    if act.dim() == 4:
        return torch.cat([act.mean((2, 3)), act.flatten(2).std(-1)], -1)
    return act.flatten(1)


def dimension_sweep(
    datasets: dict[str, torch.Tensor],
    process: ContinuousProcess,
    n: int = 500,
    seed: int = 0,
    t_range: tuple[float, float] = (0.5, 0.95),
) -> pd.DataFrame:
    """Relative error of σ̂ (Gaussian ML) per image size, against the 1/√(2d) prediction."""
    rows = []
    for name, images in datasets.items():
        half = len(images) // 2
        est = GaussianNoiseEstimator.fit(images[:half], process)
        x_t, t = noisy_examples(images[half:], process, n, seed, t_range)
        t_hat = est.estimate(x_t)
        _, s = process.alpha_sigma(t)
        _, s_hat = process.alpha_sigma(t_hat)
        d = images[0].numel()
        rows.append(
            {
                "data": name,
                "d": d,
                "sigma_rel_error": relative_error(s_hat, s),
                "prediction_1/sqrt(2d)": 1 / math.sqrt(2 * d),
            }
        )
    return pd.DataFrame(rows)
