"""``interp train <kind>``: one command per registered method, its options generated from the method's
config dataclass, its extra options and the trainer's :class:`~interp.train.TrainConfig`."""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from interp import registry
from interp.cli.common import InterpGroup, command, field_parameters, from_options, parameter


def build() -> typer.Typer:
    app = typer.Typer(
        cls=InterpGroup,
        no_args_is_help=True,
        help="Train a model; writes a checkpoint folder (resumes if one is there).",
    )
    for kind, spec in registry.methods().items():
        app.command(kind.replace("_", "-"))(_command(spec))
    return app


def _command(spec: registry.MethodSpec):
    from interp.train import TrainConfig

    params = [
        inspect.Parameter(
            "out",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[
                Path,
                typer.Option(
                    help="Checkpoint folder to write"
                    + (" (and resume from)." if spec.train is None else " (replaces one of the same kind).")
                ),
            ],
        )
    ]
    params += field_parameters(spec.config)
    params += [parameter(o.name, o.type, o.default, help=o.help) for o in spec.train_options]
    defaults = {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **spec.train_defaults}
    train_params = field_parameters(TrainConfig, defaults)
    if spec.train is not None:  # the method keeps its own loop: only steps and seed apply
        train_params = [p for p in train_params if p.name in ("steps", "seed")]
    else:
        if spec.train_eval is None:  # nothing to evaluate during training
            train_params = [p for p in train_params if p.name != "eval_every"]
        train_params.append(parameter("progress", bool, True, help="Show a progress bar."))
    params += train_params

    def run(**options: Any) -> None:
        _train(spec, options)

    return command(run, params, spec.summary)


def _train(spec: registry.MethodSpec, options: dict[str, Any]) -> None:
    from interp.train import TrainConfig, seed_everything, train

    out = options.pop("out")
    progress = options.pop("progress", True)
    config_names = {f.name for f in dataclasses.fields(spec.config)} | {o.name for o in spec.train_options}
    fields = from_options(spec.config, options) | {o.name: options[o.name] for o in spec.train_options}
    if spec.derive is not None:
        fields = spec.derive(fields)
    cfg = spec.config(**fields)
    train_fields = {k: v for k, v in options.items() if k not in config_names}
    seed = train_fields["seed"]
    seed_everything(seed)
    method = spec.method(cfg)
    meta = {"command": "interp " + " ".join(sys.argv[1:]), "seed": seed}
    tcfg = TrainConfig(**{"eval_every": 0, **train_fields})
    if spec.train is not None:
        typer.echo(spec.resolve("train")(method, out, tcfg.steps, seed, meta))
        return
    eval_fn = spec.resolve("train_eval")(method, seed) if spec.train_eval is not None and tcfg.eval_every else None
    result = train(method, out, tcfg, eval_fn=eval_fn, meta=meta, progress=progress)
    if result.metrics and os.environ.get("RANK", "0") == "0":
        last = [m for m in result.metrics if "loss" in m][-1]
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
        typer.echo(
            f"trained {spec.kind} for {result.step} steps{resumed} on {result.world_size} process(es); "
            f"final loss {last['loss']:.4f}; checkpoint: {out}"
        )
