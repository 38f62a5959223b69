"""Image diffusion through the shared trainer: a DiT or U-Net denoiser, flow matching or DDPM-ε,
with or without the timestep input (the time-agnostic study), optionally class-conditional."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets
import torch

from interp.config import Config, check
from interp.data.images import image_dataset, image_shape, image_tensors
from interp.errors import DataError
from interp.models.image import ImageModelConfig, build_image_model
from interp.processes.continuous import ContinuousProcess
from interp.registry import CliOption, MethodSpec, Options, register
from interp.samplers.image import ImageSamplerConfig, image_samplers, sample_images
from interp.steps import ImageStep


@dataclass
class ImageDiffusionConfig(Config):
    """``data``: see :func:`interp.data.images.image_dataset`. ``class_dropout``: share of training
    labels replaced by the "no class" token (classifier-free guidance), when ``n_classes > 0``."""

    data: str = field(
        default="digits", metadata={"help": "digits | mnist5k | fashion-mnist | cifar10-bin:PATH | folder:PATH"}
    )
    process: str = field(default="flow", metadata={"help": "flow | ddpm"})
    architecture: str = field(default="dit", metadata={"cli": "--model", "help": "dit | unet"})
    time_conditioning: bool = field(
        default=True,
        metadata={"choices": {"on": True, "off": False}, "help": "on | off (off: the time-agnostic denoiser)"},
    )
    image_size: int = field(default=8, metadata={"cli": False})  # from the data
    channels: int = field(default=1, metadata={"cli": False})  # from the data
    n_classes: int = field(default=0, metadata={"cli": False})  # from the data and --class-conditional
    width: int = 64
    depth: int = 4
    n_heads: int = 4
    patch_size: int = 2
    class_dropout: float = 0.1

    def validate(self) -> None:
        ContinuousProcess(self.process)
        self.model_config()
        check(0 <= self.class_dropout <= 1, f"class_dropout must be in [0, 1], got {self.class_dropout}")

    def model_config(self) -> ImageModelConfig:
        return ImageModelConfig(
            architecture=self.architecture,
            image_size=self.image_size,
            channels=self.channels,
            time_conditioning=self.time_conditioning,
            n_classes=self.n_classes,
            width=self.width,
            depth=self.depth,
            n_heads=self.n_heads,
            patch_size=self.patch_size,
        )


class ImageData:
    """What every method that generates images of a dataset shares (its config has ``data``, ``channels``
    and ``image_size``): the data's splits checked against the model's shape, and the reference images
    that :func:`interp.evaluation.evaluate_images` measures samples against."""

    def check_images(self, images: torch.Tensor, source: str) -> None:
        want = (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)
        if tuple(images.shape[1:]) != want:
            raise DataError(
                f"{source}: images are {list(images.shape[1:])} (C, H, W) but this model expects {list(want)}"
            )

    def data(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[N, C, H, W]`` (checked against the model's shape) and labels ``[N]`` of the training
        data's ``split`` (``train`` / ``heldout``)."""
        images, labels = image_tensors(self.cfg.data, split)
        self.check_images(images, f"dataset {self.cfg.data!r} ({split})")
        return images, labels

    def reference_images(self, seed: int = 0) -> torch.Tensor:
        """The training images ``[N, C, H, W]`` in a random order fixed by ``seed``: the real images
        that the FD floor compares with the held-out split (the first as many as were generated)."""
        train, _ = self.data("train")
        return train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))]


