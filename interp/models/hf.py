"""Run Hugging Face masked LMs (``AutoModelForMaskedLM``) with our masked-diffusion samplers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from interp.errors import DataError


class IdTokenizer:
    """Minimal tokenizer over ids (optionally with a vocabulary list for display)."""

    def __init__(self, mask_id: int, vocab: Sequence[str] | None = None):
        self.mask_id = mask_id
        self.vocab = list(vocab) if vocab is not None else None

    def decode(self, ids, show_special: bool = True) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if self.vocab is None:
            return " ".join("?" if i == self.mask_id else str(i) for i in ids)
        return " ".join(self.vocab[i] for i in ids)


class MaskedLMSampler:
    """Adapter giving an HF masked LM the interface of a masked-diffusion token denoiser
    (:class:`~interp.protocols.TokenDenoiser`), so our masked samplers and analyses run on it.

    ``special_ids`` (pad, cls, sep, mask ...) are never predicted. No self-conditioning: the model
    sees only the token canvas. ``t`` is ignored (HF masked LMs have no time input).
    """

    def __init__(
        self,
        model: nn.Module,
        mask_id: int | None = None,
        special_ids: Sequence[int] = (),
        vocab: Sequence[str] | None = None,
    ):
        self.model = model.eval()
        config = getattr(model, "config", None)
        self.mask_id = mask_id if mask_id is not None else getattr(config, "mask_token_id", None)
        if self.mask_id is None:
            raise DataError(f"{type(model).__name__}: pass mask_id (its config names no mask_token_id)")
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise DataError(
                f"{type(model).__name__} has no language-model head to predict tokens with; load it with "
                "transformers.AutoModelForMaskedLM (e.g. BertForMaskedLM) instead"
            )
        vocab_size = head.weight.shape[0]
        self.special_ids = sorted({self.mask_id, *special_ids})
        keep = torch.ones(vocab_size, dtype=torch.bool)
        keep[self.special_ids] = False
        self.content_ids = torch.arange(vocab_size)[keep]
        self.tokenizer = IdTokenizer(self.mask_id, vocab)

    def predict(self, canvas: torch.Tensor, t: torch.Tensor, carried: None = None, model: nn.Module | None = None):
        out = (model or self.model)(input_ids=canvas)
        logits = (out.logits if hasattr(out, "logits") else out[0]).clone()
        logits[..., self.special_ids] = float("-inf")
        return logits

    def carry(self, logits: torch.Tensor) -> None:
        return None

    def empty_carry(self, batch: int, length: int) -> None:
        return None

    def answer_len_for(self, prompt_len: int) -> int:
        raise DataError("pass answer_len: an HF masked LM has no fixed answer length")
