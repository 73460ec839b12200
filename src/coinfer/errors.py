"""The exception tree every part of coinfer raises.

Why a tree: the CLI turns any :class:`CoinferError` into one line on stderr and exit code 2
(bad input) without a traceback, while genuine bugs (anything else) still surface loudly.
Library code never exits the process; it raises one of these and lets the edge decide.
"""

from __future__ import annotations


class CoinferError(Exception):
    """Base class: a problem the user can act on, described in one line."""


class InputError(CoinferError):
    """Bad user input: a file, a field, a model spec, a plan. The message names which."""


class ModelLoadError(InputError):
    """A model spec could not be resolved, its factory raised, or it returned the wrong type."""


class CaptureError(InputError):
    """A model could not be captured into a graph (both torch.export and torch.fx failed)."""


class InfeasibleError(CoinferError):
    """No plan satisfies the constraints (memory); the message names the tightest device."""


class PeerError(CoinferError):
    """A remote worker or link failed; the message names the device and the unfinished requests."""

    def __init__(self, message: str, device: str | None = None, requests: tuple[int, ...] = ()):
        super().__init__(message)
        self.device = device
        self.requests = requests


__all__ = [
    "CaptureError",
    "CoinferError",
    "InfeasibleError",
    "InputError",
    "ModelLoadError",
    "PeerError",
]
