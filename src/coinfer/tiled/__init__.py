"""Fused (tiled) plans run for real: a request's first layers split spatially across devices.

:mod:`.program` derives what every device does per request from a ``fused`` plan, :mod:`.job`
does it in a worker, :mod:`.runner` starts the workers, runs and checks requests.
"""

from .program import TiledProgram, program_of
from .runner import TiledResult, run_tiled_plan

__all__ = ["TiledProgram", "TiledResult", "program_of", "run_tiled_plan"]
