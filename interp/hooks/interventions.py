"""Edits of activations at chosen (hook, steps, positions) during a sampling run."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.config import check_choice
from interp.errors import InterpError
from interp.steps import StepContext

OPS = ("add", "replace", "ablate", "scale", "fn")


class InterventionError(InterpError):
    """An intervention cannot be applied (wrong shape/dtype, unknown op)."""


def select_positions(tensor: torch.Tensor, positions: slice | Sequence[int] | None, pos_dim: int) -> torch.Tensor:
    """The sub-tensor at ``positions`` along ``pos_dim`` (a view for slices)."""
    if positions is None:
        return tensor
    index: list[Any] = [slice(None)] * tensor.dim()
    index[pos_dim] = positions if isinstance(positions, slice) else torch.as_tensor(list(positions), dtype=torch.long)
    return tensor[tuple(index)]


@dataclass
class Intervention:
    """Change activation ``name`` at ``steps`` (None = every step) and ``positions`` (None = all,
    along the hook's position axis).

    ``op``: ``add`` (``value`` broadcast onto the activation: steering), ``replace`` (``value``),
    ``ablate`` (zero), ``scale`` (multiply by ``value``), ``fn`` (``value(activation, context)`` returns
    the new activation, same shape and dtype; ``context`` is the :class:`~interp.steps.StepContext`:
    ``index``, and the noise levels ``t`` → ``s`` of the step when the sampler runs in our loop).
    """

    name: str
    op: str
    value: Any = None
    steps: Iterable[int] | None = None
    positions: slice | Sequence[int] | None = None

    def __post_init__(self) -> None:
        check_choice("op", self.op, OPS)
        if self.op in ("add", "replace", "scale", "fn") and self.value is None:
            raise InterventionError(f"intervention {self.op!r} on {self.name!r} needs a value")
        if self.op == "fn" and not callable(self.value):
            raise InterventionError(f"intervention 'fn' on {self.name!r} needs a callable value")
        self._steps = None if self.steps is None else frozenset(int(s) for s in self.steps)

    @property
    def step_set(self) -> frozenset[int] | None:
        return self._steps

    def applies(self, step: int) -> bool:
        return self._steps is None or step in self._steps

    def apply(self, act: torch.Tensor, context: StepContext, pos_dim: int) -> torch.Tensor:
        """The edited activation at step ``context`` (``context.index``; ``t`` / ``s`` where the sampler
        published them)."""
        step = context.index
        out = act.clone()
        region = select_positions(out, self.positions, pos_dim)
        if self.op == "fn":
            fn: Callable[[torch.Tensor, StepContext], torch.Tensor] = self.value
            new = fn(region.clone(), context)
            if not isinstance(new, torch.Tensor) or new.shape != region.shape or new.dtype != region.dtype:
                got = f"{tuple(new.shape)} {new.dtype}" if isinstance(new, torch.Tensor) else type(new).__name__
                raise InterventionError(
                    f"intervention on {self.name!r} at step {step} returned {got}; expected {tuple(region.shape)} {region.dtype}"
                )
        elif self.op == "ablate":
            new = torch.zeros_like(region)
        else:
            value = torch.as_tensor(self.value, dtype=region.dtype, device=region.device)
            try:
                if self.op == "add":
                    new = region + value
                elif self.op == "scale":
                    new = region * value
                else:
                    new = value.expand_as(region).clone()
            except RuntimeError as exc:
                raise InterventionError(
                    f"intervention {self.op!r} on {self.name!r} at step {step}: value of shape {tuple(value.shape)} "
                    f"does not fit the activation region {tuple(region.shape)}"
                ) from exc
            if new.shape != region.shape:
                raise InterventionError(
                    f"intervention {self.op!r} on {self.name!r} at step {step}: value of shape {tuple(value.shape)} "
                    f"changes the activation region's shape {tuple(region.shape)} to {tuple(new.shape)}"
                )
        if self.positions is None:
            return new
        index: list[Any] = [slice(None)] * out.dim()
        index[pos_dim] = (
            self.positions
            if isinstance(self.positions, slice)
            else torch.as_tensor(list(self.positions), dtype=torch.long)
        )
        out[tuple(index)] = new
        return out


def steering(
    name: str,
    vector: torch.Tensor,
    steps: Iterable[int],
    positions: slice | Sequence[int] | None = None,
    scale: float = 1.0,
) -> Intervention:
    """Add ``scale * vector`` to ``name`` only at ``steps`` (a step window)."""
    return Intervention(name, "add", vector * scale, steps=steps, positions=positions)
