"""The step records every sampler yields, and where the sampling loop is.

A sampler yields one :class:`StepRecord` per denoising step: ``index`` (0 = the first step, from pure
noise / all masks), ``t`` the noise level at the start of the step and ``s`` at its end (t = 1 noise,
t = 0 data unless a method documents otherwise), and the step's tensors as fields. Two generic
methods serve every consumer: :meth:`StepRecord.to_row` (the scalars, for tables and traces) and
:meth:`StepRecord.state` (every tensor, nested records such as the self-conditioning carry included,
under dotted names). Hooks recognise a step by its type.

:class:`StepContext` is where the loop is while a step runs; the shared sampling loop
(:func:`interp.samplers.loop.run`) publishes it, so interventions and hooks know the noise level of
the forward call they see (:func:`current_step`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class StepContext:
    """Position in a sampling loop: step ``index`` going from noise level ``t`` to ``s`` (None where the
    loop is not ours and did not say)."""

    index: int
    t: float | None = None
    s: float | None = None


_CURRENT: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("interp_step", default=None)


def current_step() -> StepContext | None:
    """The step the running sampler is in, if it published one (see :func:`stepping`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def stepping(context: StepContext) -> Iterator[StepContext]:
    """Publish ``context`` for the forward calls made inside the block."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def _flatten(prefix: str, value: Any, out: dict[str, torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        out[prefix] = value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _flatten(f"{prefix}.{f.name}", getattr(value, f.name), out)
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)


_RECORD_TYPES: dict[str, type[StepRecord]] = {}


@dataclass
class StepRecord:
    """Base of every step record (see the module docstring). Subclasses add tensor and scalar fields;
    each is known by its class name, which :meth:`to_row` records (``record``) so that a saved trace can
    rebuild its records (:meth:`rebuild`)."""

    index: int
    t: float
    s: float

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _RECORD_TYPES[cls.__name__] = cls

    @classmethod
    def rebuild(cls, row: dict[str, Any], state: dict[str, torch.Tensor]) -> StepRecord:
        """The record of a trace's step from its ``row`` (scalars, with ``record`` naming the class) and
        ``state`` (tensors by field name). Nested records (``carried.*``) are not rebuilt: None."""
        record_cls = _RECORD_TYPES.get(row.get("record", ""), cls)
        values: dict[str, Any] = {"index": int(row["step"]), "t": row.get("t"), "s": row.get("s")}
        for f in dataclasses.fields(record_cls):
            if f.name in values:
                continue
            if f.name in state:
                values[f.name] = state[f.name]
            elif f.name in row:
                values[f.name] = row[f.name]
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                values[f.name] = None
        return record_cls(**values)

    @property
    def context(self) -> StepContext:
        return StepContext(self.index, self.t, self.s)

    def to_row(self) -> dict[str, Any]:
        """Scalars of this step (``step``, ``t``, ``s``, every int / float / bool / str field, and
        :meth:`summary_scalars`)."""
        row: dict[str, Any] = {"step": self.index, "t": self.t, "s": self.s, "record": type(self).__name__}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("index", "t", "s", "record") and isinstance(value, (bool, int, float, str)):
                row[f.name] = value
        row.update(self.summary_scalars())
        return row

    def summary_scalars(self) -> dict[str, Any]:
        """Derived scalars a subclass adds to :meth:`to_row` (counts, means)."""
        return {}

    def state(self) -> dict[str, torch.Tensor]:
        """Every tensor of this step, nested records flattened to dotted names (``carried.probs``)."""
        out: dict[str, torch.Tensor] = {}
        for f in dataclasses.fields(self):
            _flatten(f.name, getattr(self, f.name), out)
        return out


@dataclass
class Step(StepRecord):
    """A token sampler's state after one step. Token tensors are ``[B, L]`` over the whole sequence
    (prompt included); ``probs`` is the model's predicted distribution ``[B, L, V]`` at this step (zero
    where it made no prediction); ``confidence`` ``[B, L]`` the probability of the token now at each
    position under that distribution. ``committed`` marks positions that received a token this step,
    ``renoised`` positions whose token was thrown back to noise, ``revised`` positions whose token
    changed from one real token to another. ``carried`` is the self-conditioning state passed into
    the next step (or None)."""

    tokens: torch.Tensor
    probs: torch.Tensor
    confidence: torch.Tensor
    committed: torch.Tensor
    renoised: torch.Tensor
    revised: torch.Tensor
    carried: Any = None

    def held_tokens(self) -> torch.Tensor:
        """``[B, L]``: the token each position holds for the next step (for a masked sampler, what it shows)."""
        return self.tokens

    def summary_scalars(self) -> dict[str, Any]:
        return {
            "n_committed": int(self.committed.sum()),
            "n_renoised": int(self.renoised.sum()),
            "n_revised": int(self.revised.sum()),
            "mean_confidence": float(self.confidence.mean()),
        }


@dataclass
class ImageStep(StepRecord):
    """A continuous sampler's state after one step: ``x`` the sample ``[B, C, H, W]`` at noise level
    ``s``, ``x0`` the model's current estimate of the clean data, ``evaluations`` model calls made."""

    x: torch.Tensor
    x0: torch.Tensor
    evaluations: int = 1

    def summary_scalars(self) -> dict[str, Any]:
        return {"x_std": float(self.x.std()), "x0_std": float(self.x0.std())}
