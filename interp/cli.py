"""``interp`` command line. Every command takes ``--seed``; bad input exits with a one-line error."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.errors import InterpError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
train_app = typer.Typer(
    no_args_is_help=True, help="Train a model; writes a checkpoint folder (resumes if one is there)."
)
app.add_typer(train_app, name="train")

Seed = Annotated[int, typer.Option(help="Random seed (same seed, same result on CPU).")]
Checkpoint = Annotated[Path, typer.Option("--checkpoint", "-c", help="Checkpoint folder.")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def friendly(fn):
    """Turn interp's own errors into a one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InterpError as exc:
            _fail(str(exc))

    return wrapper


def _emit(payload: dict, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(payload) if as_json else text)


# --- train ------------------------------------------------------------------------------------
def _train_lm(
    kind: str,
    out: Path,
    eval_every: int,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    ema: float,
    ckpt_every: int,
    log_every: int,
    progress: bool,
    **cfg_fields: Any,
) -> None:
    from interp.methods import METHODS
    from interp.train import TrainConfig, seed_everything, train

    method_cls, cfg_cls = METHODS[kind]
    cfg = cfg_cls(**cfg_fields)
    tcfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        ema=ema,
        ckpt_every=ckpt_every,
        log_every=log_every,
        eval_every=eval_every,
        seed=seed,
    )
    seed_everything(seed)
    method = method_cls(cfg)
    command = "interp " + " ".join(sys.argv[1:])
    eval_fn = None
    if eval_every and cfg.task != "shakespeare":
        from interp.evaluation import evaluate

        def eval_fn(m, step):  # held-out exact match, logged in metrics.jsonl
            return {"exact_match": evaluate(m, cfg.task_config, 100, seed, batch_size=100).exact_match}

    result = train(method, out, tcfg, eval_fn=eval_fn, meta={"command": command, "seed": seed}, progress=progress)
    if result.metrics and _is_main_process():
        last = [m for m in result.metrics if "loss" in m][-1]
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
        typer.echo(
            f"trained {kind} for {result.step} steps{resumed} on {result.world_size} process(es); "
            f"final loss {last['loss']:.4f}; checkpoint: {out}"
        )


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


@train_app.command("dlm")
@friendly
def train_dlm(
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write (and resume from).")],
    task: Annotated[str, typer.Option(help="addition | sorting | addition_working | shakespeare")] = "addition",
    digits: int = 3,
    seq_len: Annotated[int, typer.Option(help="Block length for shakespeare.")] = 64,
    selfcond: Annotated[str, typer.Option(help="none | continuous | topk | topp")] = "continuous",
    selfcond_k: int = 3,
    selfcond_p: float = 0.9,
    time_conditioning: bool = False,
    uniform_frac: Annotated[float, typer.Option(help="Share of corrupted tokens made random instead of <mask>.")] = 0.1,
    d_model: int = 128,
    n_layers: int = 4,
    n_heads: int = 4,
    d_mlp: int = 512,
    train_size: int = 50_000,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: int = 100,
    ema: Annotated[float, typer.Option(help="EMA decay (0 = off).")] = 0.0,
    ckpt_every: int = 500,
    log_every: int = 25,
    eval_every: Annotated[
        int, typer.Option(help="Every N steps, exact match on 100 held-out problems (0 = never).")
    ] = 0,
    seed: Seed = 0,
    progress: bool = True,
) -> None:
    """Train a masked-diffusion LM (DiffusionGemma-style self-conditioning)."""
    _train_lm(
        "dlm",
        out,
        eval_every,
        seed,
        steps,
        batch_size,
        lr,
        warmup,
        ema,
        ckpt_every,
        log_every,
        progress,
        task=task,
        digits=digits,
        seq_len=seq_len,
        selfcond=selfcond,
        selfcond_k=selfcond_k,
        selfcond_p=selfcond_p,
        time_conditioning=time_conditioning,
        uniform_frac=uniform_frac,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        d_mlp=d_mlp,
        train_size=train_size,
    )