class ImageDiffusion(ImageData):
    def __init__(self, cfg: ImageDiffusionConfig, model: torch.nn.Module | None = None):
        self.cfg = cfg
        self.model = model or build_image_model(cfg.model_config())
        self.process = ContinuousProcess(cfg.process)

    @property
    def layer_sites(self) -> str:
        """Hook names of each layer's output (a pattern): the default sites of the noise probes. For the
        U-Net, ``**.hook_out`` is ``down.{i}.hook_out``, ``mid.hook_out`` and ``up.{i}.hook_out``."""
        return "blocks.*.hook_resid_post" if self.cfg.architecture == "dit" else "**.hook_out"

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def train_dataset(self, seed: int) -> datasets.Dataset:
        ds = image_dataset(self.cfg.data, "train")
        self.check_images(torch.as_tensor(ds[:1]["image"]), f"dataset {self.cfg.data!r}")
        return ds

    def collate(self, rows: dict) -> dict[str, torch.Tensor]:
        return {"image": torch.as_tensor(rows["image"]), "label": torch.as_tensor(rows["label"])}

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = batch["image"]
        B = x.shape[0]
        t = torch.rand(B, generator=generator)
        eps = torch.randn(x.shape, generator=generator)
        drop = torch.rand(B, generator=generator) < self.cfg.class_dropout
        y = torch.where(drop, torch.full_like(batch["label"], self.cfg.n_classes), batch["label"])
        return {"x": x, "t": t, "eps": eps, "y": y}

    def predict(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, model: torch.nn.Module | None = None
    ) -> torch.Tensor:
        model = model or self.model
        return model(x_t, t if self.cfg.time_conditioning else None, y if self.cfg.n_classes else None)

    def loss(self, model: torch.nn.Module, p: dict[str, torch.Tensor]) -> torch.Tensor:
        x_t = self.process.noise(p["x"], p["t"], p["eps"])
        return self.process.loss(self.predict(x_t, p["t"], p["y"], model), p["x"], p["eps"])

    def default_sampler(self, steps: int = 50) -> ImageSamplerConfig:
        """The first sampler that fits the process: Euler for flow matching, DDIM for DDPM."""
        return ImageSamplerConfig(name=image_samplers(self.cfg.process)[0], steps=steps)

    def sampling(
        self, n: int, sampler: ImageSamplerConfig | None = None, seed: int = 0, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, Iterator[ImageStep]]:
        """Start sampling ``n`` images: the labels used (``[n]`` or None; they cycle 0..n_classes-1 for
        class-conditional models unless given) and the lazy iterator of :class:`ImageStep` s."""
        if n < 1:
            raise DataError(f"n must be >= 1, got {n}")
        if labels is None and self.cfg.n_classes:
            labels = torch.arange(n) % self.cfg.n_classes
        self.model.eval()
        c, size = self.cfg.channels, self.cfg.image_size
        steps = sample_images(
            self.model,
            self.process,
            sampler or self.default_sampler(),
            (n, c, size, size),
            torch.Generator().manual_seed(seed),
            labels=labels if self.cfg.n_classes else None,
            time_conditioning=self.cfg.time_conditioning,
        )
        return labels, steps

    def sample(
        self, n: int, sampler: ImageSamplerConfig | None = None, seed: int = 0, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, list[ImageStep]]:
        """:meth:`sampling` run to the end: ``record[-1].x`` is the final batch ``[n, C, H, W]``."""
        labels, steps = self.sampling(n, sampler, seed, labels)
        return labels, list(steps)


def heldout_loss_eval(method: ImageDiffusion, seed: int):
    """``--eval-every`` of an image model: the training loss on (up to) 512 held-out images, with noise
    levels and draws fixed by ``seed`` so that every evaluation sees the same inputs."""
    images, labels = method.data("heldout")
    images, labels = images[:512], labels[:512]
    prepared = method.prepare({"image": images, "label": labels}, torch.Generator().manual_seed(seed))

    def eval_fn(m: ImageDiffusion, step: int) -> dict[str, float]:
        with torch.no_grad():
            return {"heldout_loss": float(m.loss(m.model, prepared).mean())}

    return eval_fn


def derive_config(options: dict) -> dict:
    """``interp train image``: image size and channels from the data; ``n_classes`` from its labels
    when ``class_conditional``."""
    options = dict(options)
    c, h, _, classes = image_shape(options.get("data", ImageDiffusionConfig.data))
    conditional = options.pop("class_conditional", True)
    return {**options, "image_size": h, "channels": c, "n_classes": classes if conditional else 0}


def sample_cli(method: ImageDiffusion, options: Options) -> tuple[dict, str]:
    """``interp sample`` on an image model: ``--n`` images as a PNG grid at ``--out``."""
    from interp.data.images import is_interp_png, png_grid
    from interp.io import atomic_write_bytes, check_file_output

    n = options.get("n", 16)
    out = options.require("out", " (a PNG grid) for image checkpoints")
    cfg = options.sampler(method.spec, method)
    options.done()
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    out = check_file_output(out, is_interp_png, "a PNG grid")  # before sampling: an error changes nothing
    _, record = method.sample(n, cfg, options.seed)
    atomic_write_bytes(out, png_grid(record[-1].x))
    payload = {"sampler": cfg.name, "steps": cfg.steps, "n": n, "out": str(out)}
    payload["evaluations"] = sum(s.evaluations for s in record)
    return payload, f"{n} images written to {out}"


def trace_cli(method: ImageDiffusion, options: Options):
    """``interp trace`` on an image model: ``--n`` images (default 4) from noise."""
    n = options.get("n", 4)
    cfg = options.sampler(method.spec, method)
    options.done()
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")

    def run():
        return method.sampling(n, cfg, options.seed)[1]

    return run, {"n": n, "sampler": cfg.to_dict()}


register(
    MethodSpec(
        kind="image",
        method=ImageDiffusion,
        config=ImageDiffusionConfig,
        summary="Train an image denoiser (DiT or U-Net; flow matching or DDPM; with or without the timestep).",
        sampler_config=ImageSamplerConfig,
        samplers=("euler", "heun", "ddim", "ancestral"),
        default_sampler=lambda method: method.default_sampler(),
        capture=lambda method: method.layer_sites,
        train_defaults={"lr": 2e-3},
        train_options=(CliOption("class_conditional", bool, True, "Condition on the dataset's labels."),),
        derive=derive_config,
        train_eval=heldout_loss_eval,
        sample=sample_cli,
        trace_run=trace_cli,
        evaluate="interp.evaluation:evaluate_images_cli",
        report="interp.reports.methods:image_report",
    )
)
