"""The time-agnostic study: the same denoiser trained with and without its timestep input.

The timestep-redundancy paper (arXiv 2606.20416) reports that time-agnostic ("blind") DiT / U-Net
denoisers match timestep-conditioned ones on sample quality, because the noise level can be read
from the corrupted input; Sun et al. (arXiv 2502.13129) find the same for most samplers but a
failure of DDIM with ε-prediction. This module measures, for a conditioned / blind pair:

- per-t denoising error: the MSE of the clean-image estimate x̂₀ and of the training target, at a
  grid of noise levels, on the same images and noise draws for both models (:func:`denoising_mse`);
- sample quality per sampler (FD, precision, recall, classifier accuracy; :func:`quality_table`);
- blind / conditioned ratios of both (:func:`blind_ratio`).

:func:`train_pair` trains (or resumes) the pair with the shared trainer; the variants differ only in
``time_conditioning``. ``benchmarks/time_agnostic.py`` runs the study over processes and seeds.

At our scale (digits 8×8, DiT and U-Net of 0.3–0.5 M parameters, 2000 steps, 3 seeds; output in
benchmarks/results/time_agnostic_{dit,unet}.txt) the claim holds
for flow matching (FD ratio blind / conditioned 1.15 ± 0.10 DiT, 1.05 ± 0.06 U-Net, Euler) but not for
DDPM-ε: the blind model is clearly worse with DDIM (FD ratio ≈ 4), as Sun et al. report, and also with
unclipped DDIM (≈ 2.6) and the ancestral sampler (≈ 2.2), where they report little loss. Its x̂₀ error
is 4–5.5× the conditioned model's at t > 0.7.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.analyses.quality import FeatureNet, quality
from interp.errors import DataError
from interp.methods.image_diffusion import ImageDiffusion, ImageDiffusionConfig
from interp.samplers.image import ImageSamplerConfig

VARIANTS = {"cond": True, "blind": False}  # variant name → time_conditioning


def study_samplers(process: str, steps: int = 50) -> dict[str, ImageSamplerConfig]:
    """The samplers compared for a process: Euler and Heun (flow); DDIM with and without clipping
    x̂₀ to the data range, and ancestral (DDPM). Sun et al.'s DDIM failure is reported without clipping."""
    if process == "flow":
        return {
            "euler": ImageSamplerConfig(name="euler", steps=steps),
            "heun": ImageSamplerConfig(name="heun", steps=steps),
        }
    return {
        "ddim": ImageSamplerConfig(name="ddim", steps=steps),
        "ddim (no clip)": ImageSamplerConfig(name="ddim", steps=steps, clip_x0=False),
        "ancestral": ImageSamplerConfig(name="ancestral", steps=steps),
    }


def variant_config(cfg: ImageDiffusionConfig, variant: str) -> ImageDiffusionConfig:
    if variant not in VARIANTS:
        raise DataError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return dataclasses.replace(cfg, time_conditioning=VARIANTS[variant])


def check_pair(cond: ImageDiffusion, blind: ImageDiffusion) -> None:
    """The comparison is meaningful only for the same model with and without the timestep."""
    if not cond.cfg.time_conditioning or blind.cfg.time_conditioning:
        raise DataError(
            "expected a timestep-conditioned model and a time-agnostic one, got time_conditioning="
            f"{cond.cfg.time_conditioning} and {blind.cfg.time_conditioning}"
        )
    a, b = cond.cfg.to_dict(), blind.cfg.to_dict()
    differ = sorted(k for k in a if k != "time_conditioning" and a[k] != b.get(k))
    if differ:
        detail = ", ".join(f"{k}: {a[k]!r} vs {b.get(k)!r}" for k in differ)
        raise DataError(f"the two checkpoints differ in more than the timestep input ({detail})")


def train_pair(
    cfg: ImageDiffusionConfig, train_cfg, root: str | os.PathLike[str], progress: bool = True
) -> dict[str, ImageDiffusion]:
    """Train (or resume, or just load when finished) the conditioned and blind variants of ``cfg`` into
    ``root/cond`` and ``root/blind`` with the shared trainer: same seed, so the same batches, noise levels
    and noise draws. The initial weights of the layers both share differ, since the conditioned model's
    timestep layers are drawn first; each pair is two independently initialised models, as in the papers."""
    from interp.train import seed_everything, train

    out = {}
    for variant in VARIANTS:
        seed_everything(train_cfg.seed)
        method = ImageDiffusion(variant_config(cfg, variant))
        train(
            method,
            Path(root) / variant,
            train_cfg,
            meta={"seed": train_cfg.seed, "study": "time_agnostic"},
            progress=progress,
        )
        out[variant] = method
    return out


