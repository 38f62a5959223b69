"""One training loop for every method, on Hugging Face ``accelerate``.

A *method* object supplies ``model`` (or ``components()``: named networks), ``train_dataset(seed)``,
``collate(rows)``, ``prepare(global_batch, generator)`` (every random draw of a step, made for the whole
global batch so that the result does not depend on the number of processes) and ``loss(model, prepared)``
(per-example losses ``[B]``, or a dict of named terms whose sum is optimised and each of which is
logged; deterministic given the prepared batch). The loop adds: AdamW with linear warm-up and cosine
decay, gradient clipping, optional EMA, an eval callback, a JSONL metrics log, a progress bar, atomic
checkpoints every ``ckpt_every`` steps, and exact resume: all randomness of step ``k`` comes from a
generator seeded by ``(seed, k)``, so a run killed at any point and resumed from its last checkpoint
ends with bit-identical weights on CPU.

Several networks: a method may list ``frozen`` components (saved, never optimised nor averaged) and
``phases()``: :class:`Phase` s, each an optimiser over some components and a loss of all of them,
stepped in order every training step (a GAN's discriminator then generator), or only on the steps
where the phase is ``active`` (a short probe, then frozen). Gradients of every component are cleared
before each phase's loss, so one phase's backward never leaks into another's update. The time each
phase takes is logged (``time/<phase>``, seconds since this process started training). Without
``phases()`` there is one phase, ``model``, with ``method.loss``.

Several processes: ``torchrun --nproc_per_node N -m interp.cli train ...``; each process takes
every N-th example of the global batch. (``accelerate launch --cpu --num_processes 2`` silently
runs one process; torchrun with ``Accelerator(cpu=True)`` runs N on gloo.)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.checkpoints import (
    MODEL_FILE,
    TRAINER_DIR,
    check_output,
    component_files,
    components,
    load_safetensors,
    read_header,
    save_checkpoint,
)
from interp.config import Config, check
from interp.errors import CheckpointError

METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step, in every checkpoint folder
Loss = Callable[[Mapping[str, torch.nn.Module], dict[str, torch.Tensor]], "torch.Tensor | dict[str, torch.Tensor]"]


@dataclass
class Phase:
    """One optimiser step of a training step: AdamW over ``components`` minimising ``loss(modules,
    prepared)`` (``modules``: every component by name, trainable ones wrapped for the processes).
    ``lr_scale`` multiplies the schedule's learning rate; ``betas`` are AdamW's. ``active(step, steps)``
    (0-based step, total steps) says whether the phase runs at a step (default: always). ``log()``, if
    given, is called after each of the phase's updates and its values are logged as a row
    ``{"step", "phase", ...}`` (e.g. how a learned schedule moves while it is trained)."""

    name: str
    components: tuple[str, ...]
    loss: Loss
    lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.99)
    active: Callable[[int, int], bool] | None = None
    log: Callable[[], dict[str, Any]] | None = None


@dataclass
class TrainConfig(Config):
    """Optimisation settings. ``batch_size`` is the global batch (split across processes)."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.0
    ckpt_every: int = 500
    eval_every: int = 0
    log_every: int = 25
    seed: int = 0

    def validate(self) -> None:
        check(isinstance(self.steps, int) and self.steps >= 1, f"steps must be >= 1, got {self.steps!r}")
        check(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            f"batch_size must be >= 1, got {self.batch_size!r}",
        )
        check(self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        check(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup!r}")
        check(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        check(0 <= self.ema < 1, f"ema must be in [0, 1), got {self.ema!r}")
        check(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip!r}")
        for name in ("ckpt_every", "eval_every", "log_every"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0 (0 = never), got {getattr(self, name)!r}")

    def lr_at(self, step: int) -> float:
        """Learning rate for optimisation step ``step`` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    world_size: int = 1


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def phases(method: Any) -> list[Phase]:
    """The method's phases, or the single default one (``model`` with ``method.loss``)."""
    get = getattr(method, "phases", None)
    if callable(get):
        return list(get())
    return [Phase("model", ("model",), lambda modules, prepared: method.loss(modules["model"], prepared))]


def _named_parameters(modules: Mapping[str, torch.nn.Module], names: tuple[str, ...]):
    """Parameters of ``names``; a lone ``model`` keeps bare parameter names (the single-network layout)."""
    for component in names:
        for name, p in modules[component].named_parameters():
            yield (name if names == ("model",) else f"{component}.{name}"), p


def _param_groups(named: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> tuple[list[dict], list[str]]:
    decay, no_decay, names = [], [], []
    for name, p in named:
        (decay if p.dim() >= 2 else no_decay).append((name, p))
    for group in (decay, no_decay):
        names += [n for n, _ in group]
    groups = [
        {"params": [p for _, p in decay], "weight_decay": weight_decay},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0},
    ]
    return groups, names


def _optimizer_tensors(opt: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    state = opt.state_dict()["state"]
    out = {}
    for index, per_param in state.items():
        for key, value in per_param.items():
            out[f"{names[index]}::{key}"] = torch.as_tensor(value).clone()
    return out


def _load_optimizer_tensors(opt: torch.optim.Optimizer, names: list[str], tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    index = {n: i for i, n in enumerate(names)}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, field_name = key.partition("::")
        if name not in index:
            raise CheckpointError(f"optimizer state names unknown parameter {name!r}")
        state.setdefault(index[name], {})[field_name] = value
    sd["state"] = state
    opt.load_state_dict(sd)


def _optimizer_file(phase: str, single: bool) -> str:
    return "optimizer" if single else f"optimizer-{phase}"


def _total(result: torch.Tensor | dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The optimised scalar of a loss result and its named terms (means) for the log."""
    if isinstance(result, dict):
        if not result:
            raise CheckpointError("a method's loss returned no terms")
        terms = {f"{prefix}{name}": value.mean() for name, value in result.items()}
        return sum(terms.values()), terms  # type: ignore[return-value]
    return result.mean(), {}


def train(
    method: Any,
    out_dir: str | os.PathLike[str],
    cfg: TrainConfig,
    *,
    eval_fn: Callable[[Any, int], dict[str, float]] | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = True,
    on_step_end: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``method``'s components and write checkpoints to ``out_dir`` (see the module docstring).

    If ``out_dir`` holds a checkpoint with trainer state for the same kind and config, training
    resumes from it; a checkpoint of another config is an error rather than being overwritten.
    ``on_step_end(step)`` is called after each step (``step`` counts completed steps), after that
    step's checkpoint is written.
    """
    from accelerate import Accelerator

    out_dir = Path(out_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise CheckpointError(f"batch_size {cfg.batch_size} is not divisible by the number of processes {world}")

    check_output(out_dir, method.kind)
    modules = components(method)
    frozen = set(getattr(method, "frozen", ()))
    unknown = frozen - set(modules)
    if unknown:
        raise CheckpointError(f"frozen component(s) {sorted(unknown)} are not components of {method.kind!r}")
    trainable = [n for n in modules if n not in frozen]
    plan = phases(method)
    if not plan:
        raise CheckpointError(f"method {method.kind!r} has no training phases")
    single = len(plan) == 1 and plan[0].components == ("model",)
    optimizers, param_names = {}, {}
    for phase in plan:
        bad = [c for c in phase.components if c not in trainable]
        if bad:
            raise CheckpointError(f"phase {phase.name!r} optimises {bad}, which are frozen or not components")
        groups, param_names[phase.name] = _param_groups(
            list(_named_parameters(modules, phase.components)), cfg.weight_decay
        )
        optimizers[phase.name] = torch.optim.AdamW(groups, lr=cfg.lr, betas=phase.betas)
    for name in frozen:
        modules[name].requires_grad_(False).eval()
    ema = (
        {n: {k: v.detach().clone() for k, v in modules[n].state_dict().items()} for n in trainable}
        if cfg.ema > 0
        else None
    )
    metrics: list[dict[str, Any]] = []
    start, resumed_from = 0, None

    if resume and (out_dir / TRAINER_DIR / "state.json").is_file():
        start, metrics, ema = _resume(method, out_dir, cfg, optimizers, param_names, ema, single)
        resumed_from = start
    elif out_dir.exists() and any(out_dir.iterdir()) and (out_dir / "config.json").exists():
        raise CheckpointError(f"{out_dir} already holds a checkpoint without trainer state; choose another --out")

    wrapped = dict(modules)
    for name in trainable:
        wrapped[name] = accelerator.prepare(modules[name])
    for name in optimizers:
        optimizers[name] = accelerator.prepare(optimizers[name])
    dataset = method.collate(method.train_dataset(cfg.seed)[:])
    n_rows = len(next(iter(dataset.values())))
    pids = accelerator.gather(torch.tensor([os.getpid()])).tolist()
    run_meta = {
        **(meta or {}),
        "train": cfg.to_dict(),
        "world_size": world,
        "process_ids": pids,
        "torch": torch.__version__,
    }

    def raw(name: str) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in accelerator.unwrap_model(wrapped[name]).state_dict().items()}

    def write(step: int) -> None:
        if accelerator.is_main_process:
            tensors = {
                _optimizer_file(p, single): _optimizer_tensors(opt, param_names[p]) for p, opt in optimizers.items()
            }
            weights = {}
            for name in modules:
                if name in frozen:
                    weights[name] = modules[name].state_dict()
                elif ema is not None:
                    weights[name] = ema[name]
                    tensors[f"train_{name}"] = raw(name)
                else:
                    weights[name] = raw(name)
            state = {
                "step": step,
                "kind": method.kind,
                "config": method.config_dict(),
                "train": cfg.to_dict(),
                "metrics": metrics,
            }
            log = "".join(json.dumps(row, sort_keys=True) + "\n" for row in metrics)
            save_checkpoint(
                out_dir,
                method,
                weights=weights,
                meta={**run_meta, "step": step},
                trainer_state=state,
                trainer_tensors=tensors,
                text_files={METRICS_FILE: log},
            )
        accelerator.wait_for_everyone()

    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=not (progress and accelerator.is_local_main_process),
        desc=f"train {method.kind}",
        unit="step",
        dynamic_ncols=True,
    )
    t0, window, term_window, phase_time = time.perf_counter(), [], {}, {}
    for name in trainable:
        wrapped[name].train()
    for step in range(start, cfg.steps):
        gen = step_generator(cfg.seed, step)
        idx = torch.randint(n_rows, (cfg.batch_size,), generator=gen)
        prepared = method.prepare({k: v[idx] for k, v in dataset.items()}, gen)
        local = {k: v[rank::world] for k, v in prepared.items()}
        step_loss, grad_norm = torch.zeros(()), None
        done = step + 1
        for phase in plan:
            if phase.active is not None and not phase.active(step, cfg.steps):
                continue
            began = time.perf_counter()
            opt = optimizers[phase.name]
            for g in opt.param_groups:
                g["lr"] = cfg.lr_at(step) * phase.lr_scale
            for name in trainable:
                wrapped[name].zero_grad(set_to_none=True)
            loss, terms = _total(phase.loss(wrapped, local), "" if single else f"{phase.name}/")
            accelerator.backward(loss)
            if cfg.grad_clip > 0:
                params = [p for c in phase.components for p in wrapped[c].parameters()]
                grad_norm = accelerator.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step_loss = step_loss + loss.detach()
            for k, v in terms.items():
                term_window.setdefault(k, []).append(accelerator.reduce(v.detach(), reduction="mean").item())
            phase_time[phase.name] = phase_time.get(phase.name, 0.0) + time.perf_counter() - began
            if phase.log is not None:
                metrics.append({"step": done, "phase": phase.name, **phase.log()})
        if ema is not None:
            with torch.no_grad():
                for name in trainable:
                    for k, v in accelerator.unwrap_model(wrapped[name]).state_dict().items():
                        target = ema[name][k]
                        target.mul_(cfg.ema).add_(v.detach(), alpha=1 - cfg.ema) if v.is_floating_point() else (
                            target.copy_(v)
                        )
        window.append(accelerator.reduce(step_loss, reduction="mean").item())
        if cfg.log_every and (done % cfg.log_every == 0 or done == cfg.steps):
            row = {
                "step": done,
                "loss": sum(window) / len(window),
                "lr": cfg.lr_at(step),
                "elapsed_s": round(time.perf_counter() - t0, 3),
            }
            row.update({k: sum(v) / len(v) for k, v in term_window.items()})
            if not single:
                row.update({f"time/{name}": round(seconds, 4) for name, seconds in phase_time.items()})
            if grad_norm is not None and single:
                row["grad_norm"] = float(grad_norm)
            metrics.append(row)
            window, term_window = [], {}
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if eval_fn is not None and cfg.eval_every and done % cfg.eval_every == 0 and accelerator.is_main_process:
            for name in trainable:
                wrapped[name].eval()
            metrics.append({"step": done, **eval_fn(method, done)})
            for name in trainable:
                wrapped[name].train()
        bar.update(1)
        if done == cfg.steps or (cfg.ckpt_every and done % cfg.ckpt_every == 0):
            write(done)
        if on_step_end is not None:
            on_step_end(done)
    bar.close()
    for name in trainable:
        module = accelerator.unwrap_model(wrapped[name])
        module.eval()
        if ema is not None:
            module.load_state_dict(ema[name])
        _set_component(method, name, module)
    return TrainResult(out_dir=out_dir, step=cfg.steps, metrics=metrics, resumed_from=resumed_from, world_size=world)


def _set_component(method: Any, name: str, module: torch.nn.Module) -> None:
    if name == "model" and not callable(getattr(method, "components", None)):
        method.model = module
    elif callable(getattr(method, "set_component", None)):
        method.set_component(name, module)


def _resume(method, out_dir: Path, cfg: TrainConfig, optimizers, param_names, ema, single: bool):
    header = read_header(out_dir)
    state_file = out_dir / TRAINER_DIR / "state.json"
    try:
        state = json.loads(state_file.read_text())
        for key, kind in (("step", int), ("config", dict), ("train", dict), ("metrics", list)):
            if not isinstance(state.get(key), kind):
                raise ValueError(f"field {key!r} must be {kind.__name__}")
    except (ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{state_file}: not valid JSON trainer state ({exc}); remove {state_file.parent} to start over, "
            "or choose another --out"
        ) from exc
    if header["kind"] != method.kind or state["config"] != method.config_dict():
        raise CheckpointError(
            f"{out_dir} holds a {header['kind']!r} checkpoint of another configuration; refusing to resume or overwrite it "
            "(choose another --out)"
        )
    saved_train = {k: v for k, v in state["train"].items() if k != "steps"}
    wanted = {k: v for k, v in cfg.to_dict().items() if k != "steps"}
    if saved_train != wanted:
        diff = sorted(k for k in wanted if saved_train.get(k) != wanted[k])
        raise CheckpointError(f"{out_dir}: cannot resume, training settings differ in {diff}")
    step = int(state["step"])
    if step > cfg.steps:
        raise CheckpointError(f"{out_dir} is already at step {step} > requested steps {cfg.steps}")
    modules = components(method)
    files = header.get("components", component_files(["model"]))
    for name, module in modules.items():
        saved = out_dir / (files.get(name, MODEL_FILE) if isinstance(files, dict) else MODEL_FILE)
        train_file = out_dir / TRAINER_DIR / f"train_{name}.safetensors"
        module.load_state_dict(load_safetensors(train_file if ema is not None and name in ema else saved))
        if ema is not None and name in ema:
            ema[name] = load_safetensors(saved)
    for phase, opt in optimizers.items():
        file = out_dir / TRAINER_DIR / f"{_optimizer_file(phase, single)}.safetensors"
        _load_optimizer_tensors(opt, param_names[phase], load_safetensors(file))
    return step, list(state["metrics"]), ema
