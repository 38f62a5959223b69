"""``make demo``: load the shipped checkpoints, solve held-out problems, print accuracy per model,
and write ``reports/demo.html`` (accuracy, decode order, the diffusion-LM transparency analyses
of the continuous model, and the shipped timestep-conditioned vs time-agnostic DiTs on digits).

Run: ``python -m interp.demo [--n 200] [--seed 0] [--checkpoints checkpoints] [--out reports/demo.html]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch
from rich.console import Console
from rich.table import Table

from interp.analyses.revisions import revisions
from interp.analyses.runs import sample_task
from interp.checkpoints import load_checkpoint
from interp.errors import InterpError
from interp.evaluation import evaluate
from interp.protocols import TokenDenoiser
from interp.reports import Section, write_report
from interp.reports.dlm import dlm_sections
from interp.reports.time_agnostic import image_sections
from interp.samplers import SamplerConfig

SHIPPED = ("dlm-addition3-continuous", "dlm-addition3-topk", "dlm-addition3-none", "ar-addition3")


def commit_order(method, n: int, seed: int, sampler: SamplerConfig) -> pd.DataFrame:
    """Mean step at which each answer position is first committed (decode order), ``n`` problems."""
    run = sample_task(method, n, seed, sampler)
    first = revisions(run.steps, run.prompt_len).first_commit.float()
    return pd.DataFrame({"answer_position": range(first.shape[1]), "mean_commit_step": first.mean(0).tolist()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    ap.add_argument("--n", type=int, default=200, help="held-out problems per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("reports/demo.html"))
    args = ap.parse_args(argv)
    console = Console()
    torch.manual_seed(args.seed)
    rows, orders = [], {}
    try:
        for name in SHIPPED:
            method = load_checkpoint(args.checkpoints / name)
            task = method.cfg.task_config
            sampler = method.spec.default_sampler(method)
            console.print(f"[bold]{name}[/bold]: {task.digits}-digit addition, sampler {sampler.name}")
            start = time.perf_counter()
            result = evaluate(method, task, args.n, args.seed, sampler, progress=True, batch_size=50)
            rows.append(
                {
                    "model": name,
                    "kind": method.kind,
                    "selfcond": getattr(method.cfg, "selfcond", "-"),
                    "sampler": sampler.name,
                    "exact_match": result.exact_match,
                    "n": result.n,
                    "seconds": round(time.perf_counter() - start, 2),
                    "example": result.examples[0]["prompt"] + result.examples[0]["output"],
                }
            )
            if isinstance(method, TokenDenoiser):
                orders[name] = commit_order(method, min(args.n, 100), args.seed, sampler)
    except InterpError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    table = Table(title=f"Held-out exact match, {args.n} problems each (seed {args.seed})")
    for col in ("model", "sampler", "exact_match", "seconds", "example"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["sampler"], f"{r['exact_match']:.3f}", f"{r['seconds']:.1f}", r["example"])
    console.print(table)

    frame = pd.DataFrame(rows)
    acc = go.Figure(go.Bar(x=frame["model"], y=frame["exact_match"], text=frame["exact_match"].round(3)))
    acc.update_layout(yaxis_title="exact match", yaxis_range=[0, 1.05], height=360)
    order = go.Figure()
    for name, df in orders.items():
        order.add_trace(go.Scatter(x=df["answer_position"], y=df["mean_commit_step"], mode="lines+markers", name=name))
    order.update_layout(
        xaxis_title="answer digit (0 = most significant)", yaxis_title="mean step first committed", height=380
    )
    sections = [
        Section(
            "Accuracy",
            "Held-out 3-digit addition, answers written most significant digit first.",
            tables=[frame],
            figures=[acc],
        ),
        Section(
            "Decode order",
            "When each answer digit is first committed by the MDLM sampler (one step per "
            "digit), averaged over held-out problems.",
            figures=[order],
            legend="A flat line: no preferred order. Rising: left to right. Falling: right to left, the order "
            "in which carries are computed.",
        ),
    ]
    analysed = args.checkpoints / "dlm-addition3-continuous"
    console.print(f"analysing {analysed.name}: revisions, smearing, intermediate context, logit lens ...")
    dlm_part, numbers = dlm_sections(load_checkpoint(analysed), n=min(args.n, 64), seed=args.seed)
    for section in dlm_part:
        section.title = f"{section.title} ({analysed.name})"
    cond, blind = (args.checkpoints / f"dit-digits-flow-{v}" for v in ("cond", "blind"))
    console.print(f"comparing {cond.name} with {blind.name}: denoising error, sample quality, noise probes ...")
    image_part, image_numbers = image_sections(
        load_checkpoint(cond), load_checkpoint(blind), n=min(args.n, 200), seed=args.seed
    )
    for section in image_part:
        section.title = f"{section.title} (DiT on digits: timestep-conditioned vs time-agnostic)"
    path = write_report(
        args.out,
        "interp demo: shipped diffusion LMs, AR baseline and time-agnostic image denoisers",
        sections + dlm_part + image_part,
        {
            "n": args.n,
            "seed": args.seed,
            "checkpoints": str(args.checkpoints),
            "analysed": str(analysed),
            **numbers,
            "image_pair": [str(cond), str(blind)],
            **{f"image_{k}": v for k, v in image_numbers.items()},
        },
    )
    console.print(f"report written: [bold]{path}[/bold]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
