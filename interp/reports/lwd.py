"""Report sections of an LWD checkpoint (``interp report -c DIR`` on an ``lwd`` checkpoint): the schedule
ordering (:mod:`interp.analyses.schedule_ordering`), how a learned schedule moved in its probe, what each
space's estimate commits to step by step, the clean-image estimate along one trajectory, and sample
quality against held-out data."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from interp.analyses.schedule_ordering import schedule_ordering
from interp.errors import DataError
from interp.reports.html import Section
from interp.reports.time_agnostic import samples_section

TRAJECTORY_STEPS = 6  # pictures of the estimate along one trajectory


def ordering_sections(result) -> list[Section]:
    """Schedule, probe and commitments sections of a :class:`~interp.analyses.schedule_ordering.ScheduleOrdering`."""
    summary = result.summary()
    crossings = result.crossings.pivot(index="space", columns="level", values="tau").reset_index()
    crossings.columns = ["space"] + [f"τ at t = {c}" for c in crossings.columns[1:]]
    checks = pd.DataFrame({"space": result.names, **{k: v for k, v in result.checks.items()}})
    sections = [
        Section(
            "When each space is denoised",
            f"Schedule {result.schedule!r}: each space's noise level t_k = φ_k(τ) against the global time τ (sampling "
            f"runs τ from 1 to 0, left to right). Spaces reach noise level 0.5 in the order "
            f"{' > '.join(summary['order'])}; {summary['clean_first']!r} is clean first. The table gives the τ at which "
            "each space reaches each noise level (larger = earlier) and the checks of φ on 2001 points.",
            tables=[crossings, checks],
            figures=[result.figure()],
        )
    ]
    if len(result.probe):
        fig = go.Figure()
        for (space, tau), g in result.probe.groupby(["space", "tau"]):
            fig.add_scatter(x=g.step, y=g.t, mode="lines+markers", name=f"φ_{space}({tau})")
        fig.update_layout(xaxis_title="training step", yaxis_title="noise level", height=360)
        sections.append(
            Section(
                "How the learned schedule moved during its probe",
                f"φ_k at τ = 0.25, 0.5, 0.75 after each of the {summary['probe_updates']} schedule updates of the joint "
                "probe (from the checkpoint's metrics.jsonl); after the probe the schedule is frozen.",
                figures=[fig],
            )
        )
    decided = pd.DataFrame([{"space": k, "decided from τ": v} for k, v in summary["decided_tau"].items()])
    sections.append(
        Section(
            "What is decided when",
            f"For {summary['n']} samples, at every step each space's clean estimate is classified (the semantic read-out, "
            "or the frozen classifier on the pixel / coarse picture); the right panel of the first section plots the "
            "share that already shows the final image's class. A space has decided once that share stays at or above "
            f"{result.decided_at:.0%} of its value at the last step (the semantic read-out is not a perfect classifier).",
            tables=[decided, result.commitments.round(4)],
        )
    )
    return sections


def trajectory_section(method, seed: int) -> Section:
    """The pixel estimate x̂₀ of 8 samples at a few steps of one trajectory."""
    _, record = method.sample(8, None, seed)
    picks = sorted({round(i * (len(record) - 1) / (TRAJECTORY_STEPS - 1)) for i in range(TRAJECTORY_STEPS)})
    section = samples_section({f"step {i} (τ = {record[i].t:.2f})": record[i].x0.clamp(-1, 1) for i in picks})
    section.title = "The clean-image estimate along the trajectory"
    section.text = "The pixel estimate x̂₀ of 8 samples at evenly spaced steps (first = pure noise in every space)."
    return section


def lwd_report(method, options) -> tuple[list[Section], dict[str, Any], str]:
    """``interp report`` on an LWD checkpoint: ``--n`` samples (default 500) for quality, 200 for the ordering."""
    from interp.evaluation import evaluate_images

    n = options.get("n", 500)
    options.done()
    if n < 2:
        raise DataError(f"--n must be >= 2 for image sample quality, got {n}")
    result = schedule_ordering(method, n=min(n, 200), seed=options.seed)
    sections = ordering_sections(result)
    sections.append(trajectory_section(method, options.seed))
    numbers: dict[str, Any] = {"ordering": result.summary()}
    try:
        q = evaluate_images(method, n, None, options.seed)
    except DataError as exc:
        sections.append(Section("Sample quality", f"Not measured: {exc}"))
    else:
        numbers["quality"] = q.to_dict()
        table = pd.DataFrame([q.to_dict()])
        sections.append(
            Section(
                "Sample quality",
                "Fréchet distance, k-NN precision / recall (and classifier accuracy for class-conditional models) of "
                f"{n} samples against the held-out split, in the feature net's space; the floor is real vs real.",
                tables=[table],
            )
        )
    return sections, numbers, f"interp report: {method.checkpoint_path} (LWD, schedule {method.cfg.schedule})"
