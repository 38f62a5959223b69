"""The methods, each one module over the shared models, processes, samplers and trainer that registers
its :class:`~interp.registry.MethodSpec` (see :mod:`interp.registry`)."""

from interp.methods.autoregressive import ARConfig, AutoregressiveLM
from interp.methods.diffusion_lm import SELFCOND_MODES, DiffusionLM, DLMConfig
from interp.methods.image_diffusion import ImageDiffusion, ImageDiffusionConfig
from interp.methods.lm import LM_TASKS, LanguageModelMethod, LMConfig

__all__ = [
    "LM_TASKS",
    "SELFCOND_MODES",
    "ARConfig",
    "AutoregressiveLM",
    "DLMConfig",
    "DiffusionLM",
    "ImageDiffusion",
    "ImageDiffusionConfig",
    "LMConfig",
    "LanguageModelMethod",
]
