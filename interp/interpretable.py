"""The "interpretable" tag: a tensor a human can read (a sampled token, a top-k list of (token,
probability) pairs). Methods mark such tensors as they compute them; analyses that care (opaque
serial depth) listen while they run. A bottom module, so methods can mark without importing analyses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from interp.errors import InterpError

_LISTENERS: list[Callable[[torch.Tensor], None]] = []


def mark_interpretable(tensor: torch.Tensor) -> torch.Tensor:
    """Declare ``tensor`` interpretable to every active listener; returns it unchanged."""
    if not isinstance(tensor, torch.Tensor):
        raise InterpError(f"mark_interpretable needs a tensor, got {type(tensor).__name__}")
    for listener in _LISTENERS:
        listener(tensor)
    return tensor


@contextlib.contextmanager
def listening(listener: Callable[[torch.Tensor], None]) -> Iterator[None]:
    """Call ``listener(tensor)`` for every tensor marked inside the block."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)
