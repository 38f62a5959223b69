"""FlowBender's 2-D toy: where inference-time guidance fails and a model that sees its own error does not.

Data: an Archimedean spiral r = φ/(5π)·2, φ ∈ [π, 5π] (two turns), cut into 4 arcs of half a turn, one
class each (arc c: φ ∈ [(c+1)π, (c+2)π]), points jittered by N(0, 0.03²). Arc c lies inside the annulus
("band") of radii [r((c+1)π), r((c+2)π)], but covers only half of it: the other half of the band
belongs to no arc. The forward operator of class c is A_c(x) = the signed radial distance of x from
band c (0 inside, negative inside it, positive outside), and the observation is y = 0 ("be on arc c").

Models: a small MLP velocity v(z, t, c, f) (class embedding; feedback weights start at zero), trained
with the shared FlowBender step (:func:`interp.methods.flowbender.feedback_flow_loss`) for a few
seconds: a plain class-conditional flow (no feedback) and a FlowBender flow (feedback). The feedback is
f = [r, r·x̂/|x̂|] (the residual and its gradient ∇ ½r², raw): per-sample max-scaling or standardising,
as on images, would reduce a 1- or 2-number feedback to its sign.

Methods compared, same noise: ``plain`` (conditional Euler), ``guidance`` (the plain model with
inference-time residual guidance), ``flowbender`` (look-ahead + feedback) and ``flowbender-shortcut``
(f = 1). Metrics per method: correct-arc rate (the nearest spiral point is on the sample's class's arc),
mean distance to the spiral, mean |A_c| (the residual guidance minimises), evaluations per sample.
Guidance only sees the radius: it pulls samples into the band, including its half where no arc is, so
the residual falls while the samples stay off the spiral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from interp.config import Config, check
from interp.methods.flowbender import feedback_flow_loss, logit_normal
from interp.models.transformer import timestep_features
from interp.samplers.flowbender import FlowBenderSamplerConfig, sample_conditional

N_ARCS = 4
PHI0, PHI1, SCALE, JITTER = math.pi, 5 * math.pi, 2.0, 0.03
METHODS = ("plain", "guidance", "flowbender", "flowbender-shortcut")


def radius(phi: torch.Tensor | float) -> torch.Tensor | float:
    return phi / PHI1 * SCALE


def arc_range(c: int) -> tuple[float, float]:
    """φ range of arc ``c``."""
    step = (PHI1 - PHI0) / N_ARCS
    return PHI0 + c * step, PHI0 + (c + 1) * step


def spiral_points(n: int, classes: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """``n`` jittered spiral points ``[n, 2]`` and their arcs ``[n]`` (uniform in φ over each arc; the
    classes cycle 0..3 unless given)."""
    classes = torch.arange(n) % N_ARCS if classes is None else classes
    lo = torch.tensor([arc_range(c)[0] for c in range(N_ARCS)])
    u = torch.rand(n, generator=generator)
    phi = lo[classes] + u * (PHI1 - PHI0) / N_ARCS
    r = radius(phi)
    x = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], 1)
    return x + JITTER * torch.randn(n, 2, generator=generator), classes


def band_residual(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """A_c(x) − 0: the signed radial distance of ``x [B, 2]`` from its class's band, ``[B, 1]``."""
    lo = torch.tensor([radius(arc_range(c)[0]) for c in range(N_ARCS)])[classes]
    hi = torch.tensor([radius(arc_range(c)[1]) for c in range(N_ARCS)])[classes]
    rho = x.norm(dim=1)
    return (torch.relu(rho - hi) - torch.relu(lo - rho)).unsqueeze(1)


def toy_feedback(x_hat: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``[B, 3]``: the residual r and its gradient r·x̂/|x̂| (see the module docstring)."""
    r = band_residual(x_hat, classes)
    return torch.cat([r, r * x_hat / x_hat.norm(dim=1, keepdim=True).clamp_min(1e-6)], 1)


def spiral_polyline(per_arc: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense noise-free spiral ``[4·per_arc, 2]`` and each point's arc."""
    phis, arcs = [], []
    for c in range(N_ARCS):
        lo, hi = arc_range(c)
        phis.append(torch.linspace(lo, hi, per_arc))
        arcs.append(torch.full((per_arc,), c))
    phi = torch.cat(phis)
    r = radius(phi)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi)], 1), torch.cat(arcs)