@train_app.command("ar")
@friendly
def train_ar(
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write (and resume from).")],
    task: Annotated[str, typer.Option(help="addition | sorting | addition_working | shakespeare")] = "addition",
    digits: int = 3,
    seq_len: int = 64,
    d_model: int = 128,
    n_layers: int = 4,
    n_heads: int = 4,
    d_mlp: int = 512,
    train_size: int = 50_000,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: int = 100,
    ema: float = 0.0,
    ckpt_every: int = 500,
    log_every: int = 25,
    eval_every: Annotated[
        int, typer.Option(help="Every N steps, exact match on 100 held-out problems (0 = never).")
    ] = 0,
    seed: Seed = 0,
    progress: bool = True,
) -> None:
    """Train the autoregressive baseline (same backbone, causal)."""
    _train_lm(
        "ar",
        out,
        eval_every,
        seed,
        steps,
        batch_size,
        lr,
        warmup,
        ema,
        ckpt_every,
        log_every,
        progress,
        task=task,
        digits=digits,
        seq_len=seq_len,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        d_mlp=d_mlp,
        train_size=train_size,
    )


@train_app.command("image")
@friendly
def train_image(
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write (and resume from).")],
    model: Annotated[str, typer.Option("--model", help="dit | unet")] = "dit",
    process: Annotated[str, typer.Option(help="flow | ddpm")] = "flow",
    time_conditioning: Annotated[str, typer.Option(help="on | off (off: the time-agnostic denoiser)")] = "on",
    data: Annotated[
        str, typer.Option(help="digits | mnist5k | fashion-mnist | cifar10-bin:PATH | folder:PATH")
    ] = "digits",
    class_conditional: Annotated[bool, typer.Option(help="Condition on the dataset's labels.")] = True,
    width: int = 64,
    depth: int = 4,
    n_heads: int = 4,
    patch_size: int = 2,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 2e-3,
    warmup: int = 100,
    ema: Annotated[float, typer.Option(help="EMA decay (0 = off).")] = 0.0,
    ckpt_every: int = 500,
    log_every: int = 25,
    seed: Seed = 0,
    progress: bool = True,
) -> None:
    """Train an image denoiser (DiT or U-Net; flow matching or DDPM; with or without the timestep)."""
    import numpy as np

    from interp.data.images import image_dataset
    from interp.methods import ImageDiffusion, ImageDiffusionConfig
    from interp.train import TrainConfig, seed_everything, train

    if time_conditioning not in ("on", "off"):
        _fail(f"--time-conditioning must be on or off, got {time_conditioning!r}")
    sample = image_dataset(data, "train")
    c, h, w = np.asarray(sample[0]["image"]).shape
    if h != w:
        _fail(f"{data}: images are {h}x{w}; only square images are supported")
    n_classes = int(np.asarray(sample[:]["label"]).max()) + 1 if class_conditional else 0
    cfg = ImageDiffusionConfig(
        data=data,
        process=process,
        architecture=model,
        time_conditioning=time_conditioning == "on",
        image_size=h,
        channels=c,
        n_classes=n_classes,
        width=width,
        depth=depth,
        n_heads=n_heads,
        patch_size=patch_size,
    )
    tcfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        ema=ema,
        ckpt_every=ckpt_every,
        log_every=log_every,
        seed=seed,
    )
    seed_everything(seed)
    method = ImageDiffusion(cfg)
    result = train(
        method, out, tcfg, meta={"command": "interp " + " ".join(sys.argv[1:]), "seed": seed}, progress=progress
    )
    if result.metrics and _is_main_process():
        last = [m for m in result.metrics if "loss" in m][-1]
        typer.echo(
            f"trained image ({model}, {process}, time conditioning {time_conditioning}) for {result.step} steps; "
            f"final loss {last['loss']:.4f}; checkpoint: {out}"
        )


