"""The exception tree every part of coinfer raises.

Why a tree: the CLI turns any :class:`CoinferError` into one line on stderr and exit code 2
(bad input) without a traceback, while genuine bugs (anything else) still surface loudly.
Library code never exits the process; it raises one of these and lets the edge decide.

The two readers at the end (:func:`read_text`, :func:`parse_json`) are the one place where a
user's file becomes text or JSON, so an unreadable, non-UTF-8 or absurdly nested file is one
:class:`InputError` naming it wherever it is read, never a ``UnicodeDecodeError`` traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Control characters a user's names and values may carry into a message, escaped so that every
# message stays one line (a field called "\n" must not split the error the CLI prints).
_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {ord("\n"): "\\n", ord("\t"): "\\t"}


class CoinferError(Exception):
    """Base class: a problem the user can act on, described in one line (control characters
    in the message are escaped, whatever names or values it quotes)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(str(message).translate(_ESCAPES), *args)


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


def read_text(path: str | Path, what: str, *, where: str | None = None) -> str:
    """The UTF-8 text of the user's file ``path`` (``what`` it is, for the message), or one
    :class:`InputError` naming it (``where`` replaces the path at the start of the message)."""
    p = Path(path)
    label = where or str(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{label}: cannot read {what} ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{label}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def parse_json(text: str, label: str) -> Any:
    """JSON from ``text``, or one :class:`InputError` (bad syntax, or nested deeper than the
    parser's recursion limit: a crafted file must not crash the reader)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise InputError(f"{label}: JSON nested too deeply") from None


__all__ = [
    "CaptureError",
    "CoinferError",
    "InfeasibleError",
    "InputError",
    "ModelLoadError",
    "PeerError",
    "parse_json",
    "read_text",
]
