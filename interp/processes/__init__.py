"""Forward noising processes and their losses."""

from interp.processes.masked import MaskedCorruption, corrupt, masked_diffusion_loss, noise_level_to_mask_prob

__all__ = ["MaskedCorruption", "corrupt", "masked_diffusion_loss", "noise_level_to_mask_prob"]