@train_app.command("feature-net")
@friendly
def train_feature_net_cmd(
    out: Annotated[Path, typer.Option(help="Folder to write (atomically).")],
    data: Annotated[str, typer.Option(help="Image dataset (as for `interp train image`).")] = "digits",
    steps: Annotated[int, typer.Option(help="Adam steps, batch 128.")] = 600,
    seed: Seed = 0,
) -> None:
    """Train the small classifier whose feature space `interp eval` measures sample quality in
    (checkpoints/feature-net-DATA is found automatically; otherwise pass --feature-net)."""
    from interp.analyses.quality import classifier_accuracy, save_feature_net, train_feature_net
    from interp.data.images import image_tensors

    if steps < 1:
        _fail(f"--steps must be >= 1, got {steps}")
    net = train_feature_net(*image_tensors(data, "train"), steps=steps, seed=seed)
    accuracy = classifier_accuracy(net, *image_tensors(data, "heldout"))
    meta = {"data": data, "steps": steps, "seed": seed, "heldout_accuracy": round(accuracy, 4)}
    save_feature_net(net, out, meta=meta)
    typer.echo(f"feature network for {data}: held-out accuracy {accuracy:.3f}; written to {out}")


# --- sample / eval ---------------------------------------------------------------------------
def _sampler_config(
    method,
    sampler: str | None,
    steps: int | None,
    temperature: float,
    block_length: int,
    entropy_bound: float,
    renoise: str,
):
    from interp.evaluation import default_sampler
    from interp.samplers import SamplerConfig

    name = sampler or default_sampler(method).name
    return SamplerConfig(
        name=name,
        steps=steps,
        temperature=temperature,
        block_length=block_length,
        entropy_bound=entropy_bound,
        renoise=renoise,
    )


SamplerName = Annotated[
    str | None, typer.Option("--sampler", help="mdlm | llada | entropy | ar (default: mdlm, or ar for AR checkpoints)")
]
Steps = Annotated[int | None, typer.Option("--steps", help="Denoising steps (default: one per answer token).")]


