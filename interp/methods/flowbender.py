"""FlowBender (arXiv 2606.20404; official code selflein/FlowBender-I2I): a conditional image flow that is
trained with its own alignment error as an input, and its baselines (``interp train flowbender``).

Task: recover x from an observation y = A(x) of a forward operator A (:mod:`interp.processes.operators`:
``sr4``, ``inpaint``, ``jpeg10``). The observation enters the network as input channels (upsampled to
the image size for ``sr4``). Training step, per batch (all draws from the step's generator):

1. σ logit-normal (sigmoid of a standard normal), ε ~ N(0, I), z = (1 − σ)x + σε;
2. look-ahead: the same network with **zero** feedback and no gradient gives v₀ and x̂ = z − σ v₀;
3. feedback f(x̂): ``zero``-order = A(x̂) − y (upsampled to the image size) divided per sample by its
   max |·|, so in [−1, 1]; ``first``-order = ∇_x̂ 1000·MSE(A(x̂) − y), standardised per sample (only for
   differentiable A); ``both`` = the two stacked; ``none`` = no feedback (the plain baseline);
4. f replaced by zeros with probability ``feedback_dropout`` per sample;
5. loss = flow matching ‖v(z, σ, y, f) − (ε − x)‖² (per-example mean); with ``baseline align`` plus
   0.5·MSE(A(x̂_θ) − y) on the examples with σ ≤ 0.2, x̂_θ = z − σ v (through a straight-through A for
   JPEG).

The feedback channels' weights start at zero (:mod:`interp.models.image`), so a fresh model ignores its
feedback. Sampling: :mod:`interp.samplers.flowbender` (look-ahead + feedback, the prior-step shortcut,
feedback guidance; plain conditional Euler; inference-time residual guidance). ``interp eval`` reports
fidelity (PSNR to the ground truth, the consistency residual RMS(A(x̂) − y)) and plausibility (FD /
precision / recall) and the evaluations per sample (:mod:`interp.analyses.conditional_quality`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import datasets
import torch
import torch.nn.functional as F

from interp.config import Config, check, check_choice
from interp.data.images import image_dataset, image_shape
from interp.errors import DataError
from interp.methods.image_diffusion import ImageData
from interp.models.image import ImageModelConfig, build_image_model
from interp.processes.continuous import ContinuousProcess, _bcast
from interp.processes.operators import OPERATORS, Operator, operator
from interp.registry import MethodSpec, Options, register
from interp.samplers.flowbender import FlowBenderSamplerConfig, FlowBenderStep, Velocity, sample_conditional

FEEDBACK_MODES = ("zero", "first", "both", "none")
BASELINES = ("plain", "align")
ALIGN_WEIGHT, ALIGN_SIGMA = 0.5, 0.2  # the align baseline: weight of the residual MSE, at σ ≤ 0.2 only
FIRST_ORDER_SCALE = 1000.0  # first-order feedback: ∇ of 1000·MSE(residual) (before standardising)
FLOW = ContinuousProcess("flow")


@dataclass
class FlowBenderConfig(Config):
    """``operator`` is required (a checkpoint without one cannot be sampled). ``feedback``: the feedback
    channels (``none``: the plain conditional baseline); ``baseline align`` adds the alignment loss."""

    data: str = field(default="digits", metadata={"help": "Image dataset (as for `interp train image`)."})
    operator: str | None = field(default=None, metadata={"help": f"Forward operator: {' | '.join(OPERATORS)}."})
    feedback: str = field(default="zero", metadata={"help": "zero | first | both | none (none: plain baseline)"})
    feedback_dropout: float = field(default=0.1, metadata={"help": "Share of examples trained with zero feedback."})
    baseline: str = field(default="plain", metadata={"help": "plain | align (+0.5·MSE residual at σ ≤ 0.2)"})
    image_size: int = field(default=8, metadata={"cli": False})  # from the data
    channels: int = field(default=1, metadata={"cli": False})  # from the data
    architecture: str = field(default="dit", metadata={"cli": "--model", "help": "dit | unet"})
    width: int = 64
    depth: int = 4
    n_heads: int = 4
    patch_size: int = 2

    def validate(self) -> None:
        check(
            self.operator is not None,
            f"a FlowBender model needs its operator ({' | '.join(OPERATORS)}); none is set",
        )
        op = operator(self.operator)
        check_choice("feedback", self.feedback, FEEDBACK_MODES)
        check_choice("baseline", self.baseline, BASELINES)
        check(
            op.differentiable or self.feedback in ("zero", "none"),
            f"operator {self.operator!r} is not differentiable: first-order feedback needs a gradient; use --feedback zero",
        )
        check(0 <= self.feedback_dropout <= 1, f"feedback_dropout must be in [0, 1], got {self.feedback_dropout!r}")
        self.model_config()
        op.observation_shape((1, self.channels, self.image_size, self.image_size))

    @property
    def feedback_channels(self) -> int:
        return {"zero": 1, "first": 1, "both": 2, "none": 0}[self.feedback] * self.channels

    def model_config(self) -> ImageModelConfig:
        return ImageModelConfig(
            architecture=self.architecture,
            image_size=self.image_size,
            channels=self.channels,
            width=self.width,
            depth=self.depth,
            n_heads=self.n_heads,
            patch_size=self.patch_size,
            cond_channels=self.channels,
            feedback_channels=self.feedback_channels,
        )


def logit_normal(n: int, generator: torch.Generator) -> torch.Tensor:
    """σ = sigmoid(u), u ~ N(0, 1): ``[n]`` noise levels concentrated around 0.5."""
    return torch.sigmoid(torch.randn(n, generator=generator))


def zero_order_feedback(residual: torch.Tensor) -> torch.Tensor:
    """``residual [B, ...]`` divided per sample by its max |·| (all-zero stays zero): values in [−1, 1]."""
    scale = residual.detach().flatten(1).abs().amax(1).clamp_min(1e-8)
    return residual.detach() / _bcast(scale, residual)


def standardise(g: torch.Tensor) -> torch.Tensor:
    """``g [B, ...]`` per sample to mean 0, standard deviation 1 (a constant sample becomes 0)."""
    flat = g.detach().flatten(1)
    mean, std = flat.mean(1), flat.std(1, unbiased=False)
    return (g.detach() - _bcast(mean, g)) / _bcast(std.clamp_min(1e-8), g)


def feedback_flow_loss(
    velocity: Velocity,
    x: torch.Tensor,
    eps: torch.Tensor,
    sigma: torch.Tensor,
    drop: torch.Tensor,
    feedback: Callable[[torch.Tensor], torch.Tensor] | None = None,
    alignment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """One FlowBender training step's loss terms, per example ``[B]`` (shared by the image method and
    the 2-D toy). ``velocity(z, σ [B], f or None) -> v`` (None: zero feedback); ``feedback(x̂) -> f``
    (None: the model has no feedback, no look-ahead is made); ``drop [B]`` bool: examples whose feedback
    is zeroed; ``alignment(x̂_θ) -> [B]`` the residual MSE of the trained estimate (None: no alignment
    loss; otherwise weighted 0.5 and counted only where σ ≤ 0.2). Returns ``{"flow"[, "align"]}``."""
    z = FLOW.noise(x, sigma, eps)
    fb = None
    if feedback is not None:
        with torch.no_grad():
            x_hat = z - _bcast(sigma, z) * velocity(z, sigma, None)
        fb = feedback(x_hat)
        fb = torch.where(_bcast(drop, fb), torch.zeros_like(fb), fb)
    v = velocity(z, sigma, fb)
    terms = {"flow": FLOW.loss(v, x, eps)}
    if alignment is not None:
        terms["align"] = ALIGN_WEIGHT * alignment(z - _bcast(sigma, z) * v) * (sigma <= ALIGN_SIGMA).to(v.dtype)
    return terms


class FlowBender(ImageData):
    """The method object: ``model`` (an image denoiser with condition and feedback channels),
    ``operator`` (A), the training step and conditional sampling."""

    def __init__(self, cfg: FlowBenderConfig):
        self.cfg = cfg
        self.model = build_image_model(cfg.model_config())
        self.operator: Operator = operator(cfg.operator)

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)

    # --- data -------------------------------------------------------------------------------------
    def train_dataset(self, seed: int) -> datasets.Dataset:
        ds = image_dataset(self.cfg.data, "train")
        self.check_images(torch.as_tensor(ds[:1]["image"]), f"dataset {self.cfg.data!r}")
        return ds

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """y = A(x): ``[B, C, H, W]`` → the observation (``[B, C, H/4, W/4]`` for sr4)."""
        return self.operator(x)

    def condition_image(self, y: torch.Tensor) -> torch.Tensor:
        """The observation as input channels ``[B, C, H, W]`` (nearest-neighbour upsampled for sr4)."""
        size = self.cfg.image_size
        return y if y.shape[-1] == size else F.interpolate(y, size=(size, size), mode="nearest")

    def feedback_of(self, x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The feedback ``[B, F, H, W]`` of estimate ``x_hat [B, C, H, W]`` against observation ``y``
        (see the module docstring; F = C, or 2C for ``both``: zero-order first)."""
        parts = []
        if self.cfg.feedback in ("zero", "both"):
            parts.append(zero_order_feedback(self.condition_image(self.operator.residual(x_hat.detach(), y))))
        if self.cfg.feedback in ("first", "both"):
            with torch.enable_grad():
                x = x_hat.detach().requires_grad_(True)
                r = self.operator.surrogate(x) - y
                (g,) = torch.autograd.grad(FIRST_ORDER_SCALE * r.pow(2).flatten(1).mean(1).sum(), x)
            parts.append(standardise(g))
        if not parts:
            raise DataError("this FlowBender model has no feedback (--feedback none)")
        return torch.cat(parts, 1)

    def velocity(self, y: torch.Tensor, model: torch.nn.Module | None = None) -> Velocity:
        """``(z, σ [B], f or None) -> v`` for observation ``y``: the model with the observation as input
        channels and ``f`` as feedback (None: zeros, so the feedback hooks still fire)."""
        model = model or self.model
        cond = self.condition_image(y)
        channels = self.cfg.feedback_channels

        def velocity(z: torch.Tensor, sigma: torch.Tensor, fb: torch.Tensor | None) -> torch.Tensor:
            if fb is None and channels:
                fb = z.new_zeros((z.shape[0], channels, *z.shape[2:]))
            return model(z, sigma, cond=cond, feedback=fb)

        return velocity

    # --- training ---------------------------------------------------------------------------------
    def collate(self, rows: dict) -> dict[str, torch.Tensor]:
        return {"image": torch.as_tensor(rows["image"])}

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = batch["image"]
        B = x.shape[0]
        sigma = logit_normal(B, generator)
        eps = torch.randn(x.shape, generator=generator)
        drop = torch.rand(B, generator=generator) < self.cfg.feedback_dropout
        return {"x": x, "y": self.observe(x), "sigma": sigma, "eps": eps, "drop": drop}

    def loss(self, model: torch.nn.Module, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y = p["y"]
        feedback = (lambda x_hat: self.feedback_of(x_hat, y)) if self.cfg.feedback != "none" else None
        alignment = None
        if self.cfg.baseline == "align":

            def alignment(x_hat: torch.Tensor) -> torch.Tensor:
                return (self.operator.surrogate(x_hat) - y).pow(2).flatten(1).mean(1)

        return feedback_flow_loss(self.velocity(y, model), p["x"], p["eps"], p["sigma"], p["drop"], feedback, alignment)

    # --- sampling ---------------------------------------------------------------------------------
    def default_sampler(self, steps: int = 20) -> FlowBenderSamplerConfig:
        """``flowbender`` for models with feedback, ``cond-euler`` for the baselines."""
        return FlowBenderSamplerConfig(name="flowbender" if self.cfg.feedback != "none" else "cond-euler", steps=steps)

    def sampling(
        self,
        y: torch.Tensor,
        sampler: FlowBenderSamplerConfig | None = None,
        seed: int = 0,
        zero_feedback_at: Collection[int] = (),
    ) -> Iterator[FlowBenderStep]:
        """Start sampling one image per observation ``y`` (``[n, ...]``, checked against the operator):
        the lazy iterator of :class:`~interp.samplers.flowbender.FlowBenderStep` s. ``zero_feedback_at``:
        steps whose feedback is zeroed (:mod:`interp.analyses.feedback_patching`)."""
        if y.dim() < 1 or len(y) < 1:
            raise DataError("need at least one observation to sample from")
        shape = (len(y), *self.image_shape)
        self.operator.check_observation(y, shape)
        self.model.eval()
        feedback = (lambda x_hat: self.feedback_of(x_hat, y)) if self.cfg.feedback != "none" else None
        return sample_conditional(
            self.velocity(y),
            feedback,
            lambda x_hat: self.operator.surrogate(x_hat) - y,
            sampler or self.default_sampler(),
            shape,
            torch.Generator().manual_seed(seed),
            zero_feedback_at,
        )

    def sample(
        self,
        y: torch.Tensor,
        sampler: FlowBenderSamplerConfig | None = None,
        seed: int = 0,
        zero_feedback_at: Collection[int] = (),
    ) -> list[FlowBenderStep]:
        """:meth:`sampling` run to the end: ``record[-1].x`` is the final batch ``[n, C, H, W]``."""
        return list(self.sampling(y, sampler, seed, zero_feedback_at))

    def consistency(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The consistency residual RMS(A(x) − y) per sample ``[B]``."""
        return self.operator.residual(x, y).flatten(1).pow(2).mean(1).sqrt()


def derive_config(options: dict) -> dict:
    """Image size and channels from the data."""
    c, h, _, _ = image_shape(options.get("data", FlowBenderConfig.data))
    return {**options, "image_size": h, "channels": c}


def train_eval(method: FlowBender, seed: int):
    """``--eval-every``: the training loss terms on (up to) 256 held-out images, draws fixed by ``seed``."""
    images = method.data("heldout")[0][:256]
    prepared = method.prepare({"image": images}, torch.Generator().manual_seed(seed))

    def eval_fn(m: FlowBender, step: int) -> dict[str, float]:
        with torch.no_grad():
            terms = m.loss(m.model, prepared)
        return {f"heldout_{k}": float(v.mean()) for k, v in terms.items()}

    return eval_fn


def heldout_observations(method: FlowBender, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (default: all) held-out images ``[n, C, H, W]`` and their observations."""
    images = method.data("heldout")[0]
    if n is not None:
        if n < 1:
            raise DataError(f"--n must be >= 1, got {n}")
        if n > len(images):
            raise DataError(f"--n {n} is more than the {len(images)} held-out images of {method.cfg.data!r}")
        images = images[:n]
    return images, method.observe(images)


def sample_cli(method: FlowBender, options: Options) -> tuple[dict, str]:
    """``interp sample``: restore the first ``--n`` (default 16) held-out images from their observations;
    a PNG grid at ``--out`` with one row per image: ground truth, observation, sample."""
    from interp.data.images import is_interp_png, png_grid
    from interp.io import atomic_write_bytes, check_file_output

    n = options.get("n", 16)
    out = options.require("out", " (a PNG grid) for image checkpoints")
    cfg = options.sampler(method.spec, method)
    options.done()
    images, y = heldout_observations(method, n)
    out = check_file_output(out, is_interp_png, "a PNG grid")  # before sampling: an error changes nothing
    record = method.sample(y, cfg, options.seed)
    final = record[-1].x
    rows = torch.stack([images, method.condition_image(y), final], 1).flatten(0, 1)
    atomic_write_bytes(out, png_grid(rows, columns=3))
    payload = {
        "sampler": cfg.name,
        "steps": cfg.steps,
        "n": n,
        "out": str(out),
        "operator": method.cfg.operator,
        "evaluations": sum(s.evaluations for s in record),
        "consistency_residual": float(method.consistency(final, y).mean()),
    }
    return payload, f"{n} restorations (truth | observation | sample per row) written to {out}"


def trace_cli(method: FlowBender, options: Options):
    """``interp trace``: restore the first ``--n`` (default 4) held-out images."""
    n = options.get("n", 4)
    cfg = options.sampler(method.spec, method)
    options.done()
    _, y = heldout_observations(method, n)

    def run():
        return method.sampling(y, cfg, options.seed)

    return run, {"n": n, "sampler": cfg.to_dict(), "operator": method.cfg.operator}


register(
    MethodSpec(
        kind="flowbender",
        method=FlowBender,
        config=FlowBenderConfig,
        summary="Train a conditional image flow with its own alignment error as input (FlowBender) or a baseline.",
        sampler_config=FlowBenderSamplerConfig,
        samplers=("flowbender", "cond-euler", "residual-guidance"),
        default_sampler=lambda method: method.default_sampler(),
        capture=lambda method: "blocks.*.hook_resid_post" if method.cfg.architecture == "dit" else "**.hook_out",
        train_defaults={"lr": 2e-3},
        derive=derive_config,
        train_eval=train_eval,
        sample=sample_cli,
        trace_run=trace_cli,
        evaluate="interp.analyses.conditional_quality:evaluate_cli",
        report="interp.reports.flowbender:flowbender_report",
    )
)
