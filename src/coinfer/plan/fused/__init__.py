"""Fused-layer spatial partitioning (S2 + DeepThings' FTP): tile a conv block, place tiles.

``planner`` tries fused depths x grids and compares with the layer-wise plan; ``placement``
places tiles on devices (greedy, PSOMW, brute force) under three link models (the last, ``links``, is what the tiled runtime of
:mod:`coinfer.tiled` does). The geometry is in
:mod:`coinfer.core.tiles`, the tiled execution in :mod:`coinfer.graph.tiled`.
"""

from .planner import FusedOptions, conv_instance, plan_fused, price_fused

__all__ = ["FusedOptions", "conv_instance", "plan_fused", "price_fused"]
