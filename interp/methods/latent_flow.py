"""Latent flow matching (CrossFlow's baseline A): a DiT denoiser over the latents of a trained KL
autoencoder (``interp train autoencoder``), decoded to pixels by that autoencoder's decoder.

``interp train latent-flow --autoencoder DIR``: the autoencoder is a frozen component (``autoencoder``),
its weights copied into the checkpoint so that the checkpoint works alone. An autoencoder trained on
another dataset, or of another latent shape than the config asks for, is refused. Latents are the
encoder's posterior means ``[N, Z, h, w]``, normalised by one scalar mean and standard deviation measured on
the training split when the config is made (``latent_mean`` / ``latent_std``, as latent diffusion scales
its latents); the denoiser learns flow matching on them (x_t = (1 − t)z + tε, t = 1 noise). Sampling runs
Euler or Heun over latents at any step count and yields
:class:`~interp.samplers.crossflow.LatentImageStep` s whose ``x`` is the decoded image.

:func:`load_autoencoder` and :func:`latent_stats` are shared with :mod:`interp.methods.crossflow`, and
:func:`evaluations_per_sample` counts the network calls one sample costs (``interp eval`` reports it,
:func:`interp.analyses.crossflow.evaluate_cli`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets
import torch

from interp.config import Config, check
from interp.data.images import image_shape, image_tensors
from interp.errors import ConfigError, DataError
from interp.methods.autoencoder import AutoencoderMethod
from interp.methods.image_diffusion import ImageDiffusion, sample_cli, trace_cli
from interp.models.autoencoder import Autoencoder, AutoencoderConfig
from interp.models.image import ImageModelConfig
from interp.registry import CliOption, MethodSpec, register
from interp.samplers.crossflow import LatentImageStep, decoded_steps
from interp.samplers.image import ImageSamplerConfig, sample_images

ENCODE_BATCH = 1024


def load_autoencoder(path: str, data: str, expected: AutoencoderConfig | None = None) -> AutoencoderMethod:
    """The ``autoencoder`` checkpoint at ``path``, refused (:class:`DataError` / :class:`ConfigError`, one line)
    when it was trained on another dataset than ``data`` or differs from ``expected`` (its latent shape, or
    any other size)."""
    from interp.checkpoints import load_checkpoint

    ae = load_checkpoint(path, expected_kind=AutoencoderMethod.kind)
    if ae.cfg.data != data:
        raise DataError(f"autoencoder {path} was trained on {ae.cfg.data!r}, not {data!r}; train one on {data!r}")
    if expected is not None and ae.cfg.model_config() != expected:
        side = expected.image_size // 2**expected.levels
        got, want = ae.model.latent_shape(), (expected.latent_channels, side, side)
        if got != want:
            raise ConfigError(
                f"autoencoder {path} has latents {list(got)} (Z, h, w), this model expects {list(want)}; "
                "use an autoencoder of that latent shape"
            )
        raise ConfigError(f"autoencoder {path} is {ae.cfg.model_config()}, this model expects {expected}")
    return ae


def posterior_means(ae: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The encoder's means ``[N, Z, h, w]`` of ``images [N, C, H, W]`` (batched, no gradients)."""
    with torch.no_grad():
        return torch.cat([ae.encode(images[i : i + ENCODE_BATCH])[0] for i in range(0, len(images), ENCODE_BATCH)])


def latent_stats(ae: AutoencoderMethod, data: str) -> tuple[float, float]:
    """Scalar mean and standard deviation of the posterior means of ``data``'s training images."""
    z = posterior_means(ae.model, image_tensors(data, "train")[0])
    return round(float(z.mean()), 6), round(float(z.std()), 6)


def autoencoder_fields(path: str, data: str, expected: dict | None = None) -> dict:
    """Config fields that follow from the autoencoder at ``path`` (its sizes and latent statistics);
    ``expected`` (``{field: value}`` the user gave) must agree with it."""
    ae = load_autoencoder(path, data)
    sizes = {"ae_width": ae.cfg.width, "latent_channels": ae.cfg.latent_channels, "levels": ae.cfg.levels}
    for name, value in (expected or {}).items():
        if name in sizes and value is not None and value != sizes[name]:
            side = ae.cfg.image_size // 2**ae.cfg.levels
            raise ConfigError(
                f"autoencoder {path} has {name} = {sizes[name]} (latents {[ae.cfg.latent_channels, side, side]}), "
                f"but {value} was asked for; drop the option or use a matching autoencoder"
            )
    mean, std = latent_stats(ae, data)
    return {**sizes, "latent_mean": mean, "latent_std": std}


