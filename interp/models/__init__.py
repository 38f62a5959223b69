"""Native denoisers built from HookPoints."""

from interp.models.transformer import SelfCondInput, TokenTransformer, TransformerConfig

__all__ = ["SelfCondInput", "TokenTransformer", "TransformerConfig"]
