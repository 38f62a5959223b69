"""Report sections of FlowBender: restoration fidelity / plausibility per sampler, the feedback and the
residual per step, the feedback-patching view, sample grids, and the 2-D toy."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from interp.analyses.conditional_quality import feature_net_for, restoration_quality
from interp.analyses.feedback_patching import FeedbackPatching, patch_method
from interp.errors import DataError
from interp.methods.flowbender import heldout_observations
from interp.reports.html import Section
from interp.reports.time_agnostic import samples_section
from interp.samplers.flowbender import FlowBenderSamplerConfig


def report_samplers(method, steps: int = 20) -> dict[str, FlowBenderSamplerConfig]:
    """The samplers a report compares: with feedback, FlowBender without and with the shortcut and the
    same model with its feedback off (cond-euler); always inference-time guidance."""
    out = {}
    if method.cfg.feedback != "none":
        out["flowbender"] = FlowBenderSamplerConfig(name="flowbender", steps=steps)
        out["flowbender shortcut 1.0"] = FlowBenderSamplerConfig(name="flowbender", steps=steps, shortcut=1.0)
    out["cond-euler"] = FlowBenderSamplerConfig(name="cond-euler", steps=steps)
    out["residual-guidance"] = FlowBenderSamplerConfig(name="residual-guidance", steps=steps)
    return out


def quality_section(table: pd.DataFrame) -> Section:
    """``table``: one row per sampler (``sampler`` + :class:`~interp.analyses.conditional_quality.Restoration`)."""
    fig = go.Figure()
    for row in table.itertuples():
        fig.add_trace(
            go.Scatter(x=[row.residual], y=[row.fd], mode="markers+text", text=[row.sampler], name=row.sampler)
        )
    fig.update_layout(xaxis_title="consistency residual RMS(A(x̂) − y)", yaxis_title="FD (feature net)", height=380)
    return Section(
        "Fidelity and plausibility per sampler",
        "Held-out images restored from their observations: PSNR to the ground truth and the consistency "
        "residual (fidelity), FD / precision / recall against held-out images (plausibility), and model "
        "evaluations per sample. FlowBender's claim: residual and FD improve together.",
        tables=[table],
        figures=[fig],
        legend="Lower-left is better on both axes.",
    )


def feedback_section(steps: pd.DataFrame) -> Section:
    """``steps``: per-step rows with ``t``, ``mean_feedback_norm`` and ``mean_residual_norm``."""
    fig = go.Figure()
    for column, name in (("mean_residual_norm", "residual RMS at x̂"), ("mean_feedback_norm", "feedback norm")):
        if column in steps:
            fig.add_trace(go.Scatter(x=steps["t"], y=steps[column], mode="lines+markers", name=name))
    fig.update_layout(xaxis_title="noise level t (1 = noise)", xaxis_autorange="reversed", height=360)
    return Section(
        "The model's own error, step by step",
        "What the sampler fed back at each step: the RMS of the residual A(x̂) − y of the look-ahead estimate "
        "x̂, and the norm of the feedback input (recorded in every trace as `feedback` / `feedback_norm`).",
        figures=[fig],
    )


def patching_section(result: FeedbackPatching) -> Section:
    return Section(
        "When the model uses its feedback (patching)",
        "The feedback input zeroed at one step at a time (and at all steps), the same noise otherwise: how far "
        "the final sample moves and what happens to its consistency residual.",
        tables=[result.frame()],
        figures=[result.figure()],
    )


def toy_section(result) -> Section:
    """The 2-D toy (:func:`interp.studies.flowbender_toy.run_toy`)."""
    return Section(
        "2-D toy: a spiral in four arcs",
        "Class c must land on arc c; its operator is the signed radial distance from arc c's band, so a sample "
        "can satisfy it (residual 0) in the half of the band where no arc is. Correct-arc rate, mean distance "
        "to the spiral and mean |residual| per method.",
        tables=[result.frame()],
        figures=[result.figure()],
    )


def flowbender_sections(method, n: int = 180, seed: int = 0, steps: int = 20) -> tuple[list[Section], dict[str, Any]]:
    """Sections for a FlowBender checkpoint on its first ``n`` held-out images, and the headline numbers."""
    images, y = heldout_observations(method, n)
    try:
        net = feature_net_for(method)
    except DataError:
        net = None
    rows, grids = [], {"ground truth": images[:64], "observation": method.condition_image(y[:64])}
    for name, cfg in report_samplers(method, steps).items():
        scores, fake = restoration_quality(method, images, cfg, seed, net)
        rows.append({"sampler": name, **scores.to_dict()})
        grids[name] = fake[:64]
    table = pd.DataFrame(rows)
    sections = [quality_section(table)]
    if method.cfg.feedback != "none":
        record = method.sample(y[:64], report_samplers(method, steps)["flowbender"], seed)
        sections.append(feedback_section(pd.DataFrame([s.to_row() for s in record])))
        sections.append(patching_section(patch_method(method, y[:32], None, seed)))
    sections.append(samples_section(grids))
    numbers = {r["sampler"]: {k: r[k] for k in ("psnr", "residual", "fd", "evaluations")} for r in rows}
    return sections, {"samplers": numbers}


def flowbender_report(method, options) -> tuple[list, dict[str, Any], str]:
    """``interp report`` on a FlowBender checkpoint (``--n`` held-out images, default all)."""
    n = options.get("n")
    options.done()
    n = len(method.data("heldout")[0]) if n is None else n
    sections, numbers = flowbender_sections(method, n=n, seed=options.seed)
    return sections, numbers, f"interp report: {method.checkpoint_path} (FlowBender, {method.cfg.operator})"