class LatentSpace:
    """What a method with an ``autoencoder`` component and ``latent_mean`` / ``latent_std`` in its config
    shares: encoding images to normalised latents and decoding them."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised posterior means ``[N, Z, h, w]`` of ``images [N, C, H, W]``."""
        return (posterior_means(self.autoencoder, images) - self.cfg.latent_mean) / self.cfg.latent_std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` of normalised latents ``z [N, Z, h, w]`` through the autoencoder's decoder."""
        self.check_latents(z)
        return self.autoencoder.decode(z * self.cfg.latent_std + self.cfg.latent_mean)

    def latent_shape(self) -> tuple[int, int, int]:
        return self.autoencoder.latent_shape()

    def check_latents(self, z: torch.Tensor) -> None:
        if tuple(z.shape[1:]) != self.latent_shape():
            raise DataError(f"latents are {list(z.shape[1:])} (Z, h, w), this model's are {list(self.latent_shape())}")

    def load_autoencoder_weights(self) -> None:
        """Copy the weights of the autoencoder checkpoint named in the config (checked against it)."""
        source = load_autoencoder(self.cfg.autoencoder, self.cfg.data, self.cfg.autoencoder_config())
        self.autoencoder.load_state_dict(source.model.state_dict())
        self.autoencoder.eval()


class AutoencoderShape:
    """For configs with ``image_size``, ``channels``, ``ae_width``, ``latent_channels`` and ``levels``: the
    autoencoder they describe (latent flow and CrossFlow)."""

    def autoencoder_config(self) -> AutoencoderConfig:
        return AutoencoderConfig(
            image_size=self.image_size,
            channels=self.channels,
            width=self.ae_width,
            latent_channels=self.latent_channels,
            levels=self.levels,
        )


@dataclass
class LatentFlowConfig(AutoencoderShape, Config):
    data: str = field(default="digits", metadata={"help": "Image dataset (as for `interp train image`)."})
    autoencoder: str = field(
        default="", metadata={"help": "Autoencoder checkpoint (`interp train autoencoder`) of the same data."}
    )
    image_size: int = field(default=8, metadata={"cli": False})  # from the data
    channels: int = field(default=1, metadata={"cli": False})  # from the data
    n_classes: int = field(default=0, metadata={"cli": False})  # from the data and --class-conditional
    ae_width: int = field(default=32, metadata={"cli": False})  # from the autoencoder
    latent_channels: int = field(default=4, metadata={"cli": False})  # from the autoencoder
    levels: int = field(default=2, metadata={"cli": False})  # from the autoencoder
    latent_mean: float = field(default=0.0, metadata={"cli": False})  # from the autoencoder and data
    latent_std: float = field(default=1.0, metadata={"cli": False})
    process: str = field(default="flow", metadata={"cli": False})  # latent flow matching
    time_conditioning: bool = field(default=True, metadata={"cli": False})
    width: int = 64
    depth: int = 4
    n_heads: int = 4
    patch_size: int = 1
    class_dropout: float = 0.1

    def validate(self) -> None:
        check(self.process == "flow", f"latent-flow learns flow matching only, got process {self.process!r}")
        check(self.latent_std > 0, f"latent_std must be > 0, got {self.latent_std!r}")
        check(0 <= self.class_dropout <= 1, f"class_dropout must be in [0, 1], got {self.class_dropout}")
        self.autoencoder_config()
        self.model_config()

    def model_config(self) -> ImageModelConfig:
        """The DiT over the latent grid (``latent_channels`` channels of side ``image_size / 2^levels``)."""
        return ImageModelConfig(
            architecture="dit",
            image_size=self.image_size // 2**self.levels,
            channels=self.latent_channels,
            n_classes=self.n_classes,
            width=self.width,
            depth=self.depth,
            n_heads=self.n_heads,
            patch_size=self.patch_size,
        )


class LatentFlow(LatentSpace, ImageDiffusion):
    """Components: ``model`` (the latent DiT) and ``autoencoder`` (frozen). Training, ``prepare`` and ``loss``
    are :class:`~interp.methods.image_diffusion.ImageDiffusion`'s, on latents instead of pixels."""

    frozen = ("autoencoder",)

    def __init__(self, cfg: LatentFlowConfig):
        super().__init__(cfg)
        self.autoencoder = Autoencoder(cfg.autoencoder_config())

    def components(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "autoencoder": self.autoencoder}

    def set_component(self, name: str, module: torch.nn.Module) -> None:
        setattr(self, name, module)

    @property
    def layer_sites(self) -> str:
        return "blocks.*.hook_resid_post"

    def train_dataset(self, seed: int) -> datasets.Dataset:
        self.load_autoencoder_weights()
        return super().train_dataset(seed)

    def collate(self, rows: dict) -> dict[str, torch.Tensor]:
        """``image``: the normalised latents ``[N, Z, h, w]`` (what ImageDiffusion's ``prepare`` noises)."""
        return {"image": self.encode(torch.as_tensor(rows["image"])), "label": torch.as_tensor(rows["label"])}

    def default_sampler(self, steps: int = 20) -> ImageSamplerConfig:
        return ImageSamplerConfig(name="euler", steps=steps)

    def sampling(
        self, n: int, sampler: ImageSamplerConfig | None = None, seed: int = 0, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, Iterator[LatentImageStep]]:
        """Start sampling ``n`` images: the labels (``[n]`` or None) and the lazy iterator of
        :class:`~interp.samplers.crossflow.LatentImageStep` s (latents and their decodings)."""
        if n < 1:
            raise DataError(f"n must be >= 1, got {n}")
        if labels is None and self.cfg.n_classes:
            labels = torch.arange(n) % self.cfg.n_classes
        self.model.eval()
        steps = sample_images(
            self.model,
            self.process,
            sampler or self.default_sampler(),
            (n, *self.latent_shape()),
            torch.Generator().manual_seed(seed),
            labels=labels if self.cfg.n_classes else None,
        )
        return labels, decoded_steps(steps, lambda z: self.decode(z).clamp(-1, 1))


def derive_config(options: dict) -> dict:
    """Image size, channels and classes from the data; sizes and latent statistics from ``--autoencoder``."""
    options = dict(options)
    data = options.get("data", LatentFlowConfig.data)
    c, h, _, classes = image_shape(data)
    conditional = options.pop("class_conditional", True)
    if not options.get("autoencoder"):
        raise ConfigError("--autoencoder DIR is required: a checkpoint of `interp train autoencoder` on the same data")
    fields = autoencoder_fields(options["autoencoder"], data)
    return {**options, **fields, "image_size": h, "channels": c, "n_classes": classes if conditional else 0}


def heldout_eval(method: LatentFlow, seed: int):
    """``--eval-every``: the flow-matching loss on up to 512 held-out latents (draws fixed by ``seed``)."""
    images, labels = method.data("heldout")
    batch = method.collate({"image": images[:512], "label": labels[:512]})
    prepared = method.prepare(batch, torch.Generator().manual_seed(seed))

    def eval_fn(m: LatentFlow, step: int) -> dict[str, float]:
        with torch.no_grad():
            return {"heldout_loss": float(m.loss(m.model, prepared).mean())}

    return eval_fn


def evaluations_per_sample(method, sampler, seed: int = 0) -> int:
    """Function evaluations (network calls) one sample costs under ``sampler``, counted on one sample."""
    _, record = method.sample(1, sampler, seed)
    return sum(step.evaluations for step in record)


register(
    MethodSpec(
        kind="latent_flow",
        method=LatentFlow,
        config=LatentFlowConfig,
        summary="Train latent flow matching on a trained autoencoder's latents (CrossFlow's baseline A; "
        "--autoencoder DIR).",
        sampler_config=ImageSamplerConfig,
        samplers=("euler", "heun"),
        default_sampler=lambda method: method.default_sampler(),
        capture="blocks.*.hook_resid_post",
        train_defaults={"lr": 2e-3},
        train_options=(CliOption("class_conditional", bool, True, "Condition on the dataset's labels."),),
        derive=derive_config,
        train_eval=heldout_eval,
        sample=sample_cli,
        trace_run=trace_cli,
        evaluate="interp.analyses.crossflow:evaluate_cli",
        report="interp.reports.crossflow:latent_flow_report",
    )
)
