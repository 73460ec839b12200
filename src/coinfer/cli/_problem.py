"""The planning problem a command works on: ``--instance FILE`` or ``MODEL --cluster FILE``.

Shared by ``plan``, ``compare``, ``schedule``, ``simulate`` and ``run`` so that every command
accepts the same two spellings and rejects a mix of them with the same one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class Problem:
    """An instance, plus the cluster it came from (``None`` for an instance file)."""

    instance: Any
    cluster: Any = None
    traces: dict[Any, Any] = field(default_factory=dict)


def load_problem(
    model: str | None,
    cluster_file: str | Path | None,
    instance_file: str | Path | None,
    *,
    max_pieces: int | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Problem:
    """Build the :class:`Problem` from exactly one of the two spellings."""
    from ..core.instance import load_instance

    if instance_file is not None:
        if model is not None or cluster_file is not None:
            raise InputError("give either MODEL --cluster FILE or --instance FILE, not both")
        if max_pieces is not None:
            raise InputError(
                "--max-pieces applies to MODEL --cluster; an instance file has fixed pieces"
            )
        return Problem(load_instance(instance_file))
    if model is None or cluster_file is None:
        raise InputError("give MODEL --cluster FILE or --instance FILE")
    from ..cluster import load_cluster
    from ..profile.costmodel import build_instance

    cluster = load_cluster(cluster_file)
    instance = build_instance(model, cluster, max_pieces=max_pieces, input_shape=input_shape)
    return Problem(instance, cluster, dict(cluster.traces))
