"""Report sections of CrossFlow and of its latent-flow baseline A (``interp report -c DIR``; for CrossFlow,
``--compare A_DIR`` puts A's trajectory, quality at 1 / 4 / 20 steps and decoder mode beside it)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from interp.analyses.crossflow import (
    block_readout,
    decoded_quality,
    decoder_psnr,
    loss_term_gradients,
    trajectory_readout,
)
from interp.errors import DataError, InterpError
from interp.reports.html import Section
from interp.reports.time_agnostic import samples_section

BASELINE_STEPS = (1, 4, 20)
READOUT_N = 256


def _n(options) -> int:
    n = options.get("n", 500)
    if n < 2:
        raise DataError(f"--n must be >= 2 for image sample quality, got {n}")
    return n


def quality_rows(method, n: int, seed: int, samplers: dict[str, Any]) -> pd.DataFrame:
    """FD / precision / recall / accuracy of ``n`` samples per named sampler config (None: the method's default)."""
    from interp.evaluation import evaluate_images
    from interp.methods.latent_flow import evaluations_per_sample

    rows = []
    for name, cfg in samplers.items():
        q = evaluate_images(method, n, cfg, seed)
        rows.append({"model": name, "NFE": evaluations_per_sample(method, cfg, seed), **q.to_dict()})
    return pd.DataFrame(rows)


def readout_section(one_step, trajectory=None) -> Section:
    grids = {"G's final image": one_step.final}
    grids.update({f"G read-out at {site}": images for site, images in one_step.pictures.items()})
    section = samples_section({k: v.clamp(-1, 1) for k, v in grids.items()})
    tables = [one_step.frame().round(4)]
    text = (
        "One call G(ε, 1, y): the residual stream after the embedding and after each block, read out to pixels by a "
        f"linear map fitted per site on {READOUT_N // 2} generations and tested on {READOUT_N // 2} others (a logit "
        "lens with a fitted lens). R² is against G's own final image."
    )
    if trajectory is not None:
        text += (
            " Beside it, the latent-flow baseline's decoded clean-image estimate x̂₀ at each of its 20 steps, against "
            "its final image: where a trajectory spreads the work over steps, G must do it over depth."
        )
        tables.append(trajectory.frame().round(4))
        picks = list(trajectory.pictures)[:: max(1, len(trajectory.pictures) // 5)]
        section.figures += samples_section({f"A {k}": trajectory.pictures[k] for k in picks}).figures
    section.title, section.text, section.tables = "What one step does", text, tables
    section.figures.insert(0, one_step.figure(trajectory))
    return section


def gradients_section(result) -> Section:
    fig = result.figure()
    maps = go.Figure()
    for name, m in result.maps.items():
        maps.add_heatmap(z=m[0].flip(0).numpy(), name=name, visible=True, showscale=False, colorscale="Viridis")
    maps.update_layout(title="mean |∂term/∂image| (last term drawn on top)", height=340)
    return Section(
        "Which loss term shapes what",
        "The gradient of each weighted term on G's output, on held-out path points: its size (RMS), the share of its "
        "energy in 2×2 block means (low spatial frequency: shape) versus the rest (edges, texture), and its cosine with "
        "the error x − G (1: it only pulls toward the data; lower: it asks for something the pixels' error does not).",
        tables=[result.frame().round(4)],
        figures=[fig, maps],
    )


def training_section(method) -> Section | None:
    path = getattr(method, "checkpoint_path", None)
    log = path / "metrics.jsonl" if path is not None else None
    if log is None or not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    frame = pd.DataFrame([r for r in rows if "loss" in r])
    fig = go.Figure()
    for column in sorted(c for c in frame.columns if "/" in c and not c.startswith("time/")):
        fig.add_scatter(x=frame.step, y=frame[column], mode="lines", name=column)
    fig.update_layout(xaxis_title="training step", yaxis_title="logged term", height=360)
    return Section("Training terms", "Every logged term of both phases (from metrics.jsonl).", figures=[fig])


def crossflow_report(method, options) -> tuple[list, dict[str, Any], str]:
    """``interp report`` on a CrossFlow checkpoint (``--n`` samples for quality; ``--compare`` A's checkpoint)."""
    from interp.checkpoints import load_checkpoint
    from interp.methods.latent_flow import LatentFlow

    n = _n(options)
    compare = options.get("compare")
    options.done()
    seed = options.seed
    baseline = load_checkpoint(compare, expected_kind=LatentFlow.kind) if compare is not None else None
    _, record = method.sample(16, None, seed)
    sections = [samples_section({"CrossFlow, NFE = 1": record[-1].x})]
    one_step = block_readout(method, READOUT_N, seed)
    trajectory = trajectory_readout(baseline, READOUT_N, seed) if baseline is not None else None
    sections.append(readout_section(one_step, trajectory))
    sections.append(gradients_section(loss_term_gradients(method, 128, seed)))
    numbers: dict[str, Any] = {"readout": one_step.frame().to_dict("records")}
    try:
        table = quality_rows(method, n, seed, {"CrossFlow": None})
        if baseline is not None:
            samplers = {f"A, {s} steps": baseline.default_sampler(s) for s in BASELINE_STEPS}
            table = pd.concat([table, quality_rows(baseline, n, seed, samplers)], ignore_index=True)
    except DataError as exc:
        sections.append(Section("Sample quality", f"Not measured: {exc}"))
    else:
        numbers["quality"] = table.to_dict("records")
        sections.append(Section("Sample quality", f"FD / precision / recall / classifier accuracy of {n} samples "
                                "against the held-out split in the feature net's space (floor: real vs real); NFE = "
                                "network evaluations per sample.", tables=[table.round(4)]))  # fmt: skip
    if baseline is not None:
        try:
            psnrs = decoder_psnr(method, baseline)
            decoded = decoded_quality(method, baseline, n, seed)
        except InterpError as exc:
            sections.append(Section("Decoder mode", f"Not measured: {exc}"))
        else:
            rows = [{"decoder": k, **q.to_dict()} for k, q in decoded.items()]
            numbers["decoder"] = {**psnrs, "quality": rows}
            sections.append(Section("Decoder mode", f"G(z, 0, y) in place of the autoencoder's decoder. Held-out latents: "
                                    f"PSNR {psnrs['psnr_crossflow']:.2f} dB (decoder {psnrs['psnr_decoder']:.2f} dB). "
                                    f"A's generated latents ({n}, 20 steps) decoded both ways:",
                                    tables=[pd.DataFrame(rows).round(4)]))  # fmt: skip
    training = training_section(method)
    if training is not None:
        sections.append(training)
    return sections, numbers, f"interp report: {method.checkpoint_path} (CrossFlow, encoder {method.cfg.encoder})"


def latent_flow_report(method, options) -> tuple[list, dict[str, Any], str]:
    """``interp report`` on a latent-flow checkpoint: samples and quality at 1, 4 and 20 steps, the trajectory."""
    n = _n(options)
    options.done()
    seed = options.seed
    grids = {f"{s} steps": method.sample(16, method.default_sampler(s), seed)[1][-1].x for s in BASELINE_STEPS}
    trajectory = trajectory_readout(method, READOUT_N, seed)
    picks = list(trajectory.pictures)[:: max(1, len(trajectory.pictures) // 5)]
    sections = [samples_section(grids), samples_section({k: trajectory.pictures[k] for k in picks})]
    sections[1].title, sections[1].text = "The decoded clean-image estimate along 20 steps", ""
    sections[1].figures.insert(0, trajectory.figure())
    numbers: dict[str, Any] = {}
    try:
        table = quality_rows(method, n, seed, {f"{s} steps": method.default_sampler(s) for s in BASELINE_STEPS})
    except DataError as exc:
        sections.append(Section("Sample quality", f"Not measured: {exc}"))
    else:
        numbers["quality"] = table.to_dict("records")
        sections.append(Section("Sample quality", f"{n} samples per step count against the held-out split.",
                                tables=[table.round(4)]))  # fmt: skip
    return sections, numbers, f"interp report: {method.checkpoint_path} (latent flow matching)"
