"""Fused-layer spatial partitioning (S2 + DeepThings' FTP): tile a conv block, place tiles.

``planner`` tries fused depths x grids and compares with the layer-wise plan; ``placement``
places tiles on devices (greedy, PSOMW, brute force) under two link models. The geometry is in
:mod:`coinfer.core.tiles`, the tiled execution in :mod:`coinfer.graph.tiled`.
"""

from .planner import FusedOptions, conv_instance, plan_fused

__all__ = ["FusedOptions", "conv_instance", "plan_fused"]