@app.command()
@friendly
def sample(
    checkpoint: Checkpoint,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="Prompt (repeatable; equal lengths); LM checkpoints.")
    ] = None,
    sampler: SamplerName = None,
    steps: Steps = None,
    temperature: float = 0.0,
    block_length: int = 0,
    entropy_bound: float = 1.0,
    renoise: str = "uniform",
    show_steps: Annotated[bool, typer.Option(help="Print the canvas after every step.")] = False,
    n: Annotated[int, typer.Option(help="Images to sample (image checkpoints).")] = 16,
    out: Annotated[Path | None, typer.Option(help="PNG grid to write (image checkpoints).")] = None,
    seed: Seed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Generate: the continuation of prompts (language models) or a grid of images (image models)."""
    import torch

    from interp.checkpoints import load_checkpoint, read_header
    from interp.samplers import run_to_end, sample_steps

    if read_header(checkpoint)["kind"] == "image":
        _sample_images_cmd(checkpoint, sampler, steps, n, out, seed, as_json)
        return
    if not prompt:
        _fail("--prompt is required for language-model checkpoints")
    method = load_checkpoint(checkpoint, expected_kind=("dlm", "ar"))
    cfg = _sampler_config(method, sampler, steps, temperature, block_length, entropy_bound, renoise)
    ids = method.encode_prompts(prompt)
    tokens, record = run_to_end(sample_steps(method, ids, cfg, torch.Generator().manual_seed(seed)))
    outputs = [method.tokenizer.decode(row[ids.shape[1] :], show_special=True) for row in tokens]
    if show_steps and not as_json:
        for st in record:
            canvas = " | ".join(method.tokenizer.decode(row, show_special=True) for row in st.tokens)
            typer.echo(f"step {st.index:3d} t={st.t:.3f}  {canvas}")
    payload = {
        "checkpoint": str(checkpoint),
        "sampler": cfg.name,
        "steps": len(record),
        "seed": seed,
        "prompts": prompt,
        "outputs": outputs,
    }
    _emit(payload, as_json, "\n".join(f"{p}{o}" for p, o in zip(prompt, outputs, strict=True)))


def _image_sampler(method, sampler: str | None, steps: int | None):
    from interp.samplers import ImageSamplerConfig

    default = method.default_sampler()
    return ImageSamplerConfig(name=sampler or default.name, steps=steps or default.steps)


def _sample_images_cmd(
    checkpoint: Path, sampler: str | None, steps: int | None, n: int, out: Path | None, seed: int, as_json: bool
) -> None:
    from interp.checkpoints import load_checkpoint
    from interp.io import atomic_write_bytes
    from interp.reports.images import png_grid

    if n < 1:
        _fail(f"--n must be >= 1, got {n}")
    if out is None:
        _fail("--out grid.png is required for image checkpoints")
    method = load_checkpoint(checkpoint, expected_kind="image")
    cfg = _image_sampler(method, sampler, steps)
    _, record = method.sample(n, cfg, seed)
    atomic_write_bytes(out, png_grid(record[-1].x))
    payload = {
        "checkpoint": str(checkpoint),
        "sampler": cfg.name,
        "steps": cfg.steps,
        "n": n,
        "seed": seed,
        "out": str(out),
        "evaluations": sum(s.evaluations for s in record),
    }
    _emit(payload, as_json, f"{n} images written to {out}")


def _eval_images(
    checkpoint: Path, n: int, sampler: str | None, steps: int | None, feature_net: Path | None, seed: int, as_json: bool
) -> None:
    from interp.checkpoints import load_checkpoint
    from interp.evaluation import evaluate_images

    if n < 2:
        _fail(f"--n must be >= 2, got {n}")
    method = load_checkpoint(checkpoint, expected_kind="image")
    cfg = _image_sampler(method, sampler, steps)
    q = evaluate_images(method, n, cfg, seed, feature_net)
    payload = {"checkpoint": str(checkpoint), "sampler": cfg.name, "steps": cfg.steps, "seed": seed, **q.to_dict()}
    _emit(
        payload,
        as_json,
        f"FD {q.fd:.2f} (real-vs-real floor {q.fd_floor:.2f}), precision {q.precision:.3f}, "
        f"recall {q.recall:.3f}, classifier accuracy {q.accuracy}",
    )


@app.command("eval")
@friendly
def evaluate_cmd(
    checkpoint: Checkpoint,
    task: Annotated[str | None, typer.Option(help="Task (default: the checkpoint's).")] = None,
    digits: Annotated[int | None, typer.Option(help="Task size (default: the checkpoint's).")] = None,
    n: Annotated[int, typer.Option(help="Number of held-out problems.")] = 500,
    sampler: SamplerName = None,
    steps: Steps = None,
    temperature: float = 0.0,
    block_length: int = 0,
    entropy_bound: float = 1.0,
    renoise: str = "uniform",
    feature_net: Annotated[
        Path | None, typer.Option(help="Feature network for image metrics (default: shipped one).")
    ] = None,
    seed: Seed = 0,
    progress: bool = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Held-out exact match (language models) or FD / precision / recall (image models) of a checkpoint."""
    from interp.checkpoints import read_header

    if read_header(checkpoint)["kind"] == "image":
        _eval_images(checkpoint, n, sampler, steps, feature_net, seed, as_json)
        return
    from interp.checkpoints import load_checkpoint
    from interp.data import TaskConfig
    from interp.evaluation import evaluate

    method = load_checkpoint(checkpoint, expected_kind=("dlm", "ar"))
    task_cfg = TaskConfig(task or method.cfg.task, digits if digits is not None else method.cfg.digits)
    cfg = _sampler_config(method, sampler, steps, temperature, block_length, entropy_bound, renoise)
    result = evaluate(method, task_cfg, n, seed, cfg, progress=progress and not as_json)
    payload = {"checkpoint": str(checkpoint), **result.to_dict()}
    _emit(
        payload,
        as_json,
        f"{checkpoint}: exact match {result.exact_match:.4f} on {n} held-out "
        f"{task_cfg.name} problems ({task_cfg.digits} digits, sampler {cfg.name})",
    )


def _parse_steps(spec: str | None) -> list[int] | None:
    """``"0,3,5-7"`` → ``[0, 3, 5, 6, 7]``."""
    if spec is None:
        return None
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        _fail(f"--capture-steps must look like '0,3,5-7', got {spec!r}")
    return out


