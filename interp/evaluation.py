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
    sampler = sampler or method.spec.default_sampler(method)
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


def lm_train_eval(method, seed: int):
    """``--eval-every`` of a language model: held-out exact match on 100 problems (None for free text)."""
    if method.cfg.task == "shakespeare":
        return None

    def eval_fn(m, step: int) -> dict[str, float]:
        return {"exact_match": evaluate(m, m.cfg.task_config, 100, seed, batch_size=100).exact_match}

    return eval_fn


def evaluate_lm_cli(method, options) -> tuple[dict, str]:
    """``interp eval`` on a language model: held-out exact match on ``--n`` problems of ``--task``."""
    task = TaskConfig(options.get("task", method.cfg.task), options.get("digits", method.cfg.digits))
    n = options.get("n", 500)
    progress = options.get("progress", True)
    cfg = options.sampler(method.spec, method)
    options.done()
    result = evaluate(method, task, n, options.seed, cfg, progress=progress and not options.quiet)
    text = (
        f"{method.checkpoint_path}: exact match {result.exact_match:.4f} on {n} held-out "
        f"{task.name} problems ({task.digits} digits, sampler {cfg.name})"
    )
    return result.to_dict(), text


def feature_net_dir(data: str) -> Path:
    """The shipped feature network for image dataset ``data`` (``feature-net-{data}``, see
    :func:`interp.checkpoints.shipped_dirs`)."""
    from interp.checkpoints import CheckpointError, find_shipped

    try:
        return find_shipped(f"feature-net-{data}")
    except CheckpointError as exc:
        raise DataError(f"no feature network for data {data!r}: {exc}; pass one with --feature-net") from exc


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
    net = load_feature_net(net_dir)
    trained_on = net.meta.get("data")
    if trained_on is not None and trained_on != method.cfg.data:
        raise DataError(
            f"feature network {net_dir} was trained on {trained_on!r}, but the checkpoint's data is "
            f"{method.cfg.data!r}; train one with `interp train feature-net --data {method.cfg.data}`"
        )
    labels, record = method.sample(n, sampler, seed)
    return quality(net, method.data("heldout")[0], record[-1].x, labels, reference=method.reference_images(seed))


def evaluate_images_cli(method, options) -> tuple[dict, str]:
    """``interp eval`` on an image model: FD / precision / recall / classifier accuracy of ``--n`` samples."""
    n = options.get("n", 500)
    feature_net = options.get("feature_net")
    cfg = options.sampler(method.spec, method)
    options.done()
    if n < 2:
        raise DataError(f"--n must be >= 2, got {n}")
    q = evaluate_images(method, n, cfg, options.seed, feature_net)
    text = (
        f"FD {q.fd:.2f} (real-vs-real floor {q.fd_floor:.2f}), precision {q.precision:.3f}, "
        f"recall {q.recall:.3f}, classifier accuracy {q.accuracy}"
    )
    return {"sampler": cfg.name, "steps": cfg.steps, "seed": options.seed, **q.to_dict()}, text
