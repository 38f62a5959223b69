"""The contracts between the layers, one Protocol per consumer (TransformerLens' ``model_protocol``
habit). Nothing here is a base class to inherit: a method satisfies a protocol by having its members,
and code that needs one checks for it (``isinstance(method, TokenDenoiser)``) instead of a kind string.

- :class:`Method`: what checkpoints, ``attach`` and the registry need of any method.
- :class:`Trainable`: what the shared trainer (:func:`interp.train.train`) needs.
- :class:`TokenDenoiser`: what masked-diffusion token samplers and the DLM analyses need.
- :class:`ContinuousDenoiser`: what continuous samplers, denoising studies and noise probes need.
- :class:`AnalysisResult`: what every analysis returns (a tidy table, headline numbers, a figure).

The step records samplers yield are in :mod:`interp.steps`; the step-sampler protocol is
:class:`interp.samplers.loop.StepSampler`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Method(Protocol):
    """A registered method: ``kind`` (set by the registry), a validated ``cfg``, its network ``model``,
    ``config_dict()`` (what ``config.json`` stores). Several networks: ``components() -> {name: module}``
    (``model`` included), ``frozen`` names."""

    kind: str
    cfg: Any
    model: nn.Module

    def config_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Trainable(Method, Protocol):
    """What the trainer needs: ``train_dataset(seed)`` (a ``datasets.Dataset``), ``collate(rows)`` (columns
    → tensors), ``prepare(batch, generator)`` (every random draw of a step, for the global batch) and
    ``loss(model, prepared)`` → per-example ``[B]`` or ``{term: [B]}``. Optional: ``phases()``."""

    def train_dataset(self, seed: int) -> Any: ...

    def collate(self, rows: dict[str, list]) -> dict[str, torch.Tensor]: ...

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]: ...

    def loss(self, model: nn.Module, prepared: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]: ...


@runtime_checkable
class TokenDenoiser(Protocol):
    """A masked-diffusion model over tokens: ``predict(canvas [B, L], t [B], carried) -> logits [B, L, V]``
    with special tokens suppressed; ``carry(logits)`` the state passed to the next step (None: nothing);
    ``empty_carry(B, L)`` the state at the first step; ``mask_id``; ``content_ids [V']`` the ids a
    position may hold; ``tokenizer`` (``decode``)."""

    mask_id: int
    content_ids: torch.Tensor
    tokenizer: Any

    def predict(self, canvas: torch.Tensor, t: torch.Tensor, carried: Any) -> torch.Tensor: ...

    def carry(self, logits: torch.Tensor) -> Any: ...

    def empty_carry(self, batch: int, length: int) -> Any: ...


@runtime_checkable
class ContinuousDenoiser(Protocol):
    """A denoiser of continuous data: ``process`` (noising, targets, x̂₀/ε̂), ``predict(x_t, t [B], y) ->
    prediction`` (``y`` class labels or None), ``sample(n, sampler, seed) -> (labels, steps)``,
    ``data(split) -> (x [N, ...], labels [N])``, ``default_sampler()``, ``layer_sites`` (hook names of
    each layer's output: the default probe sites)."""

    process: Any
    layer_sites: str

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...

    def sample(self, n: int, sampler: Any = None, seed: int = 0) -> tuple[torch.Tensor | None, list[Any]]: ...

    def data(self, split: str) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class ScheduledDenoiser(Protocol):
    """Several representation spaces on their own clocks (LWD): ``names`` of the spaces in order,
    ``schedule`` (``clocks(τ) → [..., K]``, ``rates``), ``spaces`` (``classify(k, tokens)``, ``picture``),
    ``sample(n, sampler, seed) -> (labels, steps)`` whose steps carry every space's ``estimates``."""

    names: list[str]
    spaces: Any

    @property
    def schedule(self) -> Any: ...

    def sample(self, n: int, sampler: Any = None, seed: int = 0) -> tuple[torch.Tensor | None, list[Any]]: ...


@runtime_checkable
class AnalysisResult(Protocol):
    """What an analysis returns: ``frame()`` a tidy pandas table, ``summary()`` headline numbers
    (JSON-ready), ``figure()`` a plotly figure."""

    def frame(self) -> Any: ...

    def summary(self) -> dict[str, Any]: ...

    def figure(self, *args: Any, **kwargs: Any) -> Any: ...
