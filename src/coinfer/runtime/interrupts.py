"""Signals that end the coordinator must not cut its clean-up short.

A coordinator owns things outside its process — CPU groups, network namespaces, veths, store
directories, worker processes. Python runs ``finally`` blocks on Ctrl-C but not on SIGTERM (the
process just dies), and a second Ctrl-C during a ``finally`` interrupts the clean-up halfway.
So: SIGTERM is turned into :class:`SystemExit` (``finally`` blocks run), and clean-up runs
:func:`shielded` — SIGINT/SIGTERM arriving meanwhile are held and re-raised once it is done.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_HELD = (signal.SIGINT, signal.SIGTERM)


def exit_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread (so clean-up runs)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_exit)


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration (main thread only; elsewhere a no-op, as
    signals are only delivered to the main thread); the first one held is raised after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in _HELD}
    for s in _HELD:
        signal.signal(s, lambda signum, _f: held.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if held:
            if held[0] == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + held[0])


__all__ = ["exit_on_sigterm", "shielded"]