@app.command()
@friendly
def trace(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Option(help="Trace folder to write (atomically).")],
    capture: Annotated[
        list[str] | None,
        typer.Option(help="Hook names or glob patterns (repeatable); default blocks.*.hook_resid_post."),
    ] = None,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="Prompt(s); default: 4 held-out problems.")
    ] = None,
    sampler: SamplerName = None,
    steps: Steps = None,
    capture_steps: Annotated[str | None, typer.Option(help="Steps to record, e.g. '0,3,5-7' (default: all).")] = None,
    positions: Annotated[str | None, typer.Option(help="Positions to record, 'start:stop' (default: all).")] = None,
    dtype: Annotated[str, typer.Option(help="float32 | float16 | bfloat16")] = "float32",
    ram_budget_mb: Annotated[float | None, typer.Option(help="Spill activations to disk beyond this.")] = None,
    spill_dir: Annotated[Path | None, typer.Option(help="Where spilled shards go (default: a temp folder).")] = None,
    temperature: float = 0.0,
    seed: Seed = 0,
    progress: bool = True,
) -> None:
    """Run a sampler under instrumentation and save every captured activation at every step."""
    import torch

    from interp.checkpoints import load_checkpoint
    from interp.data import problems
    from interp.hooks import attach
    from interp.samplers import sample_steps

    capture = capture or ["blocks.*.hook_resid_post"]
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        _fail(f"--dtype must be one of {list(dtypes)}, got {dtype!r}")
    position_slice = None
    if positions is not None:
        try:
            lo, hi = positions.split(":")
            position_slice = slice(int(lo) if lo else None, int(hi) if hi else None)
        except ValueError:
            _fail(f"--positions must look like 'start:stop', got {positions!r}")
    method = load_checkpoint(checkpoint, expected_kind=("dlm", "ar"))
    prompts = prompt or [p for p, _ in problems(method.cfg.task_config, "heldout", 4, seed)]
    cfg = _sampler_config(method, sampler, steps, temperature, 0, 1.0, "uniform")
    ids = method.encode_prompts(prompts)
    inst = attach(method)
    result = inst.trace(
        lambda: sample_steps(method, ids, cfg, torch.Generator().manual_seed(seed)),
        capture=capture,
        steps=_parse_steps(capture_steps),
        positions=position_slice,
        dtype=dtypes[dtype],
        ram_budget=int(ram_budget_mb * 2**20) if ram_budget_mb is not None else None,
        spill_dir=str(spill_dir) if spill_dir is not None else None,
        progress=progress,
    )
    result.meta.update(
        {"checkpoint": str(checkpoint), "prompts": prompts, "sampler": cfg.to_dict(), "seed": seed, "capture": capture}
    )
    result.save(out)
    result.close()
    typer.echo(f"trace of {result.n_steps} steps, {len(result.names)} hooks written to {out}")


