"""Report sections of the time-agnostic study: per-t denoising error, sample quality per sampler,
noise-level probes per layer, the dimension sweep, and sample grids.

:func:`image_sections` computes everything for one image checkpoint, or for a conditioned / blind pair;
the ``*_section`` functions turn the study's tables (:mod:`interp.studies.time_agnostic`,
:mod:`interp.analyses.noise_probes`) into report sections, so the benchmark can reuse them on its
multi-seed tables.
"""

from __future__ import annotations

import base64
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import torch

from interp.data.images import png_grid
from interp.errors import DataError
from interp.reports.html import Section


def _groups(frame: pd.DataFrame, keys: list[str]):
    keys = [k for k in keys if k in frame.columns]
    if not keys:
        yield "", frame
        return
    for key, group in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        yield " ".join(str(k) for k in key), group


def mse_section(mse: pd.DataFrame) -> Section:
    """``mse``: rows of :func:`~interp.studies.time_agnostic.denoising_mse` with a ``variant`` column
    (and optionally ``model``, ``process``, ``seed``: seeds are averaged)."""
    fig = go.Figure()
    for name, group in _groups(mse, ["model", "process", "variant"]):
        curve = group.groupby("t", as_index=False)["mse_x0"].mean()
        fig.add_trace(go.Scatter(x=curve["t"], y=curve["mse_x0"], mode="lines+markers", name=name))
    fig.update_layout(xaxis_title="noise level t", yaxis_title="MSE of x̂₀", yaxis_type="log", height=400)
    tables = []
    if {"cond", "blind"} <= set(mse["variant"]):
        from interp.studies.time_agnostic import band_ratios, blind_ratio

        keys = [k for k in ("model", "process", "seed") if k in mse.columns]
        per_t = blind_ratio(mse, "mse_x0", [*keys, "t"])
        curve_keys = [k for k in ("model", "process") if k in per_t.columns]
        curves = per_t.groupby([*curve_keys, "t"], as_index=False)["ratio"].mean()
        ratio = go.Figure()
        for name, group in _groups(curves, curve_keys):
            ratio.add_trace(go.Scatter(x=group["t"], y=group["ratio"], mode="lines+markers", name=name or "ratio"))
        ratio.add_hline(y=1.0, line_dash="dot")
        ratio.update_layout(xaxis_title="noise level t", yaxis_title="MSE blind / conditioned", height=340)
        fig = [fig, ratio]
        tables.append(band_ratios(mse))
    return Section(
        "Per-t denoising error",
        "Mean squared error of the clean-image estimate x̂₀ at each noise level, on held-out images with "
        "the same noise draws for every model. t = 0 is data, t = 1 pure noise.",
        tables=tables,
        figures=fig if isinstance(fig, list) else [fig],
        legend="A ratio above 1: the time-agnostic model denoises worse at that noise level than the conditioned one.",
    )


def quality_section(quality: pd.DataFrame) -> Section:
    """``quality``: rows of :func:`~interp.studies.time_agnostic.quality_table` (optionally with
    ``model``, ``process`` and ``seed``; mean and standard deviation over seeds)."""
    keys = [k for k in ("model", "process", "sampler", "variant") if k in quality.columns]
    stats = quality.groupby(keys, sort=False).agg(
        fd=("fd", "mean"),
        fd_sd=("fd", "std"),
        fd_floor=("fd_floor", "mean"),
        precision=("precision", "mean"),
        recall=("recall", "mean"),
        accuracy=("accuracy", "mean"),
        seeds=("fd", "size"),
    )
    stats = stats.reset_index()
    fig = go.Figure()
    for name, group in _groups(stats, ["variant"]):
        x = group[[k for k in ("model", "process", "sampler") if k in group.columns]].astype(str).agg(" ".join, axis=1)
        fig.add_trace(
            go.Bar(x=x, y=group["fd"], name=name, error_y={"type": "data", "array": group["fd_sd"].fillna(0)})
        )
    if len(stats):
        fig.add_hline(y=float(stats["fd_floor"].mean()), line_dash="dot", annotation_text="real-vs-real floor")
    fig.update_layout(barmode="group", yaxis_title="Fréchet distance (feature net)", height=400)
    return Section(
        "Sample quality per sampler",
        "Fréchet distance, k-NN precision / recall and classifier accuracy of generated images in the feature "
        "space of a small classifier trained on the same data (not Inception, so not FID). The floor is the "
        "distance between the held-out images and as many other real images as were generated.",
        tables=[stats],
        figures=[fig],
        legend="Lower FD is better; precision: share of samples on the real-data manifold; recall: share of real "
        "images on the samples' manifold.",
    )


