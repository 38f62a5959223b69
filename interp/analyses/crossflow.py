"""What CrossFlow's one step does, beside the latent-flow baseline's trajectory, and what each loss term asks.

- :func:`block_readout`: G's residual stream after the embedding and after each block, on one call
  G(ε, 1, y), read out to pixels by a linear map fitted per site (least squares from each token's
  activation to its pixel patch of G's *final* image, on half of the samples; a logit lens whose lens is
  fitted, as a tuned lens is): R² of the read-out image against the final image on the other half, per depth.
- :func:`trajectory_readout`: the same question for the baseline over its sampling steps: R² of the decoded
  clean-image estimate x̂₀ at each step against the final image.
- :func:`loss_term_gradients`: the gradient of each weighted loss term (L1, perceptual, adversarial) with
  respect to G's output image on held-out path points: its size, the share of its energy at low spatial
  frequency (the 2×2 block means) and where it points (cosine with the error x − G).
- :func:`decoder_psnr` / :func:`decoded_quality`: decoder mode, G(z, 0, y) against the autoencoder's decoder on
  held-out latents and on latents the baseline generates.

Results are dataclasses with ``.frame()`` (tidy pandas) and ``.figure()`` (plotly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from interp.errors import DataError
from interp.methods.crossflow import CrossFlow, check_same_latents
from interp.samplers.image import ImageSamplerConfig


def r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 − SSE / SST of ``pred`` against ``target`` (any equal shapes; SST around the target's mean)."""
    sse = (pred - target).pow(2).sum()
    sst = (target - target.mean()).pow(2).sum().clamp_min(1e-12)
    return float(1 - sse / sst)


def psnr(images: torch.Tensor, target: torch.Tensor) -> float:
    """Mean PSNR (dB) of ``images`` against ``target`` ``[N, C, H, W]`` in [-1, 1] (peak-to-peak 2)."""
    mse = (images - target).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(4.0 / mse)).mean())


@dataclass
class Readout:
    """Per position along the computation (``depth``: a site of G, or a sampling step of the baseline)
    ``r2`` / ``mse`` of the read-out image against the final image; ``pictures`` name → ``[k, C, H, W]``."""

    table: pd.DataFrame
    pictures: dict[str, torch.Tensor] = field(default_factory=dict)
    final: torch.Tensor | None = None

    def frame(self) -> pd.DataFrame:
        return self.table

    def summary(self) -> dict:
        """The first position whose read-out reaches R² ≥ 0.9 of the final image (None if none does)."""
        hit = self.table[self.table.r2 >= 0.9]
        return {"first_r2_0.9": None if hit.empty else str(hit.iloc[0]["site"]), "positions": len(self.table)}

    def figure(self, other: Readout | None = None) -> go.Figure:
        """R² against the final image over the share of the computation done (with ``other`` beside it)."""
        fig = go.Figure()
        for result in (self, other):
            if result is None:
                continue
            t = result.table
            fig.add_scatter(x=t.progress, y=t.r2, mode="lines+markers", name=t.source.iloc[0], text=t.site)
        fig.update_layout(
            xaxis_title="share of the computation done (G: blocks; baseline: steps)",
            yaxis_title="R² of the read-out vs the final image",
            height=380,
        )
        return fig