@app.command("trace-info")
@friendly
def trace_info(
    trace_dir: Annotated[Path, typer.Argument(help="Trace folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Names, shapes and steps of a saved trace."""
    from interp.hooks import Trace

    info = Trace.load(trace_dir).info()
    text = "\n".join([f"{info['n_steps']} steps; hooks:"] + [f"  {n} {info['shapes'][n]}" for n in info["names"]])
    _emit(info, as_json, text)


@app.command()
@friendly
def depth(
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="Checkpoint folder.")] = None,
    hf_config: Annotated[Path | None, typer.Option(help="A transformers config.json (no weights needed).")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Sequence length for --hf-config.")] = None,
    generate: Annotated[bool, typer.Option(help="Count a whole generation, not one forward pass.")] = False,
    steps: Steps = None,
    length: Annotated[int | None, typer.Option(help="Tokens to generate (default: the task's answer).")] = None,
    sampler: SamplerName = None,
    baseline: Annotated[Path | None, typer.Option(help="AR checkpoint: also report the ratio to it.")] = None,
    seed: Seed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Serial depth and opaque serial depth of a checkpoint (forward or whole generation) or of a
    transformers architecture from its config alone."""
    import torch

    from interp.analyses.serial_depth import count, generation_depth, hf_config_depth

    if (checkpoint is None) == (hf_config is None):
        _fail("give exactly one of --checkpoint or --hf-config")
    if hf_config is not None:
        import transformers

        if seq_len is None:
            _fail("--hf-config needs --seq-len")
        try:
            config = transformers.AutoConfig.from_pretrained(str(hf_config), local_files_only=True)
        except (OSError, ValueError) as exc:
            _fail(f"{hf_config}: not a transformers config ({str(exc).splitlines()[0]})")
        result = hf_config_depth(config, seq_len)
    else:
        from interp.checkpoints import load_checkpoint
        from interp.data import problems

        method = load_checkpoint(checkpoint, expected_kind=("dlm", "ar"))
        prompt = (
            [problems(method.cfg.task_config, "heldout", 1, seed)[0][0]] if method.cfg.task != "shakespeare" else ["T"]
        )
        ids = method.encode_prompts(prompt)
        answer_len = length if length is not None else method.answer_len_for(ids.shape[1])
        if answer_len < 1 or ids.shape[1] + answer_len > method.model.cfg.n_ctx:
            _fail(f"--length must be 1..{method.answer_len_for(ids.shape[1])} for this checkpoint's context")
        if generate:
            cfg = _sampler_config(method, sampler, steps, 0.0, 0, 1.0, "uniform")
            result = generation_depth(method, ids, cfg, seed=seed, answer_len=answer_len)
        else:
            canvas = torch.cat([ids, torch.full((1, answer_len), method.tokenizer.mask_id)], 1)
            result = count(lambda: method.model(canvas), {"": method.model}, kind=method.kind)
        if baseline is not None:
            base = load_checkpoint(baseline, expected_kind="ar")
            from interp.samplers import SamplerConfig

            ar = generation_depth(
                base, base.encode_prompts(prompt), SamplerConfig(name="ar"), seed=seed, answer_len=answer_len
            )
            result.meta["baseline_opaque_serial_depth"] = ar.opaque_serial_depth
            result.meta["opaque_ratio_to_baseline"] = result.opaque_serial_depth / max(1, ar.opaque_serial_depth)
    payload = result.to_dict()
    text = f"serial depth {result.serial_depth}, opaque serial depth {result.opaque_serial_depth} ({result.n_ops} ops)"
    if "opaque_ratio_to_baseline" in result.meta:
        text += f"; opaque ratio to AR baseline {result.meta['opaque_ratio_to_baseline']:.3f}"
    _emit(payload, as_json, text)


ANALYSES = ("revisions", "smearing", "intermediate-context", "logit-lens")


@app.command()
@friendly
def analyze(
    analysis: Annotated[str, typer.Argument(help="revisions | smearing | intermediate-context | logit-lens")],
    checkpoint: Checkpoint,
    n: Annotated[int, typer.Option(help="Held-out problems.")] = 200,
    sampler: SamplerName = None,
    steps: Steps = None,
    temperature: float = 0.0,
    block_length: int = 0,
    entropy_bound: float = 1.0,
    renoise: str = "uniform",
    span: Annotated[int, typer.Option(help="Span length for sequence smearing.")] = 1,
    seed: Seed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Headline numbers of one analysis of a diffusion LM's sampling runs."""
    from interp.analyses.revisions import revisions
    from interp.analyses.runs import sample_task
    from interp.analyses.smearing import smearing
    from interp.checkpoints import load_checkpoint

    if analysis not in ANALYSES:
        _fail(f"unknown analysis {analysis!r}; known: {', '.join(ANALYSES)}")
    if n < 1:
        _fail(f"--n must be >= 1, got {n}")
    method = load_checkpoint(checkpoint, expected_kind="dlm")
    cfg = _sampler_config(method, sampler, steps, temperature, block_length, entropy_bound, renoise)
    if analysis == "intermediate-context":
        from interp.analyses.intermediate_context import intermediate_context
        from interp.data import problems

        ids = method.encode_prompts([p for p, _ in problems(method.cfg.task_config, "heldout", n, seed)])
        summary = intermediate_context(method, ids, cfg, seed=seed).summary()
    elif analysis == "logit-lens":
        summary = _logit_lens_summary(method, n, seed, cfg)
    else:
        run = sample_task(method, n, seed, cfg)
        if analysis == "revisions":
            summary = revisions(run.steps, run.prompt_len).summary()
        else:
            summary = smearing(run.steps, run.prompt_len, span=span).summary()
    payload = {
        "analysis": analysis,
        "checkpoint": str(checkpoint),
        "sampler": cfg.name,
        "steps": cfg.steps or method.cfg.task_config.answer_len,
        "n": n,
        "seed": seed,
        **summary,
    }
    _emit(payload, as_json, "\n".join(f"{k}: {v}" for k, v in payload.items()))


def _logit_lens_summary(method, n: int, seed: int, cfg) -> dict:
    """Probability of the final answer token per layer, at the first and the last step."""
    from interp.analyses import answer_logit_lens
    from interp.data import problems

    ids = method.encode_prompts([p for p, _ in problems(method.cfg.task_config, "heldout", n, seed)])
    lens, _, p = answer_logit_lens(method, ids, cfg, seed)
    return {
        "layers": lens.layers,
        "final_token_prob_first_step": [round(float(x), 4) for x in p[0]],
        "final_token_prob_last_step": [round(float(x), 4) for x in p[-1]],
    }


@app.command()
@friendly
def report(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Option(help="HTML file to write (atomically).")] = Path("reports/report.html"),
    n: Annotated[
        int | None, typer.Option(help="Held-out problems per sampler (LMs, default 100) or images per sampler (500).")
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(help="Image checkpoints: the time-agnostic twin of CHECKPOINT (same model, no timestep)."),
    ] = None,
    seed: Seed = 0,
) -> None:
    """One self-contained interactive HTML report: a diffusion LM's sampling behaviour, or an image
    model's denoising error, sample quality and noise-level probes (with --compare: conditioned vs blind)."""
    from interp.checkpoints import load_checkpoint, read_header
    from interp.reports import write_report

    if n is not None and n < 1:
        _fail(f"--n must be >= 1, got {n}")
    if read_header(checkpoint)["kind"] == "image":
        from interp.reports.time_agnostic import image_sections

        method = load_checkpoint(checkpoint, expected_kind="image")
        blind = load_checkpoint(compare, expected_kind="image") if compare is not None else None
        if blind is not None and not method.cfg.time_conditioning:
            method, blind = blind, method
            checkpoint, compare = compare, checkpoint  # the conditioned model leads, and its path with it
        if (n or 500) < 2:
            _fail("--n must be >= 2 for image sample quality")
        sections, numbers = image_sections(method, blind, n=n or 500, seed=seed)
        title = f"interp report: {checkpoint}" + (f" vs {compare}" if compare else "")
    else:
        if compare is not None:
            _fail("--compare is for image checkpoints (a conditioned / time-agnostic pair)")
        from interp.reports.dlm import dlm_sections

        method = load_checkpoint(checkpoint, expected_kind="dlm")
        sections, numbers = dlm_sections(method, n=n or 100, seed=seed)
        title = f"interp report: {checkpoint}"
    run_config = {"checkpoint": str(checkpoint), "config": method.config_dict(), "meta": method.meta, **numbers}
    if compare is not None:
        run_config["compare"] = {"checkpoint": str(compare), "config": blind.config_dict(), "meta": blind.meta}
    path = write_report(out, title, sections, run_config)
    typer.echo(f"report written: {path}")


probe_app = typer.Typer(no_args_is_help=True, help="Probes of what a model's activations encode.")
app.add_typer(probe_app, name="probe")


@probe_app.command("noise")
@friendly
def probe_noise(
    checkpoint: Checkpoint,
    n: Annotated[int, typer.Option(help="Noisy examples per split.")] = 1000,
    capture: Annotated[str, typer.Option(help="Activations to probe (glob).")] = "",
    seed: Seed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How well the noise level t can be read from the corrupted input and from each layer, without a timestep."""
    from interp.analyses.noise_probes import probe_input, probe_layers
    from interp.checkpoints import load_checkpoint

    if n < 2:
        _fail(f"--n must be >= 2, got {n}")
    method = load_checkpoint(checkpoint, expected_kind="image")
    train, _ = method.data("train")
    test, _ = method.data("heldout")
    pattern = capture or method.layer_sites
    rows = probe_input(train, test, method.process, n=n, seed=seed)
    rows += probe_layers(method, train, test, pattern, n=n, seed=seed)
    payload = {
        "checkpoint": str(checkpoint),
        "time_conditioning": method.cfg.time_conditioning,
        "n": n,
        "seed": seed,
        "probes": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    }
    text = "\n".join(f"{r['source']:28s} {r['probe']:12s} R2 {r['r2']:.3f}  rel.err {r['rel_error']:.3f}" for r in rows)
    _emit(payload, as_json, text)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
