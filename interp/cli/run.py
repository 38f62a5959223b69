"""Commands that run a checkpoint through its method's spec: ``sample``, ``eval``, ``trace``,
``trace-info``, ``report``. Which options apply depends on the method; one given that its method does
not read is refused before any work."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli.common import AsJson, Checkpoint, Seed, command, emit, fail, load, parameter, sampler_parameters
from interp.registry import Options


def _options(method, command_name: str, given: dict[str, Any], seed: int, quiet: bool = False) -> Options:
    return Options(given, command_name, method.kind, seed=seed, quiet=quiet)


def register(app: typer.Typer) -> None:
    sampler = sampler_parameters()
    checkpoint = inspect.Parameter("checkpoint", inspect.Parameter.KEYWORD_ONLY, annotation=Checkpoint)
    seed = inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=Seed)
    as_json = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=AsJson)
    prompt = parameter(
        "prompt", list[str] | None, None, "--prompt", "-p", help="Prompt (repeatable; equal lengths); LM checkpoints."
    )
    n = parameter("n", int | None, None, "--n", help="How many: images (image models) or held-out problems (LMs).")

    # --- sample -----------------------------------------------------------------------------------
    def sample(checkpoint: Path, seed: int, as_json: bool, **given: Any) -> None:
        method = load(checkpoint)
        payload, text = method.spec.resolve("sample")(method, _options(method, "sample", given, seed))
        emit({"checkpoint": str(checkpoint), "seed": seed, **payload}, as_json, text)

    app.command("sample")(
        command(
            sample,
            [
                checkpoint,
                prompt,
                n,
                parameter("out", Path | None, None, "--out", help="PNG grid to write (image checkpoints)."),
                parameter("show_steps", bool | None, None, help="Print the canvas after every step (LMs)."),
                *sampler,
                seed,
                as_json,
            ],
            "Generate: the continuation of prompts (language models) or a grid of images (image models).",
        )
    )

    # --- eval -------------------------------------------------------------------------------------
    def evaluate(checkpoint: Path, seed: int, as_json: bool, **given: Any) -> None:
        method = load(checkpoint)
        payload, text = method.spec.resolve("evaluate")(method, _options(method, "eval", given, seed, quiet=as_json))
        emit({"checkpoint": str(checkpoint), **payload}, as_json, text)

    app.command("eval")(
        command(
            evaluate,
            [
                checkpoint,
                parameter("task", str | None, None, help="Task (LMs; default: the checkpoint's)."),
                parameter("digits", int | None, None, help="Task size (LMs; default: the checkpoint's)."),
                n,
                parameter(
                    "feature_net",
                    Path | None,
                    None,
                    "--feature-net",
                    help="Feature network for image metrics (default: the shipped one for the data).",
                ),
                *sampler,
                parameter("progress", bool | None, None, help="Show a progress bar."),
                seed,
                as_json,
            ],
            "Held-out exact match (language models) or FD / precision / recall (image models) of a checkpoint.",
        )
    )

    # --- trace ------------------------------------------------------------------------------------
    app.command("trace")(
        command(
            _trace,
            [
                checkpoint,
                inspect.Parameter(
                    "out",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[Path, typer.Option(help="Trace folder to write (atomically).")],
                ),
                parameter(
                    "capture",
                    list[str] | None,
                    None,
                    help="Hook names or patterns (repeatable; * within one dot-separated segment, ** across dots, "
                    "'**' = every hook); default: the method's (each block's output).",
                ),
                prompt,
                n,
                *sampler,
                parameter("capture_steps", str | None, None, help="Steps to record, e.g. '0,3,5-7' (default: all)."),
                parameter("positions", str | None, None, help="Positions to record, 'start:stop' (default: all)."),
                parameter("dtype", str, "float32", help="float32 | float16 | bfloat16"),
                parameter("ram_budget_mb", float | None, None, help="Spill activations to disk beyond this."),
                parameter("spill_dir", Path | None, None, help="Where spilled shards go (default: a temp folder)."),
                seed,
                parameter("progress", bool, True, help="Show a progress bar."),
            ],
            "Run a sampler under instrumentation and save every captured activation at every step.",
        )
    )

    @app.command("trace-info")
    def trace_info(
        trace_dir: Annotated[Path, typer.Argument(help="Trace folder.")],
        as_json: AsJson = False,
    ) -> None:
        """Names, shapes and steps of a saved trace."""
        from interp.hooks import Trace

        info = Trace.load(trace_dir).info()
        text = "\n".join([f"{info['n_steps']} steps; hooks:"] + [f"  {n} {info['shapes'][n]}" for n in info["names"]])
        emit(info, as_json, text)

    # --- report -----------------------------------------------------------------------------------
    @app.command()
    def report(
        checkpoint: Checkpoint,
        out: Annotated[Path, typer.Option(help="HTML file to write (atomically).")] = Path("reports/report.html"),
        n: Annotated[
            int | None,
            typer.Option(
                min=1, max=10**6, help="Held-out problems per sampler (LMs, default 100) or images per sampler (500)."
            ),
        ] = None,
        compare: Annotated[
            Path | None,
            typer.Option(help="Image checkpoints: the time-agnostic twin of CHECKPOINT (same model, no timestep)."),
        ] = None,
        seed: Seed = 0,
    ) -> None:
        """One self-contained interactive HTML report of a checkpoint: the sections its method contributes
        (a diffusion LM's sampling behaviour; an image model's denoising error, sample quality and
        noise-level probes, with --compare: conditioned vs blind)."""
        from interp.io import check_file_output
        from interp.reports import write_report
        from interp.reports.html import is_report

        check_file_output(out, is_report, "an HTML report")  # before the work: a user's file is refused
        method = load(checkpoint)
        sections, numbers, title = method.spec.resolve("report")(
            method, _options(method, "report", {"n": n, "compare": compare}, seed)
        )
        run_config = {"checkpoint": str(checkpoint), "config": method.config_dict(), "meta": method.meta, **numbers}
        path = write_report(out, title, sections, run_config)
        typer.echo(f"report written: {path}")


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
        fail(f"--capture-steps must look like '0,3,5-7', got {spec!r}")
    return out


def _trace(
    checkpoint: Path,
    out: Path,
    capture: list[str] | None,
    capture_steps: str | None,
    positions: str | None,
    dtype: str,
    ram_budget_mb: float | None,
    spill_dir: Path | None,
    seed: int,
    progress: bool,
    **given: Any,
) -> None:
    import torch

    from interp.hooks import attach
    from interp.hooks.trace import check_output

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        fail(f"--dtype must be one of {list(dtypes)}, got {dtype!r}")
    position_slice = None
    if positions is not None:
        try:
            lo, hi = positions.split(":")
            position_slice = slice(int(lo) if lo else None, int(hi) if hi else None)
        except ValueError:
            fail(f"--positions must look like 'start:stop', got {positions!r}")
    steps = _parse_steps(capture_steps)
    check_output(out)  # before the run: a location that is not ours is refused with nothing done
    method = load(checkpoint)
    spec = method.spec
    run, meta = spec.resolve("trace_run")(method, _options(method, "trace", given, seed))
    capture = capture or [spec.capture(method) if callable(spec.capture) else spec.capture]
    result = attach(method).trace(
        run,
        capture=capture,
        steps=steps,
        positions=position_slice,
        dtype=dtypes[dtype],
        ram_budget=int(ram_budget_mb * 2**20) if ram_budget_mb is not None else None,
        spill_dir=str(spill_dir) if spill_dir is not None else None,
        progress=progress,
    )
    result.meta.update({"checkpoint": str(checkpoint), "seed": seed, "capture": capture, **meta})
    result.save(out)
    result.close()
    typer.echo(f"trace of {result.n_steps} steps, {len(result.names)} hooks written to {out}")
