"""Driving a token sampler to completion."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from interp.steps import Step


def run_to_end(steps: Iterator[Step]) -> tuple[torch.Tensor, list[Step]]:
    """Exhaust a sampler; return the final tokens ``[B, L]`` and every Step."""
    record = list(steps)
    if not record:
        raise RuntimeError("sampler yielded no steps")
    return record[-1].tokens, record
