"""Step samplers, each a registered object with ``schedule()`` and ``step()`` driven by one loop
(:func:`interp.samplers.loop.run`) that yields one step record per denoising step."""

from interp.samplers.base import run_to_end
from interp.samplers.diffusiongemma import DiffusionGemmaSampler, GemmaStep, sample_diffusion_gemma
from interp.samplers.image import ContinuousSampler, ImageSamplerConfig, image_samplers, sample_images
from interp.samplers.lm import MaskedSampler, SamplerConfig, TokenSampler, sample_steps
from interp.samplers.loop import StepSampler, run
from interp.steps import ImageStep, Step, StepRecord

__all__ = [
    "ContinuousSampler",
    "DiffusionGemmaSampler",
    "GemmaStep",
    "ImageSamplerConfig",
    "ImageStep",
    "MaskedSampler",
    "SamplerConfig",
    "Step",
    "StepRecord",
    "StepSampler",
    "TokenSampler",
    "image_samplers",
    "run",
    "run_to_end",
    "sample_diffusion_gemma",
    "sample_images",
    "sample_steps",
]
