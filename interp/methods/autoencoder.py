"""The KL-regularised autoencoder as a method (``interp train autoencoder``): the latent space that
CrossFlow and latent flow matching work in, trained through the shared trainer.

Loss per image: the L1 reconstruction error of ``decode(mean + σ·ε)`` plus ``kl_weight`` times the KL
divergence of N(mean, σ²) from N(0, I) (per latent element, averaged), both logged as named terms.
``interp eval`` reports the held-out reconstruction PSNR (images in [-1, 1], so a peak-to-peak of 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import datasets
import torch

from interp.config import Config, check
from interp.data.images import image_dataset, image_shape, image_tensors
from interp.errors import DataError
from interp.models.autoencoder import Autoencoder, AutoencoderConfig
from interp.registry import MethodSpec, register


@dataclass
class AutoencoderMethodConfig(Config):
    data: str = field(default="digits", metadata={"help": "Image dataset (as for `interp train image`)."})
    image_size: int = field(default=8, metadata={"cli": False})  # from the data
    channels: int = field(default=1, metadata={"cli": False})  # from the data
    width: int = 32
    latent_channels: int = 4
    levels: int = 2
    kl_weight: float = field(default=1e-4, metadata={"help": "Weight of the KL term (β)."})

    def validate(self) -> None:
        self.model_config()
        check(0 <= self.kl_weight <= 100, f"kl_weight must be in [0, 100], got {self.kl_weight!r}")

    def model_config(self) -> AutoencoderConfig:
        return AutoencoderConfig(
            image_size=self.image_size,
            channels=self.channels,
            width=self.width,
            latent_channels=self.latent_channels,
            levels=self.levels,
        )


class AutoencoderMethod:
    def __init__(self, cfg: AutoencoderMethodConfig):
        self.cfg = cfg
        self.model = Autoencoder(cfg.model_config())

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def data(self, split: str) -> torch.Tensor:
        """Images ``[N, C, H, W]`` of ``split``, checked against the model's shape."""
        images, _ = image_tensors(self.cfg.data, split)
        want = (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)
        if tuple(images.shape[1:]) != want:
            raise DataError(
                f"dataset {self.cfg.data!r}: images are {list(images.shape[1:])}, the model expects {list(want)}"
            )
        return images

    def train_dataset(self, seed: int) -> datasets.Dataset:
        return image_dataset(self.cfg.data, "train")

    def collate(self, rows: dict) -> dict[str, torch.Tensor]:
        return {"image": torch.as_tensor(rows["image"])}

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = batch["image"]
        return {"x": x, "eps": torch.randn((len(x), *self.model.latent_shape()), generator=generator)}

    def loss(self, model: torch.nn.Module, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mean, logvar = model.encode(p["x"])
        recon = model.decode(mean + (0.5 * logvar).exp() * p["eps"])
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).mean(1)
        return {"recon": (recon - p["x"]).abs().flatten(1).mean(1), "kl": self.cfg.kl_weight * kl}

    def psnr(self, images: torch.Tensor, batch_size: int = 512) -> float:
        """Mean reconstruction PSNR (dB) of ``images`` through the latent mean."""
        self.model.eval()
        errors = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size]
                errors.append(((self.model(x) - x) ** 2).flatten(1).mean(1))
        mse = torch.cat(errors)
        return float((10 * torch.log10(4.0 / mse.clamp_min(1e-12))).mean())


def derive_config(options: dict) -> dict:
    """Image size and channels from the data."""
    c, h, _, _ = image_shape(options.get("data", AutoencoderMethodConfig.data))
    return {**options, "image_size": h, "channels": c}


def train_eval(method: AutoencoderMethod, seed: int):
    """``--eval-every``: held-out reconstruction PSNR on up to 512 images."""
    images = method.data("heldout")[:512]
    return lambda m, step: {"heldout_psnr": m.psnr(images)}


def evaluate_cli(method: AutoencoderMethod, options) -> tuple[dict, str]:
    """``interp eval``: reconstruction PSNR of ``--n`` held-out images (default: all)."""
    n = options.get("n")
    options.done()
    images = method.data("heldout")
    images = images[:n] if n else images
    value = method.psnr(images)
    if math.isnan(value):
        raise DataError("no held-out images to reconstruct")
    return {"psnr_db": value, "n": len(images)}, f"held-out reconstruction PSNR {value:.2f} dB on {len(images)} images"


register(
    MethodSpec(
        kind="autoencoder",
        method=AutoencoderMethod,
        config=AutoencoderMethodConfig,
        summary="Train a KL-regularised autoencoder (the latent space of CrossFlow / latent flow matching).",
        capture="**.hook_out",
        train_defaults={"lr": 2e-3},
        derive=derive_config,
        train_eval=train_eval,
        evaluate=evaluate_cli,
    )
)
