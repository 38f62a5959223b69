"""Step-wise samplers: each yields one :class:`Step` per denoising step."""

from interp.samplers.base import Step, run_to_end
from interp.samplers.lm import SAMPLERS, SamplerConfig, sample_steps

__all__ = ["SAMPLERS", "SamplerConfig", "Step", "run_to_end", "sample_steps"]
