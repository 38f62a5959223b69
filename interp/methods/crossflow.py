"""CrossFlow (arXiv 2606.19970, PKU/Tencent/Fudan; no code released: our reconstruction): one network maps a
noisy latent straight to a pixel image, so generation is one function evaluation and needs no decoder.

- Latents: an encoder E (the KL autoencoder of ``interp train autoencoder``) gives z, normalised by the
  scalar ``latent_mean`` / ``latent_std`` of its training latents. ``--encoder frozen`` (default): a
  pretrained autoencoder (``--autoencoder DIR``), frozen, z = its posterior mean. ``--encoder joint``: the
  encoder is trained with G (from ``--autoencoder`` weights if given, else from scratch), z = mean + σ·ε,
  plus ``kl_weight`` × KL(q(z|x) ‖ N(0, I)); its decoder half is never used.
- Path: z_t = (1 − t)z + tε (t = 1 noise, :mod:`interp.processes.continuous`'s flow convention), t ~ U(0, 1)
  replaced by exactly 1 with probability ``p_one`` (generation starts there).
- Generator G(z_t, t, y) → image ``[B, C, H, W]``: a DiT over the latent grid (one token per latent
  position), each token's output a (H / h)² pixel patch, so the output is at pixel resolution.
- Loss ("velocity-free": the prediction is the image, not a velocity): ``l1_weight`` · |G − x| +
  ``perceptual_weight`` · Σ_l |φ_l(G) − φ_l(x)| over the activations of the frozen feature net (a
  ``feature_net`` checkpoint, default the shipped ``feature-net-DATA``) + ``adv_weight`` · hinge GAN
  (−D(G)); the discriminator D (a small conv net, projection-conditioned on the class) minimises
  relu(1 − D(x)) + relu(1 + D(G)) + ``r1_weight``/2 · ‖∇ₓD(x)‖² (R1 on real images).
- Training: two :class:`~interp.train.Phase` s of the shared trainer each step, ``discriminator`` then
  ``generator`` (the discriminator's is skipped when ``adv_weight`` is 0); every term is logged
  (``generator/l1``, ``generator/perceptual``, ``generator/adv``, ``discriminator/real`` ...).
- Generation: G(ε, 1, y), NFE = 1 (the ``one-step`` sampler; ``--steps 20`` is refused). Decoder mode:
  G(z, 0, y) on latents of the same frozen autoencoder (:meth:`CrossFlow.decode`,
  :func:`check_same_latents`), e.g. those a latent-flow model (baseline A) generates.

Components: ``model`` (G), ``discriminator``, ``autoencoder`` (frozen unless joint) and ``feature_net``
(frozen); every one is saved, so a checkpoint works alone. Hooks: G has ``hook_embed``,
``blocks.{i}.hook_resid_post`` (and the DiT block's other hooks), ``hook_patches``, ``hook_image``; D has
``blocks.{i}.hook_out``, ``hook_features``, ``hook_logit``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from torch import nn

from interp.config import Config, check, check_choice
from interp.data.images import image_dataset, image_shape
from interp.errors import CheckpointError, ConfigError, DataError
from interp.methods.feature_net import FeatureNetwork
from interp.methods.image_diffusion import ImageData, sample_cli, trace_cli
from interp.methods.latent_flow import AutoencoderShape, LatentSpace, autoencoder_fields
from interp.models.autoencoder import Autoencoder
from interp.models.crossflow import Discriminator, GeneratorConfig, PixelGenerator
from interp.models.feature_net import FeatureNet, perceptual_distance
from interp.registry import CliOption, MethodSpec, register
from interp.samplers.crossflow import OneStepSamplerConfig, one_step
from interp.steps import ImageStep
from interp.train import Phase

ENCODERS = ("frozen", "joint")
AE_DEFAULTS = {"ae_width": 32, "latent_channels": 4, "levels": 2}  # an encoder trained jointly from scratch


@dataclass
class CrossFlowConfig(AutoencoderShape, Config):
    data: str = field(default="digits", metadata={"help": "Image dataset (as for `interp train image`)."})
    autoencoder: str = field(
        default="",
        metadata={"help": "Pretrained autoencoder (`interp train autoencoder`, same data): required with --encoder "
                  "frozen; with joint, its weights start the encoder."},
    )  # fmt: skip
    encoder: str = field(default="frozen", metadata={"help": "frozen (pretrained, fixed) | joint (trained with G)"})
    feature_net: str = field(
        default="", metadata={"help": "feature_net checkpoint of the perceptual loss (default: feature-net-DATA)."}
    )
    image_size: int = field(default=8, metadata={"cli": False})  # from the data
    channels: int = field(default=1, metadata={"cli": False})  # from the data
    n_classes: int = field(default=0, metadata={"cli": False})  # from the data and --class-conditional
    label_classes: int = field(default=10, metadata={"cli": False})  # from the data (the feature net's classes)
    ae_width: int | None = field(default=None, metadata={"help": "Encoder width (default: the autoencoder's, or 32)."})
    latent_channels: int | None = field(default=None, metadata={"help": "Z (default: the autoencoder's, or 4)."})
    levels: int | None = field(default=None, metadata={"help": "Downsamplings (default: the autoencoder's, or 2)."})
    latent_mean: float = field(default=0.0, metadata={"cli": False})  # from the autoencoder
    latent_std: float = field(default=1.0, metadata={"cli": False})
    kl_weight: float = field(default=1e-4, metadata={"help": "KL weight of a jointly trained encoder."})
    width: int = 64
    depth: int = 4
    n_heads: int = 4
    disc_width: int = 32
    l1_weight: float = 1.0
    perceptual_weight: float = field(default=1.0, metadata={"help": "0: the ablation without the perceptual term."})
    adv_weight: float = field(default=0.1, metadata={"help": "0: the ablation without the adversarial term."})
    r1_weight: float = field(default=1.0, metadata={"help": "γ of the R1 penalty γ/2 ‖∇ₓD(x)‖² on real images."})
    p_one: float = field(default=0.25, metadata={"help": "Extra probability of drawing t = 1 (pure noise)."})
    disc_lr_scale: float = 1.0
    class_dropout: float = 0.1

    def validate(self) -> None:
        check_choice("encoder", self.encoder, ENCODERS)
        for name in ("ae_width", "latent_channels", "levels"):
            check(getattr(self, name) is not None, f"{name} is unset (it comes from the autoencoder)")
        for name in ("kl_weight", "l1_weight", "perceptual_weight", "adv_weight", "r1_weight"):
            value = getattr(self, name)
            check(0 <= value <= 1e4, f"{name} must be in [0, 10000], got {value!r}")
        check(self.l1_weight + self.perceptual_weight + self.adv_weight > 0, "at least one loss weight must be > 0")
        check(0 <= self.p_one <= 1, f"p_one must be in [0, 1], got {self.p_one!r}")
        check(0 < self.disc_lr_scale <= 1e4, f"disc_lr_scale must be in (0, 10000], got {self.disc_lr_scale!r}")
        check(0 <= self.class_dropout <= 1, f"class_dropout must be in [0, 1], got {self.class_dropout}")
        check(self.latent_std > 0, f"latent_std must be > 0, got {self.latent_std!r}")
        check(1 <= self.disc_width <= 4096, f"disc_width must be in 1..4096, got {self.disc_width!r}")
        check(1 <= self.label_classes <= 10**6, f"label_classes must be >= 1, got {self.label_classes!r}")
        self.generator_config()

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            latent_channels=self.latent_channels,
            latent_size=self.autoencoder_config().image_size // 2**self.levels,
            image_size=self.image_size,
            channels=self.channels,
            n_classes=self.n_classes,
            width=self.width,
            depth=self.depth,
            n_heads=self.n_heads,
        )


class CrossFlow(LatentSpace, ImageData):
    """See the module docstring. ``model`` is G."""

    def __init__(self, cfg: CrossFlowConfig):
        self.cfg = cfg
        self.model = PixelGenerator(cfg.generator_config())
        self.discriminator = Discriminator(cfg.channels, cfg.image_size, cfg.disc_width, cfg.n_classes)
        self.autoencoder = Autoencoder(cfg.autoencoder_config())
        self.feature_net = FeatureNet(cfg.channels, cfg.label_classes)
        self.frozen = ("autoencoder", "feature_net") if cfg.encoder == "frozen" else ("feature_net",)

    def components(self) -> dict[str, nn.Module]:
        return {
            "model": self.model,
            "discriminator": self.discriminator,
            "autoencoder": self.autoencoder,
            "feature_net": self.feature_net,
        }

    def set_component(self, name: str, module: nn.Module) -> None:
        setattr(self, name, module)

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    # --- data ------------------------------------------------------------------------------------------
    def load_feature_net(self) -> None:
        """Copy the perceptual feature net's weights (``cfg.feature_net``, or the shipped one for the data)."""
        from interp.checkpoints import find_shipped, load_checkpoint

        try:
            path = Path(self.cfg.feature_net) if self.cfg.feature_net else find_shipped(f"feature-net-{self.cfg.data}")
        except CheckpointError as exc:
            raise DataError(f"no feature network for the perceptual loss on {self.cfg.data!r} ({exc}); "
                            "pass one with --feature-net or set --perceptual-weight 0") from exc  # fmt: skip
        network = load_checkpoint(path, expected_kind=FeatureNetwork.kind)
        if network.cfg.data != self.cfg.data:
            raise DataError(f"feature network {path} was trained on {network.cfg.data!r}, not {self.cfg.data!r}")
        if (network.cfg.channels, network.cfg.n_classes, network.cfg.dim) != (
            self.cfg.channels,
            self.cfg.label_classes,
            64,
        ):
            raise DataError(f"feature network {path} has another shape than this data's ({self.cfg.channels} channels, "
                            f"{self.cfg.label_classes} classes, 64 features)")  # fmt: skip
        self.feature_net.load_state_dict(network.model.state_dict())

    def train_dataset(self, seed: int) -> datasets.Dataset:
        if self.cfg.autoencoder:
            self.load_autoencoder_weights()
        if self.cfg.perceptual_weight > 0:
            self.load_feature_net()
        ds = image_dataset(self.cfg.data, "train")
        self.check_images(torch.as_tensor(ds[:1]["image"]), f"dataset {self.cfg.data!r}")
        return ds

    def collate(self, rows: dict) -> dict[str, torch.Tensor]:
        """``image`` ``[N, C, H, W]``, ``label`` ``[N]``, and for a frozen encoder its latents ``z`` ``[N, Z, h, w]``."""
        images = torch.as_tensor(rows["image"])
        out = {"image": images, "label": torch.as_tensor(rows["label"])}
        if self.cfg.encoder == "frozen":
            out["z"] = self.encode(images)
        return out

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Adds ``t`` ``[B]`` (U(0, 1), exactly 1 with probability ``p_one``), ``eps`` (latent noise), ``y``
        (labels with class dropout; G's input) and for a joint encoder ``eps_z`` (its posterior draw)."""
        x = batch["image"]
        B, shape = len(x), (len(x), *self.latent_shape())
        t = torch.rand(B, generator=generator)
        t = torch.where(torch.rand(B, generator=generator) < self.cfg.p_one, torch.ones_like(t), t)
        out = {**batch, "t": t, "eps": torch.randn(shape, generator=generator)}
        drop = torch.rand(B, generator=generator) < self.cfg.class_dropout
        out["y"] = torch.where(drop, torch.full_like(batch["label"], self.cfg.n_classes), batch["label"])
        if self.cfg.encoder == "joint":
            out["eps_z"] = torch.randn(shape, generator=generator)
        return out

    # --- training --------------------------------------------------------------------------------------
    def latents(self, modules: dict, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised z ``[B, Z, h, w]`` of the batch, and the KL ``[B]`` of a jointly trained encoder (else None)."""
        if self.cfg.encoder == "frozen":
            return p["z"], None
        mean, logvar = modules["autoencoder"].encode(p["image"])
        z = mean + (0.5 * logvar).exp() * p["eps_z"]
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).mean(1)
        return (z - self.cfg.latent_mean) / self.cfg.latent_std, kl

    def predict(self, modules: dict, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G(z_t, t, y) ``[B, C, H, W]`` on the batch's path point, and the encoder's KL (or None)."""
        z, kl = self.latents(modules, p)
        t = p["t"][:, None, None, None]
        z_t = (1 - t) * z + t * p["eps"]
        return modules["model"](z_t, p["t"], p["y"] if self.cfg.n_classes else None), kl

    def label(self, p: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return p["label"] if self.cfg.n_classes else None

    def image_terms(
        self, modules: dict, fake: torch.Tensor, x: torch.Tensor, label: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The weighted pixel-space terms ``[B]`` of images ``fake`` against ``x`` ``[B, C, H, W]``: ``l1``,
        ``perceptual``, ``adv`` (those with weight > 0)."""
        terms = {"l1": self.cfg.l1_weight * (fake - x).abs().flatten(1).mean(1)}
        if self.cfg.perceptual_weight > 0:
            terms["perceptual"] = self.cfg.perceptual_weight * perceptual_distance(modules["feature_net"], fake, x)
        if self.cfg.adv_weight > 0:
            terms["adv"] = -self.cfg.adv_weight * modules["discriminator"](fake, label)
        return terms

    def generator_loss(self, modules: dict, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example terms ``[B]``: :meth:`image_terms` of G(z_t, t, y), and ``kl`` for a joint encoder."""
        fake, kl = self.predict(modules, p)
        terms = self.image_terms(modules, fake, p["image"], self.label(p))
        if kl is not None:
            terms["kl"] = self.cfg.kl_weight * kl
        return terms

    def discriminator_loss(self, modules: dict, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example hinge terms ``real`` / ``fake`` and the R1 penalty ``r1`` on real images ``[B]``."""
        with torch.no_grad():
            fake, _ = self.predict(modules, p)
        real = p["image"].detach().requires_grad_(True)
        d_real = modules["discriminator"](real, self.label(p))
        d_fake = modules["discriminator"](fake, self.label(p))
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        return {
            "real": F.relu(1 - d_real),
            "fake": F.relu(1 + d_fake),
            "r1": 0.5 * self.cfg.r1_weight * grad.pow(2).flatten(1).sum(1),
        }

    def phases(self) -> list[Phase]:
        generator = ("model",) if self.cfg.encoder == "frozen" else ("model", "autoencoder")
        return [
            Phase(
                "discriminator",
                ("discriminator",),
                self.discriminator_loss,
                lr_scale=self.cfg.disc_lr_scale,
                betas=(0.5, 0.99),
                active=lambda step, steps: self.cfg.adv_weight > 0,
            ),
            Phase("generator", generator, self.generator_loss, betas=(0.5, 0.99)),
        ]

    # --- generation and decoding -----------------------------------------------------------------------
    def default_sampler(self) -> OneStepSamplerConfig:
        return OneStepSamplerConfig()

    def labels_for(self, n: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.cfg.n_classes:
            return None
        return torch.arange(n) % self.cfg.n_classes if labels is None else labels

    def sampling(
        self, n: int, sampler: OneStepSamplerConfig | None = None, seed: int = 0, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, Iterator[ImageStep]]:
        """``n`` images G(ε, 1, y) (clamped to [-1, 1]) in one step: the labels and the one-step iterator."""
        if n < 1:
            raise DataError(f"n must be >= 1, got {n}")
        labels = self.labels_for(n, labels)
        self.model.eval()

        def generate(eps: torch.Tensor) -> torch.Tensor:
            return self.model(eps, torch.ones(n), labels).clamp(-1, 1)

        cfg = sampler or self.default_sampler()
        return labels, one_step(generate, cfg, (n, *self.latent_shape()), torch.Generator().manual_seed(seed))

    def sample(
        self, n: int, sampler: OneStepSamplerConfig | None = None, seed: int = 0, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, list[ImageStep]]:
        labels, steps = self.sampling(n, sampler, seed, labels)
        return labels, list(steps)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 512) -> torch.Tensor:
        """Decoder mode: G(z, 0, y) ``[N, C, H, W]`` (clamped) of normalised latents ``z [N, Z, h, w]`` (labels
        ``[N]`` or None: the "no class" token)."""
        self.check_latents(z)
        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(z), batch_size):
                chunk = z[i : i + batch_size]
                y = None if labels is None or not self.cfg.n_classes else labels[i : i + batch_size]
                out.append(self.model(chunk, torch.zeros(len(chunk)), y).clamp(-1, 1))
        return torch.cat(out)


def check_same_latents(method: CrossFlow, baseline: LatentSpace) -> None:
    """Refuse (one line) to decode ``baseline``'s latents with ``method`` unless both use the same frozen
    autoencoder: same data, latent shape, normalisation and encoder weights."""
    where = getattr(baseline, "checkpoint_path", "the baseline")
    if method.cfg.encoder != "frozen":
        raise DataError("this CrossFlow trained its encoder jointly: its latent space is its own, not the baseline's")
    if method.cfg.data != baseline.cfg.data:
        raise DataError(f"{where} models {baseline.cfg.data!r}, this CrossFlow {method.cfg.data!r}")
    if method.latent_shape() != baseline.latent_shape():
        raise DataError(
            f"{where} has latents {list(baseline.latent_shape())}, this CrossFlow {list(method.latent_shape())}"
        )
    same_scale = (method.cfg.latent_mean, method.cfg.latent_std) == (baseline.cfg.latent_mean, baseline.cfg.latent_std)
    mine, theirs = method.autoencoder.state_dict(), baseline.autoencoder.state_dict()
    if not same_scale or any(not torch.equal(mine[k], theirs[k]) for k in mine):
        raise DataError(f"{where} uses another autoencoder than this CrossFlow; decoder mode needs the same one")


def derive_config(options: dict) -> dict:
    """Sizes from the data and (when given) the autoencoder, whose latent shape must match what was asked."""
    options = dict(options)
    data = options.get("data", CrossFlowConfig.data)
    c, h, _, classes = image_shape(data)
    conditional = options.pop("class_conditional", True)
    sizes = {k: options.get(k) for k in AE_DEFAULTS}
    if options.get("autoencoder"):
        fields = autoencoder_fields(options["autoencoder"], data, expected=sizes)
    elif options.get("encoder", CrossFlowConfig.encoder) == "frozen":
        raise ConfigError(
            "--encoder frozen needs --autoencoder DIR (a pretrained `interp train autoencoder` checkpoint of the "
            "same data); or train the encoder with G: --encoder joint"
        )
    else:
        fields = {k: AE_DEFAULTS[k] if v is None else v for k, v in sizes.items()}
    return {**options, **fields, "image_size": h, "channels": c, "label_classes": classes,
            "n_classes": classes if conditional else 0}  # fmt: skip


register(
    MethodSpec(
        kind="crossflow",
        method=CrossFlow,
        config=CrossFlowConfig,
        summary="Train CrossFlow: one network from noisy latents straight to pixels (L1 + perceptual + hinge GAN "
        "with R1), generating in one evaluation; --autoencoder DIR for its latent space.",
        sampler_config=OneStepSamplerConfig,
        samplers=("one-step",),
        default_sampler=lambda method: method.default_sampler(),
        capture="blocks.*.hook_resid_post",
        train_defaults={"lr": 1e-3},
        train_options=(CliOption("class_conditional", bool, True, "Condition on the dataset's labels."),),
        derive=derive_config,
        sample=sample_cli,
        trace_run=trace_cli,
        evaluate="interp.analyses.crossflow:evaluate_cli",
        report="interp.reports.crossflow:crossflow_report",
    )
)
