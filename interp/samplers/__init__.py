"""Step-wise samplers: each yields one :class:`Step` per denoising step."""

from interp.samplers.base import ImageStep, Step, run_to_end
from interp.samplers.image import IMAGE_SAMPLERS, ImageSamplerConfig, sample_images
from interp.samplers.lm import SAMPLERS, SamplerConfig, sample_steps

__all__ = [
    "IMAGE_SAMPLERS",
    "SAMPLERS",
    "ImageSamplerConfig",
    "ImageStep",
    "SamplerConfig",
    "Step",
    "run_to_end",
    "sample_images",
    "sample_steps",
]