class ToyFlow(nn.Module):
    """MLP velocity ``v(z [B, 2], t [B], c [B], f [B, 3] or None) -> [B, 2]``; the feedback projection
    (bias-free) starts at zero, so a fresh model ignores its feedback."""

    def __init__(self, width: int = 128, feedback_channels: int = 0):
        super().__init__()
        self.width = width
        self.inp = nn.Linear(2 + 16, width)
        self.cls = nn.Embedding(N_ARCS, width)
        self.feedback = nn.Linear(feedback_channels, width, bias=False) if feedback_channels else None
        if self.feedback is not None:
            nn.init.zeros_(self.feedback.weight)
        self.body = nn.Sequential(
            nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2)
        )

    def forward(self, z, t, c, f=None):
        h = self.inp(torch.cat([z, timestep_features(t, 16)], 1)) + self.cls(c)
        if f is not None:
            if self.feedback is None:
                raise ValueError("this toy flow has no feedback input")
            h = h + self.feedback(f)
        return self.body(h)


@dataclass
class ToyConfig(Config):
    """``train_steps`` per model (batch ``batch_size``, AdamW ``lr``), ``n`` samples per method,
    ``sample_steps`` Euler steps, ``guidance_step`` of inference-time guidance."""

    train_steps: int = 1500
    batch_size: int = 256
    lr: float = 2e-3
    width: int = 128
    feedback_dropout: float = 0.1
    n: int = 800
    sample_steps: int = 10
    guidance_step: float = 1.0

    def validate(self) -> None:
        for name in ("train_steps", "batch_size", "width", "n", "sample_steps"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)!r}")
        check(0 <= self.feedback_dropout <= 1, f"feedback_dropout must be in [0, 1], got {self.feedback_dropout!r}")


def velocity_of(model: ToyFlow, classes: torch.Tensor):
    """The sampler's ``velocity(z, t, f or None)`` of ``model`` for ``classes`` (None: zero feedback)."""

    def velocity(z, t, f):
        if f is None and model.feedback is not None:
            f = z.new_zeros((z.shape[0], model.feedback.in_features))
        return model(z, t, classes, f)

    return velocity