def block_readout(method: CrossFlow, n: int = 256, seed: int = 0, pictures: int = 8) -> Readout:
    """Read G's residual stream out to pixels at ``hook_embed`` and each ``blocks.{i}.hook_resid_post`` on
    ``n`` one-step generations G(ε, 1, y) (see the module docstring); ``pictures`` read-outs per site."""
    if n < 4:
        raise DataError(f"n must be >= 4 to fit and test a read-out, got {n}")
    labels = method.labels_for(n, None)
    eps = torch.randn((n, *method.latent_shape()), generator=torch.Generator().manual_seed(seed))
    model = method.model.eval()
    sites = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(len(model.blocks))]
    with torch.no_grad():
        final, cache = model.run_with_cache(eps, torch.ones(n), labels, names_filter=[*sites, "hook_patches"])
    target = cache["hook_patches"]  # [n, N, r·r·C]
    fit, test = slice(0, n // 2), slice(n // 2, n)
    rows, shown = [], {}
    for depth, site in enumerate(sites):
        acts = cache[site]  # [n, N, D]
        x = torch.cat([acts, torch.ones(*acts.shape[:2], 1)], -1)
        d = x.shape[-1]
        a, b = x[fit].reshape(-1, d).double(), target[fit].reshape(-1, target.shape[-1]).double()
        weights = torch.linalg.solve(a.T @ a + 1e-4 * torch.eye(d, dtype=a.dtype), a.T @ b).float()
        images = model.unpatchify(x[test] @ weights)
        rows.append({"source": "CrossFlow G (one call)", "site": site, "depth": depth,
                     "progress": depth / (len(sites) - 1), "r2": r2(images, final[test]),
                     "mse": float((images - final[test]).pow(2).mean())})  # fmt: skip
        shown[site] = images[:pictures]
    return Readout(pd.DataFrame(rows), shown, final[test][:pictures])


def trajectory_readout(baseline, n: int = 256, seed: int = 0, steps: int = 20, pictures: int = 8) -> Readout:
    """The baseline's decoded x̂₀ at each of ``steps`` Euler steps against its final image (``n`` samples)."""
    _, record = baseline.sample(n, ImageSamplerConfig(name="euler", steps=steps), seed)
    final = record[-1].x
    rows, shown = [], {}
    for step in record:
        estimate = step.x0.clamp(-1, 1)
        site = f"step {step.index} (t = {step.t:.2f})"
        rows.append({"source": f"latent flow ({steps} steps)", "site": site, "depth": step.index,
                     "progress": (step.index + 1) / steps, "r2": r2(estimate, final),
                     "mse": float((estimate - final).pow(2).mean())})  # fmt: skip
        shown[site] = estimate[:pictures]
    return Readout(pd.DataFrame(rows), shown, final[:pictures])


@dataclass
class LossTermGradients:
    """Per loss term: ``norm`` (RMS of its gradient on the image), ``low_share`` (energy share in 2×2 block
    means), ``cos_error`` (mean cosine with x − G); ``maps`` term → mean |gradient| ``[C, H, W]``."""

    table: pd.DataFrame
    maps: dict[str, torch.Tensor]

    def frame(self) -> pd.DataFrame:
        return self.table

    def figure(self) -> go.Figure:
        fig = go.Figure()
        for metric in ("low_share", "cos_error"):
            fig.add_bar(x=self.table.term, y=self.table[metric], name=metric)
        fig.update_layout(barmode="group", height=340, yaxis_title="share / cosine")
        return fig


def loss_term_gradients(method: CrossFlow, n: int = 128, seed: int = 0) -> LossTermGradients:
    """Gradients of each weighted pixel-space term w.r.t. G's output on ``n`` held-out path points (t drawn as
    in training); see the module docstring."""
    images, labels = method.data("heldout")
    batch = method.collate({"image": images[:n], "label": labels[:n]})
    modules = method.components()
    p = method.prepare(batch, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        fake, _ = method.predict(modules, p)
    fake.requires_grad_(True)
    rows, maps = [], {}
    for name, value in method.image_terms(modules, fake, p["image"], method.label(p)).items():
        (grad,) = torch.autograd.grad(value.sum(), fake)
        low = F.interpolate(F.avg_pool2d(grad, 2), scale_factor=2, mode="nearest") if grad.shape[-1] % 2 == 0 else grad
        energy = grad.pow(2).sum().clamp_min(1e-30)
        error = (p["image"] - fake.detach()).flatten(1)
        cos = F.cosine_similarity(-grad.flatten(1), error, dim=1, eps=1e-12)
        rows.append({"term": name, "norm": float(grad.pow(2).mean().sqrt()), "low_share": float(low.pow(2).sum() / energy),
                     "cos_error": float(cos.mean())})  # fmt: skip
        maps[name] = grad.abs().mean(0)
    return LossTermGradients(pd.DataFrame(rows), maps)


def decoder_psnr(method: CrossFlow, baseline, n: int | None = None) -> dict[str, float]:
    """Decoder mode on held-out latents z = E(x): PSNR of G(z, 0, y) and of the autoencoder's decoder."""
    check_same_latents(method, baseline)
    images, labels = method.data("heldout")
    images, labels = (images[:n], labels[:n]) if n else (images, labels)
    z = baseline.encode(images)
    with torch.no_grad():
        reference = baseline.decode(z).clamp(-1, 1)
    return {"psnr_crossflow": psnr(method.decode(z, labels), images), "psnr_decoder": psnr(reference, images),
            "n": len(images)}  # fmt: skip


def decoded_quality(method: CrossFlow, baseline, n: int = 500, seed: int = 0, steps: int = 20, feature_net=None):
    """Decoder mode on generated latents: the baseline samples ``n`` latents (``steps`` Euler steps); returns
    ``{"crossflow": Quality, "decoder": Quality}`` of decoding them with G(z, 0, y) and with the decoder."""
    from interp.analyses.quality import load_feature_net, quality
    from interp.evaluation import feature_net_dir

    check_same_latents(method, baseline)
    net = load_feature_net(feature_net or feature_net_dir(method.cfg.data))
    labels, record = baseline.sample(n, ImageSamplerConfig(name="euler", steps=steps), seed)
    real, reference = method.data("heldout")[0], method.reference_images(seed)
    out = {"decoder": quality(net, real, record[-1].x, labels, reference=reference)}
    out["crossflow"] = quality(net, real, method.decode(record[-1].z, labels), labels, reference=reference)
    return out


def evaluate_cli(method, options) -> tuple[dict, str]:
    """``interp eval``: FD / precision / recall / accuracy (:func:`interp.evaluation.evaluate_images_cli`)
    and ``evaluations_per_sample`` (NFE) of the sampler used."""
    from interp.evaluation import evaluate_images_cli
    from interp.methods.latent_flow import evaluations_per_sample

    payload, text = evaluate_images_cli(method, options)
    nfe = evaluations_per_sample(method, options.sampler(method.spec, method), options.seed)
    return {**payload, "evaluations_per_sample": nfe}, f"{text}; {nfe} function evaluation(s) per sample"
