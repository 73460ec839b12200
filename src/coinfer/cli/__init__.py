"""The ``coinfer`` command: a thin shell over the library.

Each area registers its own sub-commands (``register(app)`` in the sibling modules), so the
CLI grows by adding a module, not by editing one big file. :func:`main` is the only place that
turns a :class:`~coinfer.errors.CoinferError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from ..errors import CoinferError
from . import (
    calibrate_cmd,
    cluster_cmds,
    demo_cmd,
    generate_cmd,
    graph_cmds,
    plan_cmds,
    run_cmds,
    serve_cmd,
    sim_cmds,
)

app = typer.Typer(
    name="coinfer",
    help="Cooperative pipelined DNN inference across heterogeneous devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in (
    demo_cmd, graph_cmds, cluster_cmds, plan_cmds, sim_cmds, run_cmds, serve_cmd, calibrate_cmd, generate_cmd,
):  # fmt: skip
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, reporting user errors as one line and exit code 2."""
    from ..runtime.interrupts import exit_on_sigterm

    exit_on_sigterm()  # SIGTERM runs the clean-up of a run (cgroups, namespaces, workers)
    try:
        app(args=argv, standalone_mode=True)
    except CoinferError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


__all__ = ["app", "main"]
