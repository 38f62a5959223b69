"""Image diffusion through the shared trainer: a DiT or U-Net denoiser, flow matching or DDPM-ε,
with or without the timestep input (the time-agnostic study), optionally class-conditional."""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import torch

from interp.config import Config, check
from interp.data.images import image_dataset
from interp.errors import DataError
from interp.models.image import ImageModelConfig, build_image_model
from interp.processes.continuous import ContinuousProcess


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
