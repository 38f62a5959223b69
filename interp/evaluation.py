"""Score checkpoints: generate answers for prompts and score them on a task (language models);
sample images and measure their quality against held-out data (image models)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.data import TaskConfig, problems
from interp.errors import DataError
from interp.samplers import SamplerConfig, run_to_end, sample_steps


def default_sampler(method) -> SamplerConfig:
    return SamplerConfig(name="ar" if method.kind == "ar" else "mdlm")


def generate(
    method,
    prompts: list[str],
    sampler: SamplerConfig,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> list[str]:
    """Answers (the generated part only, decoded) for equal-length ``prompts``."""
    out: list[str] = []
    generator = torch.Generator().manual_seed(seed)
    method.model.eval()
    chunks = range(0, len(prompts), batch_size)
    for start in tqdm(chunks, disable=not progress, desc=f"sample {sampler.name}", unit="batch", leave=False):
        ids = method.encode_prompts(prompts[start : start + batch_size])
        tokens, _ = run_to_end(sample_steps(method, ids, sampler, generator))
        out += [method.tokenizer.decode(row[ids.shape[1] :], show_special=True) for row in tokens]
    return out


@dataclass
class EvalResult:
    exact_match: float
    n: int
    task: str
    digits: int
    sampler: str
    steps: int | None
    seed: int
    tokens_per_s: float
    examples: list[dict[str, str]]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def evaluate(
    method,
    task: TaskConfig,
    n: int,
    seed: int,
    sampler: SamplerConfig | None = None,
    progress: bool = False,
    batch_size: int = 256,
) -> EvalResult:
    """Held-out exact match of ``method`` on ``n`` problems of ``task``."""
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    if task.alphabet != method.tokenizer.alphabet or task.prompt_len + task.answer_len != method.model.cfg.n_ctx:
        trained = f"{method.cfg.task} with {method.cfg.digits} digits"
        raise DataError(
            f"the checkpoint was trained on {trained} (context {method.model.cfg.n_ctx}); "
            f"task {task.name} with {task.digits} digits does not fit it"
        )
    sampler = sampler or default_sampler(method)
    rows = problems(task, "heldout", n, seed)
    start = time.perf_counter()
    answers = generate(method, [p for p, _ in rows], sampler, seed=seed, progress=progress, batch_size=batch_size)
    elapsed = time.perf_counter() - start
    correct = [a == gold for a, (_, gold) in zip(answers, rows, strict=True)]
    examples = [
        {"prompt": p, "answer": gold, "output": a} for (p, gold), a in list(zip(rows, answers, strict=True))[:5]
    ]
    return EvalResult(
        exact_match=sum(correct) / n,
        n=n,
        task=task.name,
        digits=task.digits,
        sampler=sampler.name,
        steps=sampler.steps,
        seed=seed,
        tokens_per_s=n * task.answer_len / elapsed,
        examples=examples,
    )


SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


def feature_net_dir(data: str) -> Path:
    """The shipped feature network for image dataset ``data`` (``checkpoints/feature-net-{data}``)."""
    return SHIPPED_DIR / f"feature-net-{data}"


def evaluate_images(
    method,
    n: int,
    sampler=None,
    seed: int = 0,
    feature_net: str | os.PathLike[str] | None = None,
):
    """Sample ``n`` images of an image checkpoint and compare them with its data's held-out split in the
    feature space of a small classifier (:mod:`interp.analyses.quality`). The FD floor is the held-out
    split against ``n`` training images. Returns a :class:`~interp.analyses.quality.Quality`."""
    from interp.analyses.quality import load_feature_net, quality

    if n < 2:
        raise DataError(f"n must be >= 2 to measure sample quality, got {n}")
    net_dir = Path(feature_net) if feature_net is not None else feature_net_dir(method.cfg.data)
    if not net_dir.exists():
        raise DataError(f"no feature network for data {method.cfg.data!r} at {net_dir}; pass one explicitly")
    net = load_feature_net(net_dir)
    trained_on = net.meta.get("data")
    if trained_on is not None and trained_on != method.cfg.data:
        raise DataError(
            f"feature network {net_dir} was trained on {trained_on!r}, but the checkpoint's data is "
            f"{method.cfg.data!r}; train one with `interp train feature-net --data {method.cfg.data}`"
        )
    labels, record = method.sample(n, sampler, seed)
    return quality(net, method.data("heldout")[0], record[-1].x, labels, reference=method.reference_images(seed))
