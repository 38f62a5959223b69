"""interp: hooks over whole diffusion sampling loops. Every command takes --seed; bad input exits with a
one-line error and status 2.

One module per area: ``train`` (a command per registered method, options generated from its config),
``run`` (sample / eval / trace / report through the method's spec), ``analyze`` (analyses, serial depth,
probes). Errors are caught once, by :class:`~interp.cli.common.InterpGroup`."""

from __future__ import annotations

import typer

from interp.cli.common import InterpGroup


def build_app() -> typer.Typer:
    """The app for the methods registered now (a test may register one, then build)."""
    from interp import registry
    from interp.cli import analyze, run, train

    registry.load()
    app = typer.Typer(cls=InterpGroup, add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
    app.add_typer(train.build(), name="train")
    run.register(app)
    analyze.register(app)
    return app


def main() -> None:
    build_app()(prog_name="interp")


__all__ = ["build_app", "main"]