def denoising_mse(
    method: ImageDiffusion,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    t_grid: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 512,
) -> pd.DataFrame:
    """Denoising error of ``method`` on ``images`` ``[N, C, H, W]`` at each noise level of ``t_grid``.

    One noise draw per image and level, fixed by ``seed``, so two models evaluated with the same
    arguments see identical inputs. Columns: ``t``, ``log_snr``, ``mse_x0`` (x̂₀ against the clean
    image), ``mse_target`` (the training loss: velocity or ε)."""
    if len(images) == 0:
        raise DataError("denoising_mse needs at least one image")
    t_grid = torch.linspace(0.02, 0.98, 25) if t_grid is None else torch.as_tensor(t_grid, dtype=torch.float32)
    process = method.process
    gen = torch.Generator().manual_seed(seed)
    method.model.eval()
    rows = []
    with torch.no_grad():
        for t in t_grid.tolist():
            eps = torch.randn(images.shape, generator=gen)
            sq_x0 = sq_target = 0.0
            for start in range(0, len(images), batch_size):
                x, e = images[start : start + batch_size], eps[start : start + batch_size]
                y = labels[start : start + batch_size] if labels is not None else None
                tt = torch.full((len(x),), t)
                x_t = process.noise(x, tt, e)
                pred = method.predict(x_t, tt, y)
                x0, _ = process.x0_eps(pred, x_t, tt)
                sq_x0 += float(((x0 - x) ** 2).sum())
                sq_target += float(((pred - process.target(x, e)) ** 2).sum())
            count = images.numel()
            rows.append(
                {
                    "t": t,
                    "log_snr": float(process.log_snr(torch.tensor([t]))[0]),
                    "mse_x0": sq_x0 / count,
                    "mse_target": sq_target / count,
                }
            )
    return pd.DataFrame(rows)


def quality_table(
    methods: Mapping[str, ImageDiffusion],
    net: FeatureNet,
    real: torch.Tensor,
    reference: torch.Tensor,
    n: int = 1000,
    seed: int = 0,
    samplers: Mapping[str, ImageSamplerConfig] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Sample ``n`` images from each method with each sampler and score them against ``real`` (FD
    floor: ``real`` against ``n`` images of ``reference``). Columns: ``variant``, ``sampler``,
    ``steps``, ``evaluations``, ``fd``, ``fd_floor``, ``precision``, ``recall``, ``accuracy``."""
    rows = []
    jobs = [
        (variant, name, cfg)
        for variant, method in methods.items()
        for name, cfg in (samplers or study_samplers(method.cfg.process)).items()
    ]
    for variant, name, cfg in tqdm(jobs, disable=not progress, desc="sample quality", leave=False):
        labels, record = methods[variant].sample(n, cfg, seed)
        q = quality(net, real, record[-1].x, labels, reference=reference)
        rows.append(
            {
                "variant": variant,
                "sampler": name,
                "steps": cfg.steps,
                "evaluations": sum(s.evaluations for s in record),
                **{k: v for k, v in q.to_dict().items() if k != "n"},
            }
        )
    return pd.DataFrame(rows)


def blind_ratio(frame: pd.DataFrame, value: str, keys: list[str]) -> pd.DataFrame:
    """``value`` of the blind variant over the conditioned one, matched on ``keys`` (e.g.
    ``["sampler"]`` or ``["t"]``): columns ``keys``, ``{value}_cond``, ``{value}_blind``, ``ratio``."""
    if frame.duplicated([*keys, "variant"]).any():
        raise DataError(
            f"blind_ratio: several rows per {[*keys, 'variant']}; add the distinguishing columns (e.g. seed) to keys"
        )
    wide = frame.pivot_table(index=keys, columns="variant", values=value, aggfunc="first")
    missing = [v for v in VARIANTS if v not in wide.columns]
    if missing:
        raise DataError(f"blind_ratio needs both variants; {missing} missing from the frame")
    out = pd.DataFrame(
        {f"{value}_cond": wide["cond"], f"{value}_blind": wide["blind"], "ratio": wide["blind"] / wide["cond"]}
    )
    return out.reset_index()


NOISE_BANDS = {"t < 0.3": (0.0, 0.3), "0.3 to 0.7": (0.3, 0.7), "t > 0.7": (0.7, 1.0)}


def band_ratios(mse: pd.DataFrame, value: str = "mse_x0") -> pd.DataFrame:
    """Blind / conditioned ``value`` per noise band of :data:`NOISE_BANDS`: the ratio is taken per t (and
    per ``model`` / ``process`` / ``seed`` where those columns exist), averaged within each band, then
    averaged over seeds. Columns: the grouping keys, ``band``, ``ratio``, ``ratio_sd`` (over seeds; NaN
    with one seed), ``seeds``."""
    groups = [k for k in ("model", "process") if k in mse.columns]
    per_run = [*groups, *(["seed"] if "seed" in mse.columns else [])]
    ratios = blind_ratio(mse, value, [*per_run, "t"])
    edges = [lo for lo, _ in NOISE_BANDS.values()] + [1.0]
    ratios["band"] = pd.cut(ratios["t"], edges, labels=list(NOISE_BANDS), include_lowest=True)
    per_seed = ratios.groupby([*per_run, "band"], observed=True, as_index=False)["ratio"].mean()
    out = per_seed.groupby([*groups, "band"], observed=True, as_index=False, sort=False).agg(
        ratio=("ratio", "mean"), ratio_sd=("ratio", "std"), seeds=("ratio", "size")
    )
    return out
