"""Character tokenizer with special tokens.

Ids ``0..len(SPECIALS)-1`` are the special tokens (pad, mask, sep), then one id per character of the
alphabet. The alphabet is stored in every checkpoint so a checkpoint is self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from interp.errors import DataError

PAD, MASK, SEP = "<pad>", "<mask>", "<sep>"
SPECIALS = (PAD, MASK, SEP)


@dataclass(frozen=True)
class CharTokenizer:
    """Maps characters of ``alphabet`` to ids; specials first.

    >>> tok = CharTokenizer("0123456789+=")
    >>> tok.decode(tok.encode("12+3="))
    '12+3='
    """

    alphabet: str
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.alphabet)) != len(self.alphabet):
            raise DataError(f"tokenizer alphabet has repeated characters: {self.alphabet!r}")
        index = {c: i + len(SPECIALS) for i, c in enumerate(self.alphabet)}
        object.__setattr__(self, "_index", index)

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.alphabet)

    pad_id = 0
    mask_id = 1
    sep_id = 2

    @property
    def tokens(self) -> list[str]:
        """Display string of every id (specials in angle brackets)."""
        return list(SPECIALS) + list(self.alphabet)

    def encode(self, text: str) -> list[int]:
        bad = sorted({c for c in text if c not in self._index})
        if bad:
            shown = repr(text) if len(text) <= 60 else f"{text[:40]!r}… ({len(text)} characters)"
            raise DataError(
                f"text {shown} has character(s) {bad[:20]} outside the tokenizer alphabet {self.alphabet!r}"
            )
        return [self._index[c] for c in text]

    def decode(self, ids: Sequence[int] | torch.Tensor, *, show_special: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i < len(SPECIALS):
                if show_special:
                    out.append({PAD: "_", MASK: "?", SEP: "|"}[SPECIALS[i]])
            else:
                out.append(self.alphabet[i - len(SPECIALS)])
        return "".join(out)

    def content_ids(self) -> torch.Tensor:
        """Ids of the ordinary characters (used for uniform renoising)."""
        return torch.arange(len(SPECIALS), self.vocab_size)