def probe_section(probes: pd.DataFrame) -> Section:
    """``probes``: rows of :func:`~interp.analyses.noise_probes.probe_input` / ``probe_layers`` with an
    optional ``variant`` column."""
    fig = go.Figure()
    for name, group in _groups(probes, ["model", "process", "variant", "probe"]):
        fig.add_trace(go.Scatter(x=group["source"], y=group["r2"], mode="lines+markers", name=name))
    fig.update_layout(
        xaxis_title="read from",
        yaxis_title="R² of t",
        yaxis_range=[min(0.0, float(probes["r2"].min())), 1.02],
        height=400,
    )
    return Section(
        "Reading the noise level without a timestep",
        "Regressions of the noise level t on held-out noisy images: from the raw corrupted input (Gaussian "
        "maximum likelihood, and an MLP), and from each layer's activations (mean and standard deviation over "
        "positions; linear and MLP probes).",
        tables=[probes],
        figures=[fig],
        legend="A conditioned model is given t, so its layers trivially encode it; the interesting curve is the "
        "blind model's.",
    )


def sweep_section(sweep: pd.DataFrame) -> Section:
    """``sweep``: :func:`~interp.analyses.noise_probes.dimension_sweep`."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=sweep["d"], y=sweep["sigma_rel_error"], mode="markers+lines", name="measured"))
    fig.add_trace(go.Scatter(x=sweep["d"], y=sweep["prediction_1/sqrt(2d)"], mode="lines", name="1/√(2d)"))
    fig.update_layout(xaxis_title="pixels d", xaxis_type="log", yaxis_type="log", yaxis_title="relative error of σ̂")
    return Section(
        "Noise-level estimate against image size",
        "Relative error of the Gaussian maximum-likelihood estimate of the noise scale σ at t in [0.5, 0.95], "
        "against the ~1/√(2d) of estimating a variance from d pixels.",
        tables=[sweep],
        figures=[fig],
    )


def samples_section(grids: dict[str, torch.Tensor]) -> Section:
    """``grids``: name → final samples ``[N, C, H, W]`` in [-1, 1]."""
    figures = []
    for name, images in grids.items():
        uri = "data:image/png;base64," + base64.b64encode(png_grid(images)).decode()
        fig = go.Figure(go.Image(source=uri))
        fig.update_layout(title=name, height=360, xaxis_visible=False, yaxis_visible=False, margin={"t": 40})
        figures.append(fig)
    return Section(
        "Samples", "Final samples, one label per column cycle for class-conditional models.", figures=figures
    )


def image_sections(
    method, blind=None, n: int = 500, seed: int = 0, sample_steps: int = 50
) -> tuple[list[Section], dict[str, Any]]:
    """Sections for an image checkpoint ``method`` (or, with ``blind``, the time-agnostic comparison of a
    conditioned ``method`` and a ``blind`` twin) and the headline numbers. ``n``: images per sampler, and
    noisy examples per probe split."""
    from interp.analyses.noise_probes import probe_input, probe_layers
    from interp.analyses.quality import load_feature_net
    from interp.evaluation import feature_net_dir
    from interp.studies.time_agnostic import blind_ratio, check_pair, denoising_mse, quality_table, study_samplers

    methods = {"cond" if method.cfg.time_conditioning else "blind": method}
    if blind is not None:
        check_pair(method, blind)
        methods["blind"] = blind
    held, labels = method.data("heldout")
    train, _ = method.data("train")
    mse = pd.concat([denoising_mse(m, held, labels, seed=seed).assign(variant=v) for v, m in methods.items()])
    sections = [mse_section(mse)]
    numbers: dict[str, Any] = {}
    try:
        net_dir = feature_net_dir(method.cfg.data)
    except DataError as exc:
        net_dir, missing = None, str(exc)
    if net_dir is not None:
        samplers = study_samplers(method.cfg.process, sample_steps)
        reference = method.reference_images(seed)
        quality = quality_table(methods, load_feature_net(net_dir), held, reference, n, seed, samplers)
        sections.append(quality_section(quality))
        if blind is not None:
            ratios = blind_ratio(quality, "fd", ["sampler"])
            numbers["fd_ratio"] = {r.sampler: round(float(r.ratio), 4) for r in ratios.itertuples()}
    else:
        sections.append(
            Section(
                "Sample quality per sampler",
                f"Not measured: {missing}. Train one with `interp train feature-net --data {method.cfg.data} "
                f"--out checkpoints/feature-net-{method.cfg.data}`.",
            )
        )
    probes = [pd.DataFrame(probe_input(train, held, method.process, n=n, seed=seed)).assign(variant="input")]
    for variant, m in methods.items():
        probes.append(pd.DataFrame(probe_layers(m, train, held, m.layer_sites, n=n, seed=seed)).assign(variant=variant))
    sections.append(probe_section(pd.concat(probes, ignore_index=True)))
    grids = {
        variant: m.sample(min(n, 64), m.default_sampler(sample_steps), seed)[1][-1].x for variant, m in methods.items()
    }
    sections.append(samples_section(grids))
    if blind is not None:
        mse_ratio = blind_ratio(mse, "mse_x0", ["t"])
        numbers["mse_ratio_mean"] = round(float(mse_ratio["ratio"].mean()), 4)
    return sections, numbers
