"""Sampling runs on a task's held-out problems, as the analyses consume them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.data import TaskConfig, problems
from interp.samplers import SamplerConfig, Step, sample_steps


@dataclass
class TaskRun:
    steps: list[Step]
    prompt_len: int
    problems: list[tuple[str, str]]
    sampler: SamplerConfig
    seed: int

    @property
    def outputs(self) -> torch.Tensor:
        return self.steps[-1].tokens[:, self.prompt_len :]


def sample_task(method, n: int, seed: int, sampler: SamplerConfig, task: TaskConfig | None = None) -> TaskRun:
    """Run ``sampler`` on ``n`` held-out problems of ``task`` (default: the checkpoint's own held-out prompts,
    problems of its task or openings of held-out text) in one batch."""
    rows = problems(task, "heldout", n, seed) if task is not None else method.heldout(n, seed)
    ids = method.encode_prompts([p for p, _ in rows])
    steps = list(sample_steps(method, ids, sampler, torch.Generator().manual_seed(seed)))
    return TaskRun(steps=steps, prompt_len=ids.shape[1], problems=rows, sampler=sampler, seed=seed)
