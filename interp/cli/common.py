"""What every command shares: one-line errors (caught once, at the top), options generated from
config dataclasses, and printing text or JSON."""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from interp.errors import InterpError

MAX_MESSAGE = 300  # the longest error line printed (the middle of a longer one is cut)
SEED_MAX = 2**32 - 1  # numpy's limit; torch's generators take it too
# upper bounds of integer options, checked before any work (a typo of 10^12 must not hang or allocate)
INT_BOUNDS = {"seed": (0, SEED_MAX), "n": (1, 10**6), "sampler_steps": (1, 10**5)}
INT_MAX = 10**9


try:  # typer >= 0.20 vendors click and raises its own copy's exceptions
    from typer._click.exceptions import UsageError as _VendoredUsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    _VendoredUsageError = click.UsageError
USAGE_ERRORS = (click.UsageError, _VendoredUsageError)


class InterpGroup(TyperGroup):
    """The command group: interp's own errors become ``error: ...`` on one line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InterpError as exc:
            fail(str(exc))
        except USAGE_ERRORS as exc:  # bad option values, unknown options: one line too
            fail(exc.format_message())
        except (MemoryError, RuntimeError) as exc:  # a model or batch too large for this machine
            if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
                raise
            fail(f"out of memory: {str(exc).splitlines()[0] if str(exc) else 'MemoryError'}; use smaller sizes")


def fail(message: str) -> typing.NoReturn:
    line = " ".join(message.split())
    if len(line) > MAX_MESSAGE:  # keep the start (what) and the end (what was expected)
        line = line[: MAX_MESSAGE * 2 // 3] + " … " + line[-(MAX_MESSAGE // 3) :]
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(2)


def emit(payload: dict, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(payload, default=str) if as_json else text)


Seed = Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed (same seed, same result on CPU).")]
Checkpoint = Annotated[Path, typer.Option("--checkpoint", "-c", help="Checkpoint folder.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def load(checkpoint: Path, protocol: type | None = None, what: str = "") -> Any:
    """Load a checkpoint; with ``protocol``, refuse methods that do not satisfy it (``what`` names it)."""
    from interp.checkpoints import load_checkpoint

    method = load_checkpoint(checkpoint)
    if protocol is not None and not isinstance(method, protocol):
        raise InterpError(f"this command needs {what}; checkpoint {checkpoint} is of kind {method.kind!r}")
    return method


# --- options generated from dataclasses ----------------------------------------------------------------
def _base_type(annotation: Any) -> type:
    """``int | None`` → ``int``; other annotations unchanged."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def int_range(name: str) -> dict[str, int]:
    """typer's ``min`` / ``max`` for an integer option (:data:`INT_BOUNDS`, else 0..:data:`INT_MAX`)."""
    lo, hi = INT_BOUNDS.get(name, (0, INT_MAX))
    return {"min": lo, "max": hi}


def field_parameters(
    cls: type, defaults: dict[str, Any] | None = None, unset: bool = False, bounds: str = ""
) -> list[inspect.Parameter]:
    """One keyword parameter per field of dataclass ``cls`` that is not hidden (``metadata["cli"] is False``),
    typed for typer, integers bounded (:func:`int_range` of ``bounds + name`` where listed, else of ``name``).
    ``unset``: every default is None, so only what the user gave is seen."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        kind = str if "choices" in meta else _base_type(hints[f.name])
        default = (defaults or {}).get(f.name, f.default)
        if "choices" in meta and not unset:
            default = next(k for k, v in meta["choices"].items() if v == default)
        help_text = meta.get("help", "")
        limits = int_range(bounds + f.name if bounds + f.name in INT_BOUNDS else f.name) if kind is int else {}
        if kind is bool and not unset:
            option = typer.Option(help=help_text)
        else:
            option = typer.Option(meta.get("cli", option_name(f.name)), help=help_text, **limits)
        annotation = Annotated[kind | None if unset else kind, option]
        out.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=None if unset else default, annotation=annotation
            )
        )
    return out


def from_options(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Turn option values back into field values (``choices`` text → value), for the fields of ``cls`` present."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        choices = f.metadata.get("choices")
        if choices is not None and value is not None:
            if value not in choices:
                raise InterpError(
                    f"{f.metadata.get('cli', option_name(f.name))} must be one of {list(choices)}, got {value!r}"
                )
            value = choices[value]
        out[f.name] = value
    return out


def parameter(name: str, kind: Any, default: Any, *decls: str, help: str = "") -> inspect.Parameter:
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[
            kind, typer.Option(*decls, help=help, **(int_range(name) if _base_type(kind) is int else {}))
        ],
    )


def command(impl: Callable[..., Any], parameters: Iterable[inspect.Parameter], doc: str) -> Callable[..., Any]:
    """A typer command calling ``impl(**options)``, with generated ``parameters``."""

    def run(**options: Any) -> Any:
        return impl(**options)

    params = list(parameters)
    seen: dict[str, inspect.Parameter] = {}
    for p in params:
        seen.setdefault(p.name, p)
    run.__signature__ = inspect.Signature(list(seen.values()))  # type: ignore[attr-defined]
    run.__annotations__ = {}
    run.__doc__ = doc
    return run


def sampler_parameters() -> list[inspect.Parameter]:
    """``--sampler`` and the fields of every registered sampler config (each unset unless given)."""
    from interp import registry

    registry.load()
    configs = list(dict.fromkeys(s.sampler_config for s in registry.methods().values() if s.sampler_config))
    names = ", ".join(registry.sampler_names())
    params = [parameter("sampler", str | None, None, "--sampler", help=f"Sampler: {names} (default: the method's).")]
    for cls in configs:
        params += [p for p in field_parameters(cls, unset=True, bounds="sampler_") if p.name != "name"]
    return params
