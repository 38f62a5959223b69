"""LWD (learning when to denoise, arXiv 2606.19662) at small scale: flow matching over several
representation spaces of an image (:mod:`interp.models.spaces`: pixels, a semantic vector from the
frozen feature net, optionally a coarse image), each noised on its own clock t_k = φ_k(τ) of one global
time τ (:mod:`interp.processes.schedules`), one multi-space DiT (:mod:`interp.models.lwd`) predicting
every space's velocity.

Schedules: ``sync`` (φ_k(τ) = τ), ``sfd`` (semantics ahead by Δ; SFD's loss, no correction), ``learned``
(per-space monotone clocks, convex or concave by construction). The learned objective is our
reconstruction (the official code is a placeholder): per space the flow-matching error weighted by
λ_k · min(φ_k'(τ), clip) (the schedule correction, :func:`~interp.processes.schedules.corrected_weight`:
it keeps each space's noise-level weights fixed while the schedule moves; ``--correction off`` drops it),
plus ``kinetic`` × Σ_k φ_k'(τ)² ‖x_k − ε_k‖² on the schedule's updates. The schedule is learned in a
*joint probe*: from ``probe_start`` of training, for ``probe_share`` of the steps, each step updates the
denoiser and then the schedule (on ``probe_batch`` examples); then the schedule is frozen. Each probe
update logs the curves (``phi/<space>@τ`` rows in ``metrics.jsonl``), and the schedule is a checkpoint
component (``schedule.safetensors``).

Semantic loss weight λ = ``semantic_weight`` (SFD: 2.0) for the semantic space, 1 for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch

from interp.config import Config, check, check_choice
from interp.data.images import image_dataset, image_shape
from interp.errors import DataError
from interp.methods.feature_net import FeatureNetwork
from interp.methods.image_diffusion import ImageData, sample_cli, trace_cli
from interp.models.lwd import MultiSpaceDiT, MultiSpaceDiTConfig
from interp.models.spaces import SPACE_KINDS, RepresentationSpaces
from interp.processes.schedules import (
    SFD,
    LearnedSchedule,
    LearnedScheduleConfig,
    Schedule,
    Synchronous,
    check_schedule,
    corrected_weight,
    kinetic_energy,
)
from interp.registry import CliOption, MethodSpec, register, sampler_class
from interp.samplers.loop import run
from interp.samplers.spaces import SpacesSamplerConfig, SpacesStep
from interp.train import Phase

SCHEDULES = ("sync", "sfd", "learned")
AHEAD = ("semantic", "coarse")  # spaces that SFD runs ahead and a learned schedule makes convex by default
LOGGED_TAUS = (0.25, 0.5, 0.75)


@dataclass
class LWDConfig(Config):
    data: str = field(default="digits", metadata={"help": "Image dataset (as for `interp train image`)."})
    spaces: str = field(
        default="pixels,semantic", metadata={"help": f"Comma-separated representation spaces from {list(SPACE_KINDS)}."}
    )
    schedule: str = field(default="learned", metadata={"help": "sync | sfd | learned"})
    delta: float = field(default=0.3, metadata={"help": "SFD's lead of the semantic clock, in [0, 1)."})
    shapes: str = field(
        default="",
        metadata={"help": "Learned: convex|concave per space (convex = clean first); default semantic/coarse convex."},
    )
    correction: bool = field(
        default=True,
        metadata={"choices": {"on": True, "off": False}, "help": "Learned: the schedule-corrected loss weight."},
    )
    clip: float = 10.0
    kinetic: float = field(default=1e-3, metadata={"help": "Weight of the kinetic-energy term (schedule updates)."})
    semantic_weight: float = 2.0
    probe_start: float = field(default=0.2, metadata={"help": "Share of training before the probe starts."})
    probe_share: float = field(default=0.03, metadata={"help": "Share of training steps that update the schedule."})
    probe_batch: int = field(default=32, metadata={"help": "Examples per schedule update."})
    schedule_lr_scale: float = field(default=100.0, metadata={"help": "Schedule lr = training lr x this."})
    bins: int = 16
    init_scale: float = -6.0
    semantic_dims: int = 8
    coarse_size: int = 4
    feature_net: str = field(
        default="", metadata={"help": "feature_net checkpoint for the semantic space (default: feature-net-DATA)."}
    )
    image_size: int = field(default=8, metadata={"cli": False})  # from the data
    channels: int = field(default=1, metadata={"cli": False})  # from the data
    n_classes: int = field(default=0, metadata={"cli": False})  # from the data and --class-conditional
    label_classes: int = field(default=10, metadata={"cli": False})  # from the data (the read-out's classes)
    width: int = 64
    depth: int = 4
    n_heads: int = 4
    patch_size: int = 2
    class_dropout: float = 0.1

    def validate(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        kinds = self.space_kinds()
        check(len(kinds) >= 2, f"spaces must name at least two spaces, got {self.spaces!r}")
        for kind in kinds:
            check_choice("spaces", kind, SPACE_KINDS)
        check(len(set(kinds)) == len(kinds), f"spaces must not repeat, got {self.spaces!r}")
        check(0 <= self.delta < 1, f"delta must be in [0, 1), got {self.delta!r}")
        check(self.schedule != "sfd" or sum(self.ahead()) not in (0, len(kinds)),
              f"sfd needs a semantic or coarse space and one that is not, got {self.spaces!r}")  # fmt: skip
        self.schedule_shapes()
        check(0 < self.clip <= 1e4, f"clip must be in (0, 10000], got {self.clip!r}")
        check(0 <= self.kinetic <= 100, f"kinetic must be in [0, 100], got {self.kinetic!r}")
        check(0 < self.semantic_weight <= 100, f"semantic_weight must be in (0, 100], got {self.semantic_weight!r}")
        check(0 <= self.probe_start < 1, f"probe_start must be in [0, 1), got {self.probe_start!r}")
        check(0 < self.probe_share <= 1 - self.probe_start,
              f"probe_share must be in (0, 1 - probe_start], got {self.probe_share!r}")  # fmt: skip
        check(1 <= self.probe_batch <= 1 << 20, f"probe_batch must be >= 1, got {self.probe_batch!r}")
        check(
            0 < self.schedule_lr_scale <= 1e4, f"schedule_lr_scale must be in (0, 10000], got {self.schedule_lr_scale}"
        )
        check(1 <= self.bins <= 1024, f"bins must be in 1..1024, got {self.bins!r}")
        check(1 <= self.semantic_dims <= 64, f"semantic_dims must be in 1..64, got {self.semantic_dims!r}")
        check(1 <= self.coarse_size <= self.image_size and self.image_size % self.coarse_size == 0,
              f"coarse_size must divide image_size {self.image_size}, got {self.coarse_size!r}")  # fmt: skip
        check(self.image_size % self.patch_size == 0,
              f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")  # fmt: skip
        check(0 <= self.class_dropout <= 1, f"class_dropout must be in [0, 1], got {self.class_dropout}")
        check(1 <= self.label_classes <= 10**6, f"label_classes must be >= 1, got {self.label_classes!r}")
        self.model_config()

    def space_kinds(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.spaces.split(",") if s.strip())

    def ahead(self) -> tuple[bool, ...]:
        return tuple(kind in AHEAD for kind in self.space_kinds())

    def schedule_shapes(self) -> tuple[str, ...]:
        """Per space ``convex`` / ``concave`` for a learned schedule."""
        kinds = self.space_kinds()
        if not self.shapes:
            return tuple("convex" if a else "concave" for a in self.ahead())
        shapes = tuple(s.strip() for s in self.shapes.split(","))
        check(len(shapes) == len(kinds), f"shapes names {len(shapes)} spaces but spaces has {len(kinds)}")
        for shape in shapes:
            check_choice("shapes", shape, ("convex", "concave"))
        return shapes

    def spaces_module(self) -> RepresentationSpaces:
        return RepresentationSpaces(
            self.space_kinds(),
            self.channels,
            self.image_size,
            self.label_classes,
            patch=self.patch_size,
            coarse=self.coarse_size,
            semantic_dims=self.semantic_dims,
        )

    def space_shapes(self) -> list[tuple[int, int]]:
        """``(tokens, dim)`` per space (as :class:`~interp.models.spaces.RepresentationSpaces` builds them)."""
        c, size, p = self.channels, self.image_size, self.patch_size
        table = {
            "pixels": ((size // p) ** 2, c * p * p),
            "coarse": (self.coarse_size**2, c),
            "semantic": (1, self.semantic_dims),
        }
        return [table[kind] for kind in self.space_kinds()]

    def model_config(self) -> MultiSpaceDiTConfig:
        shapes = self.space_shapes()
        return MultiSpaceDiTConfig(
            shapes=",".join(f"{n}x{d}" for n, d in shapes),
            width=self.width,
            depth=self.depth,
            n_heads=self.n_heads,
            n_classes=self.n_classes,
        )


class LWD(ImageData):
    """Components: ``model`` (the multi-space DiT), ``spaces`` (frozen: the feature net and the semantic
    projection), and for a learned schedule ``schedule``."""

    frozen = ("spaces",)

    def __init__(self, cfg: LWDConfig):
        self.cfg = cfg
        self.spaces = cfg.spaces_module()
        self.model = MultiSpaceDiT(cfg.model_config())
        self.learned = (
            LearnedSchedule(
                LearnedScheduleConfig(shapes=cfg.schedule_shapes(), bins=cfg.bins, init_scale=cfg.init_scale)
            )
            if cfg.schedule == "learned"
            else None
        )
        self.names = list(cfg.space_kinds())
        self.weights = torch.tensor([cfg.semantic_weight if k == "semantic" else 1.0 for k in self.names])

    # --- components and schedule ------------------------------------------------------------------
    def components(self) -> dict[str, torch.nn.Module]:
        parts = {"model": self.model, "spaces": self.spaces}
        if self.learned is not None:
            parts["schedule"] = self.learned
        return parts

    def set_component(self, name: str, module: torch.nn.Module) -> None:
        setattr(self, {"schedule": "learned"}.get(name, name), module)

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    @property
    def schedule(self) -> Schedule:
        """The schedule the model was trained on (a learned one is checked on a fine grid first)."""
        if self.learned is not None:
            check_schedule(self.learned)
            return self.learned
        if self.cfg.schedule == "sfd":
            return SFD(self.cfg.delta, self.cfg.ahead())
        return Synchronous(len(self.names))

    # --- data --------------------------------------------------------------------------------------
    def fit_spaces(self) -> None:
        """Fit the semantic projection on the training images with the feature net (once)."""
        if bool(self.spaces.fitted):
            return
        from interp.checkpoints import find_shipped, load_checkpoint
        from interp.errors import CheckpointError

        try:
            path = Path(self.cfg.feature_net) if self.cfg.feature_net else find_shipped(f"feature-net-{self.cfg.data}")
        except CheckpointError as exc:
            raise DataError(
                f"no feature network for data {self.cfg.data!r} ({exc}); train one with "
                f"`interp train feature-net --data {self.cfg.data}` and pass it with --feature-net"
            ) from exc
        network = load_checkpoint(path, expected_kind=FeatureNetwork.kind)
        if network.cfg.data != self.cfg.data:
            raise DataError(f"feature network {path} was trained on {network.cfg.data!r}, not {self.cfg.data!r}")
        self.spaces.fit(network.model, *self.data("train"))

    def train_dataset(self, seed: int) -> datasets.Dataset:
        self.fit_spaces()
        ds = image_dataset(self.cfg.data, "train")
        self.check_images(torch.as_tensor(ds[:1]["image"]), f"dataset {self.cfg.data!r}")
        return ds

    def collate(self, rows: dict) -> dict[str, torch.Tensor]:
        images = torch.as_tensor(rows["image"])
        chunks = [self.spaces.encode(images[i : i + 1024]) for i in range(0, len(images), 1024)]
        out = {f"x{k}": torch.cat([c[k] for c in chunks]) for k in range(len(self.names))}
        return {**out, "label": torch.as_tensor(rows["label"])}

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        B = len(batch["label"])
        out = {"tau": torch.rand(B, generator=generator)}
        for k in range(len(self.names)):
            out[f"x{k}"] = batch[f"x{k}"]
            out[f"eps{k}"] = torch.randn(batch[f"x{k}"].shape, generator=generator)
        drop = torch.rand(B, generator=generator) < self.cfg.class_dropout
        out["y"] = torch.where(drop, torch.full_like(batch["label"], self.cfg.n_classes), batch["label"])
        return out

    # --- training ----------------------------------------------------------------------------------
    def denoising_terms(
        self, model: torch.nn.Module, p: dict[str, torch.Tensor], t: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per space ``λ_k · weight_k · mean ‖v̂_k − (ε_k − x_k)‖²`` ``[B]`` at noise levels ``t [B, K]``."""
        xs = [p[f"x{k}"] for k in range(len(self.names))]
        eps = [p[f"eps{k}"] for k in range(len(self.names))]
        noisy = [
            (1 - t[:, k, None, None]) * x + t[:, k, None, None] * e
            for k, (x, e) in enumerate(zip(xs, eps, strict=True))
        ]
        preds = model(noisy, t, p["y"] if self.cfg.n_classes else None)
        terms = {}
        for k, name in enumerate(self.names):
            mse = (preds[k] - (eps[k] - xs[k])).pow(2).flatten(1).mean(1)
            terms[name] = self.weights[k] * weight[:, k] * mse
        return terms

    def loss_weight(self, schedule: Schedule, tau: torch.Tensor) -> torch.Tensor:
        """``[B, K]``: the schedule correction for a learned schedule with ``correction``, else 1."""
        if self.learned is not None and self.cfg.correction:
            return corrected_weight(schedule, tau, self.cfg.clip)
        return torch.ones(len(tau), len(self.names))

    def loss(self, model: torch.nn.Module, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        schedule = self.schedule if self.learned is None else self.learned
        with torch.no_grad():
            t, weight = schedule.clocks(p["tau"]), self.loss_weight(schedule, p["tau"])
        return self.denoising_terms(model, p, t, weight)

    def probe_active(self, step: int, steps: int) -> bool:
        start = int(self.cfg.probe_start * steps)
        return start <= step < start + max(1, round(self.cfg.probe_share * steps))

    def schedule_loss(self, modules: dict, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The probe's schedule update: the corrected denoising loss and the kinetic term, as functions of
        the schedule (the denoiser's weights are held fixed)."""
        q = {k: v[: self.cfg.probe_batch] for k, v in p.items()}
        schedule, model = modules["schedule"], modules["model"]
        t, rates = schedule.clocks(q["tau"]), schedule.rates(q["tau"])
        weight = rates.clamp(max=self.cfg.clip) if self.cfg.correction else torch.ones_like(rates)
        model.requires_grad_(False)  # the graph reaches the schedule through x_t and t only
        try:
            terms = self.denoising_terms(model, q, t, weight)
        finally:
            model.requires_grad_(True)
        xs = [q[f"x{k}"] for k in range(len(self.names))]
        eps = [q[f"eps{k}"] for k in range(len(self.names))]
        return {"denoise": sum(terms.values()), "kinetic": self.cfg.kinetic * kinetic_energy(rates, xs, eps)}

    def schedule_row(self) -> dict[str, float]:
        """The learned curves at a few global times (logged after each probe update)."""
        with torch.no_grad():
            t = self.learned.clocks(torch.tensor(LOGGED_TAUS))  # [3, K]
        return {f"phi/{name}@{tau}": round(float(t[i, k]), 6) for i, tau in enumerate(LOGGED_TAUS)
                for k, name in enumerate(self.names)}  # fmt: skip

    def phases(self) -> list[Phase]:
        plan = [Phase("model", ("model",), lambda modules, p: self.loss(modules["model"], p))]
        if self.learned is not None:
            plan.append(
                Phase(
                    "schedule",
                    ("schedule",),
                    self.schedule_loss,
                    lr_scale=self.cfg.schedule_lr_scale,
                    active=self.probe_active,
                    log=self.schedule_row,
                )
            )
        return plan

    # --- sampling ----------------------------------------------------------------------------------
    def default_sampler(self, steps: int = 50) -> SpacesSamplerConfig:
        return SpacesSamplerConfig(name="tau-euler", steps=steps)

    def sampling(
        self, n: int, sampler: SpacesSamplerConfig | None = None, seed: int = 0, labels: torch.Tensor | None = None
    ):
        """Start sampling ``n`` images: the labels used (``[n]`` or None) and the lazy iterator of
        :class:`~interp.samplers.spaces.SpacesStep` s."""
        if n < 1:
            raise DataError(f"n must be >= 1, got {n}")
        if labels is None and self.cfg.n_classes:
            labels = torch.arange(n) % self.cfg.n_classes
        cfg = sampler or self.default_sampler()
        schedule = self.schedule
        self.model.eval()

        def predict(states, t):
            return self.model(states, t, labels if self.cfg.n_classes else None)

        steps = sampler_class(cfg.name, SpacesSamplerConfig)(
            predict,
            schedule.clocks,
            cfg,
            self.names,
            self.spaces.shapes,
            n,
            torch.Generator().manual_seed(seed),
            self.spaces.picture,
        )
        return labels, run(steps)

    def sample(
        self, n: int, sampler: SpacesSamplerConfig | None = None, seed: int = 0, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, list[SpacesStep]]:
        labels, steps = self.sampling(n, sampler, seed, labels)
        return labels, list(steps)


def derive_config(options: dict) -> dict:
    """Image size, channels and classes from the data; ``n_classes`` only when ``class_conditional``."""
    options = dict(options)
    c, h, _, classes = image_shape(options.get("data", LWDConfig.data))
    conditional = options.pop("class_conditional", False)
    return {**options, "image_size": h, "channels": c, "label_classes": classes,
            "n_classes": classes if conditional else 0}  # fmt: skip


def lwd_train_eval(method: LWD, seed: int):
    """``--eval-every``: the (uncorrected) denoising loss per space on up to 512 held-out images."""
    images, labels = method.data("heldout")
    batch = method.collate({"image": images[:512], "label": labels[:512]})
    prepared = method.prepare(batch, torch.Generator().manual_seed(seed))

    def eval_fn(m: LWD, step: int) -> dict[str, float]:
        with torch.no_grad():
            t = m.schedule.clocks(prepared["tau"])
            terms = m.denoising_terms(m.model, prepared, t, torch.ones_like(t))
        return {f"heldout/{k}": float(v.mean()) for k, v in terms.items()}

    return eval_fn


register(
    MethodSpec(
        kind="lwd",
        method=LWD,
        config=LWDConfig,
        summary="Train LWD: flow matching over several representation spaces on their own clocks "
        "(--schedule sync | sfd | learned).",
        sampler_config=SpacesSamplerConfig,
        samplers=("tau-euler", "tau-heun"),
        default_sampler=lambda method: method.default_sampler(),
        capture="blocks.*.hook_resid_post",
        train_defaults={"lr": 2e-3},
        train_options=(CliOption("class_conditional", bool, False, "Condition on the dataset's labels."),),
        derive=derive_config,
        train_eval=lwd_train_eval,
        sample=sample_cli,
        trace_run=trace_cli,
        evaluate="interp.evaluation:evaluate_images_cli",
        report="interp.reports.lwd:lwd_report",
    )
)
