"""The methods, each a thin module over the shared models, processes, samplers and trainer."""

from interp.methods.autoregressive import ARConfig, AutoregressiveLM
from interp.methods.diffusion_lm import SELFCOND_MODES, DiffusionLM, DLMConfig
from interp.methods.image_diffusion import ImageDiffusion, ImageDiffusionConfig
from interp.methods.lm import LM_TASKS, LanguageModelMethod, LMConfig

METHODS = {
    "dlm": (DiffusionLM, DLMConfig),
    "ar": (AutoregressiveLM, ARConfig),
    "image": (ImageDiffusion, ImageDiffusionConfig),
}

__all__ = [
    "LM_TASKS",
    "METHODS",
    "SELFCOND_MODES",
    "ARConfig",
    "AutoregressiveLM",
    "DLMConfig",
    "DiffusionLM",
    "LMConfig",
    "LanguageModelMethod",
]
