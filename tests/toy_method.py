"""A toy method that lives outside the package: flow matching of 2-D points on the unit circle, with
its own config, model, sampler, evaluation and report section, registered here and nowhere else.

It has three networks so the multi-network trainer is exercised too: ``model`` (the velocity field),
``critic`` (reads the noise level t from x_t, trained in a second phase) and ``anchor`` (frozen: a
fixed random feature map whose output the velocity loss also matches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import datasets
import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from interp.config import Config, check
from interp.registry import MethodSpec, register, register_sampler, sampler_class
from interp.samplers.loop import run
from interp.steps import ImageStep, StepContext
from interp.train import Phase


@dataclass
class ToyConfig(Config):
    hidden: int = field(default=32, metadata={"help": "Width of the velocity MLP."})
    n_points: int = 512
    radius: float = 1.0

    def validate(self) -> None:
        check(isinstance(self.hidden, int) and self.hidden >= 1, f"hidden must be >= 1, got {self.hidden!r}")
        check(self.radius > 0, f"radius must be > 0, got {self.radius!r}")


class VelocityMLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.inp = nn.Linear(3, hidden)
        self.hook_hidden = HookPoint()
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.out(self.hook_hidden(torch.tanh(self.inp(torch.cat([x, t[:, None]], 1)))))


class ToyFlow:
    frozen = ("anchor",)

    def __init__(self, cfg: ToyConfig):
        self.cfg = cfg
        self.model = VelocityMLP(cfg.hidden)
        self.critic = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
        self.anchor = nn.Linear(2, 4)

    def components(self) -> dict[str, nn.Module]:
        return {"model": self.model, "critic": self.critic, "anchor": self.anchor}

    def set_component(self, name: str, module: nn.Module) -> None:
        setattr(self, name, module)

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def train_dataset(self, seed: int) -> datasets.Dataset:
        angle = torch.rand(self.cfg.n_points, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
        points = self.cfg.radius * torch.stack([angle.cos(), angle.sin()], 1)
        return datasets.Dataset.from_dict({"x": points.tolist()})

    def collate(self, rows: dict) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor(rows["x"])}

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = batch["x"]
        return {"x": x, "t": torch.rand(len(x), generator=generator), "eps": torch.randn(x.shape, generator=generator)}

    def phases(self) -> list[Phase]:
        def flow(modules, p):
            x_t = (1 - p["t"][:, None]) * p["x"] + p["t"][:, None] * p["eps"]
            v = modules["model"](x_t, p["t"])
            target = p["eps"] - p["x"]
            anchor = modules["anchor"]
            return {"flow": ((v - target) ** 2).sum(1), "anchor": ((anchor(v) - anchor(target)) ** 2).mean(1)}

        def critic(modules, p):
            x_t = (1 - p["t"][:, None]) * p["x"] + p["t"][:, None] * p["eps"]
            return {"t": (modules["critic"](x_t).squeeze(1) - p["t"]) ** 2}

        return [Phase("model", ("model",), flow), Phase("critic", ("critic",), critic, lr_scale=0.5)]


@dataclass
class ToySamplerConfig(Config):
    name: str = "toy-euler"
    steps: int = 8

    def validate(self) -> None:
        check(isinstance(self.steps, int) and self.steps >= 1, f"steps must be >= 1, got {self.steps!r}")


@register_sampler
class ToyEuler:
    """Euler from t = 1 to 0, recording every space's state as an :class:`ImageStep` (x: the points)."""

    name = "toy-euler"
    config = ToySamplerConfig

    def __init__(self, method: ToyFlow, n: int, cfg: ToySamplerConfig, seed: int):
        self.method, self.cfg = method, cfg
        self.x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))

    def schedule(self) -> list[tuple[float, float]]:
        return [(1 - i / self.cfg.steps, 1 - (i + 1) / self.cfg.steps) for i in range(self.cfg.steps)]

    def step(self, ctx: StepContext) -> ImageStep:
        v = self.method.model(self.x, torch.full((len(self.x),), ctx.t))
        x0 = self.x - ctx.t * v
        self.x = self.x + (ctx.s - ctx.t) * v
        return ImageStep(index=ctx.index, t=ctx.t, s=ctx.s, x=self.x.clone(), x0=x0)


def _run(method, options):
    n = options.get("n", 64)
    cfg = options.sampler(method.spec, method)
    options.done()
    return run(sampler_class(cfg.name)(method, n, cfg, options.seed)), n, cfg


def sample(method, options):
    steps, n, cfg = _run(method, options)
    x = list(steps)[-1].x
    return {"n": n, "sampler": cfg.name, "mean_radius": float(x.norm(dim=1).mean())}, f"{n} points"


def trace_run(method, options):
    steps, n, _ = _run(method, options)
    return (lambda: steps), {"n": n}


def evaluate(method, options):
    steps, _, cfg = _run(method, options)
    error = float((list(steps)[-1].x.norm(dim=1) - method.cfg.radius).abs().mean())
    return {"radius_error": error, "evaluations": cfg.steps}, f"mean distance to the circle {error:.3f}"


def report(method, options):
    from interp.reports import Section

    payload, _ = evaluate(method, options)
    return [Section("Toy flow", f"Mean distance to the circle: {payload['radius_error']:.4f}.")], payload, "toy report"


register(
    MethodSpec(
        kind="toy",
        method=ToyFlow,
        config=ToyConfig,
        summary="Train the toy 2-D flow (a test plugin).",
        sampler_config=ToySamplerConfig,
        samplers=("toy-euler",),
        default_sampler=lambda method: ToySamplerConfig(),
        capture="hook_hidden",
        train_defaults={"batch_size": 32, "warmup": 0, "log_every": 5},
        sample=sample,
        trace_run=trace_run,
        evaluate=evaluate,
        report=report,
    )
)