def train_toy(feedback: bool, cfg: ToyConfig, seed: int = 0) -> ToyFlow:
    """A toy flow trained with the FlowBender step (with feedback) or plain conditional flow matching."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ToyFlow(cfg.width, 3 if feedback else 0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    for _ in range(cfg.train_steps):
        x, c = spiral_points(cfg.batch_size, torch.randint(N_ARCS, (cfg.batch_size,), generator=gen), gen)
        sigma = logit_normal(cfg.batch_size, gen)
        eps = torch.randn(x.shape, generator=gen)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.feedback_dropout
        fb = (lambda x_hat, c=c: toy_feedback(x_hat, c)) if feedback else None
        loss = feedback_flow_loss(velocity_of(model, c), x, eps, sigma, drop, fb)["flow"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def sample_toy(
    model: ToyFlow, classes: torch.Tensor, sampler: FlowBenderSamplerConfig, seed: int = 0, zero_feedback_at=()
):
    """Samples ``[n, 2]`` for ``classes`` and the step records."""
    fb = (lambda x_hat: toy_feedback(x_hat, classes)) if model.feedback is not None else None
    record = list(
        sample_conditional(
            velocity_of(model, classes),
            fb,
            lambda x_hat: band_residual(x_hat, classes),
            sampler,
            (len(classes), 2),
            torch.Generator().manual_seed(seed),
            zero_feedback_at,
        )
    )
    return record[-1].x, record


def toy_metrics(x: torch.Tensor, classes: torch.Tensor) -> dict[str, float]:
    """Correct-arc rate, mean distance to the spiral and mean |A_c| of samples ``x [n, 2]``."""
    line, arcs = spiral_polyline()
    d = torch.cdist(x, line)
    nearest = d.argmin(1)
    return {
        "correct_arc": float((arcs[nearest] == classes).float().mean()),
        "spiral_distance": float(d.min(1).values.mean()),
        "residual": float(band_residual(x, classes).abs().mean()),
    }


@dataclass
class ToyResult:
    """Samples per method (``[n, 2]``), their classes ``[n]`` and the metrics table."""

    samples: dict[str, torch.Tensor]
    classes: torch.Tensor
    table: pd.DataFrame
    models: dict[str, ToyFlow]

    def frame(self) -> pd.DataFrame:
        return self.table

    def figure(self) -> go.Figure:
        """One panel per method: the spiral's arcs (lines) and the samples, coloured by class; samples
        nearest a wrong arc are crosses."""
        names = list(self.samples)
        fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
        line, arcs = spiral_polyline(200)
        colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
        full, _ = spiral_polyline(400)
        for col, name in enumerate(names, start=1):
            x = self.samples[name]
            nearest = torch.cdist(x, full).argmin(1)
            wrong = spiral_polyline(400)[1][nearest] != self.classes
            for c in range(N_ARCS):
                seg = line[arcs == c]
                fig.add_trace(
                    go.Scatter(
                        x=seg[:, 0], y=seg[:, 1], mode="lines", line={"color": colours[c], "width": 2},
                        name=f"arc {c}", showlegend=col == 1, legendgroup=f"arc{c}",
                    ),
                    row=1, col=col,
                )  # fmt: skip
                for bad in (False, True):
                    pts = x[(self.classes == c) & (wrong == bad)]
                    fig.add_trace(
                        go.Scatter(
                            x=pts[:, 0], y=pts[:, 1], mode="markers",
                            marker={"color": colours[c], "size": 6 if bad else 4, "symbol": "x" if bad else "circle",
                                    "opacity": 0.9 if bad else 0.45},
                            name=f"class {c}" + (" (wrong arc)" if bad else ""), showlegend=False,
                        ),
                        row=1, col=col,
                    )  # fmt: skip
            fig.update_xaxes(range=[-2.2, 2.2], row=1, col=col)
            fig.update_yaxes(range=[-2.2, 2.2], scaleanchor=f"x{col if col > 1 else ''}", row=1, col=col)
        fig.update_layout(height=380, width=330 * len(names), title="2-D toy: samples per method (x = wrong arc)")
        return fig


def run_toy(cfg: ToyConfig | None = None, seed: int = 0) -> ToyResult:
    """Train the plain and FlowBender toy flows (seed ``seed``) and compare the four methods on the same
    noise and classes. Deterministic on CPU."""
    cfg = cfg or ToyConfig()
    plain = train_toy(False, cfg, seed)
    bender = train_toy(True, cfg, seed)
    classes = torch.arange(cfg.n) % N_ARCS
    samplers = {
        "plain": (plain, FlowBenderSamplerConfig(name="cond-euler", steps=cfg.sample_steps)),
        "guidance": (
            plain,
            FlowBenderSamplerConfig(name="residual-guidance", steps=cfg.sample_steps, guidance_step=cfg.guidance_step),
        ),
        "flowbender": (bender, FlowBenderSamplerConfig(name="flowbender", steps=cfg.sample_steps)),
        "flowbender-shortcut": (
            bender,
            FlowBenderSamplerConfig(name="flowbender", steps=cfg.sample_steps, shortcut=1.0),
        ),
    }
    rows, samples = [], {}
    for name, (model, scfg) in samplers.items():
        x, record = sample_toy(model, classes, scfg, seed)
        samples[name] = x
        rows.append(
            {"method": name, "seed": seed, **toy_metrics(x, classes), "evaluations": sum(s.evaluations for s in record)}
        )
    return ToyResult(samples, classes, pd.DataFrame(rows), {"plain": plain, "flowbender": bender})
