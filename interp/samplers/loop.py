"""The one sampling loop: drives a step sampler (diffusers' scheduler habit: an object with
``schedule()`` and ``step()``) and publishes each step's :class:`~interp.steps.StepContext` to the
forward calls inside it, so hooks and interventions know the noise level of what they see."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from interp.steps import StepContext, StepRecord, stepping


class StepSampler(Protocol):
    """A sampler as the loop drives it: its ``(t, s)`` per step, and ``step(context)`` that advances
    its own state by one step and returns the record."""

    def schedule(self) -> list[tuple[float, float]]: ...

    def step(self, context: StepContext) -> StepRecord: ...


def run(sampler: StepSampler) -> Iterator[StepRecord]:
    """Yield ``sampler``'s records, one per step, without gradients."""
    for index, (t, s) in enumerate(sampler.schedule()):
        context = StepContext(index, t, s)
        with torch.no_grad(), stepping(context):
            record = sampler.step(context)
        yield record
