"""``coinfer zoo`` and ``coinfer inspect``: list the model zoo, show a model's costed pieces.

Thin shell over :mod:`coinfer.zoo` and :mod:`coinfer.graph`; heavy imports (torch) happen
inside the commands so ``coinfer --help`` stays fast. Every user mistake raises a
:class:`~coinfer.errors.CoinferError`, printed by :func:`coinfer.cli.main` as one line (exit 2).
"""

from __future__ import annotations

import json
from typing import Any

import typer

from ._console import make_console

_MODEL_HELP = (
    "Model spec: a zoo name (see `coinfer zoo`), path/to/file.py:factory or package.module:factory."
)
_SHAPE_HELP = "Example input shape, e.g. 1,3,224,224 (default: the zoo entry's / the factory's)."


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def _flops(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} K"
    return f"{n:.0f}"


def _count(n: int) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} K"
    return str(n)


def zoo_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the model zoo: name, description, default input, parameters, published GMACs."""
    from ..zoo import list_models

    rows: list[dict[str, Any]] = []
    for entry in list_models():
        rows.append(
            {
                "name": entry.name,
                "description": entry.description,
                "input_shape": list(entry.input_shape),
                "input_kind": entry.input_kind,
                "params": entry.param_count(),
                "published_gmacs": entry.published_gmacs,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    # Plain aligned lines, one per model (no table wrapping in narrow terminals or pipes).
    typer.echo(f"{'name':<16} {'default input':<14} {'params':>9} {'GMACs':>6}  description")
    for r in rows:
        gmacs = r["published_gmacs"]
        typer.echo(
            f"{r['name']:<16} {'x'.join(map(str, r['input_shape'])):<14} "
            f"{_count(r['params']):>9} {'-' if gmacs is None else f'{gmacs:g}':>6}  {r['description']}"
        )


def inspect_cmd(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    input_shape: str | None = typer.Option(None, "--input-shape", help=_SHAPE_HELP),
    max_pieces: int | None = typer.Option(
        None, "--max-pieces", min=1, help="Merge pieces until at most N remain."
    ),
    nodes: bool = typer.Option(False, "--nodes", help="Show every node instead of the pieces."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    fake: bool = typer.Option(
        False,
        "--fake",
        help="Cost shapes only: weights on the meta device, fake tensors (fast, nothing run).",
    ),
) -> None:
    """Capture MODEL and show its pieces (or nodes): FLOPs, parameters, bytes out, memory."""
    from ..graph import capture
    from ..zoo import load_model, parse_input_shape

    shape = parse_input_shape(input_shape)
    # --fake builds the model on the meta device too: no weights are allocated or initialised.
    module, inputs = load_model(model, shape, meta=fake)
    graph = capture(module, inputs, max_pieces=max_pieces, name=model, fake=fake)
    if as_json:
        typer.echo(json.dumps(graph.to_dict()))
        return
    _print_graph(graph, nodes)


def _print_graph(graph: Any, show_nodes: bool) -> None:
    from rich.table import Table

    # Pipes and narrow terminals would wrap every row; give tables room instead.
    console = make_console()
    if show_nodes:
        piece_of = {name: p.index for p in graph.pieces for name in p.nodes}
        table = Table(title=f"{graph.name}: {len(graph.nodes)} nodes")
        for col in ("node", "op", "shape", "FLOPs", "params", "out bytes", "piece"):
            table.add_column(col, justify="left" if col in ("node", "op", "shape") else "right")
        for n in graph.nodes:
            table.add_row(
                n.name,
                n.op,
                "×".join(map(str, n.shape)) if n.shape is not None else "-",
                _flops(n.flops),
                _human_bytes(n.param_bytes),
                _human_bytes(n.out_bytes),
                str(piece_of.get(n.name, "-")),
            )
    else:
        table = Table(title=f"{graph.name}: {len(graph.pieces)} pieces")
        for col in (
            "piece",
            "nodes",
            "first .. last",
            "FLOPs",
            "params",
            "cut bytes",
            "cut tensors",
            "memory",
        ):
            table.add_column(col, justify="left" if col == "first .. last" else "right")
        for p in graph.pieces:
            span = p.nodes[0] if len(p.nodes) == 1 else f"{p.nodes[0]} .. {p.nodes[-1]}"
            table.add_row(
                str(p.index),
                str(len(p.nodes)),
                span,
                _flops(p.flops),
                _human_bytes(p.param_bytes),
                _human_bytes(p.out_bytes),
                str(len(p.cut_tensors)),
                _human_bytes(p.mem_bytes),
            )
    console.print(table)
    console.print(
        f"total: {_flops(graph.total_flops)}FLOPs ({graph.total_flops / 2e9:.3f} GMACs), "
        f"params {_human_bytes(graph.total_param_bytes)}, input {_human_bytes(graph.input_bytes)}, "
        f"output {_human_bytes(graph.output_bytes)}, captured with torch.{graph.backend}"
    )


def register(app: typer.Typer) -> None:
    """Add ``zoo`` and ``inspect`` to ``app``."""
    app.command("zoo")(zoo_cmd)
    app.command("inspect")(inspect_cmd)
