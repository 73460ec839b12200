"""The model zoo: small, readable architectures with random weights, and model-spec loading.

Every model is defined in this package (one module per family) so nothing is downloaded: a zoo
name resolves to a factory, weights come from a fixed seed (same spec → identical weights), and
each entry carries its default input shape and, where published, its GMACs. ``load_model``
also accepts ``path/to/file.py:factory`` and ``package.module:factory`` for user models.
"""

from __future__ import annotations

from ._loader import MODEL_SEED, load_model, make_inputs, parse_input_shape
from ._registry import ZOO, ZooEntry, list_models

__all__ = [
    "MODEL_SEED",
    "ZOO",
    "ZooEntry",
    "list_models",
    "load_model",
    "make_inputs",
    "parse_input_shape",
]
