"""Image diffusion through the shared trainer: a DiT or U-Net denoiser, flow matching or DDPM-ε,
with or without the timestep input (the time-agnostic study), optionally class-conditional."""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import torch

from interp.config import Config, check
from interp.data.images import image_dataset, image_tensors
from interp.errors import DataError
from interp.models.image import ImageModelConfig, build_image_model
from interp.processes.continuous import ContinuousProcess
from interp.samplers.base import ImageStep
from interp.samplers.image import IMAGE_SAMPLERS, ImageSamplerConfig, sample_images


@dataclass
class ImageDiffusionConfig(Config):
    """``data``: see :func:`interp.data.images.image_dataset`. ``class_dropout``: share of training
    labels replaced by the "no class" token (classifier-free guidance), when ``n_classes > 0``."""

    data: str = "digits"
    process: str = "flow"
    architecture: str = "dit"
    time_conditioning: bool = True
    image_size: int = 8
    channels: int = 1
    n_classes: int = 0
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


class ImageDiffusion:
    kind = "image"

    def __init__(self, cfg: ImageDiffusionConfig, model: torch.nn.Module | None = None):
        self.cfg = cfg
        self.model = model or build_image_model(cfg.model_config())
        self.process = ContinuousProcess(cfg.process)

    @property
    def layer_sites(self) -> str:
        """Hook names of each layer's output (a glob): the default sites of the noise probes."""
        return "blocks.*.hook_resid_post" if self.cfg.architecture == "dit" else "*.hook_out"

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def train_dataset(self, seed: int) -> datasets.Dataset:
        ds = image_dataset(self.cfg.data, "train")
        self.check_images(torch.as_tensor(ds[:1]["image"]), f"dataset {self.cfg.data!r}")
        return ds

    def check_images(self, images: torch.Tensor, source: str) -> None:
        want = (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)
        if tuple(images.shape[1:]) != want:
            raise DataError(
                f"{source}: images are {list(images.shape[1:])} (C, H, W) but this model expects {list(want)}"
            )

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
        return ImageSamplerConfig(name=next(n for n, k in IMAGE_SAMPLERS.items() if k == self.cfg.process), steps=steps)

    def sample(
        self, n: int, sampler: ImageSamplerConfig | None = None, seed: int = 0, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, list[ImageStep]]:
        """``n`` samples; class labels cycle 0..n_classes-1 for class-conditional models unless given.
        Returns the labels used (``[n]`` or None) and every :class:`ImageStep` (``record[-1].x`` is the
        final batch ``[n, C, H, W]``)."""
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
        return labels, list(steps)

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
