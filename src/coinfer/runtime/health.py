"""What a worker's failure looks like from the coordinator, and how strongly it blames it.

The supervisor of a fixed run, a session's epochs and a draining epoch all ask the same two
questions of their workers: which of them look dead, stopped or silent right now
(:func:`check_health`), and, when several are suspected at once (a dying worker makes its
peers fail too), which one to blame (:func:`evidence_rank`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .processes import EXIT_AFTER_ERROR, STOPPED_GRACE_S, process_stopped

# A worker silent this long on the control channel is declared dead (heartbeats every 0.5 s;
# 10 missed beats tolerate a worker starved of CPU by a tight cgroup quota on a busy host).
HEARTBEAT_TIMEOUT_S = 5.0
# What a worker's failure looked like, strongest evidence first: a device that died or went
# silent is blamed before peers that merely reported errors about it.
_DEATH_SIGNS = (
    "worker process died",
    "worker process stopped",
    "control channel lost",
    "no heartbeat",
)


def check_health(
    peers: Mapping[str, Any],
    stopped_since: dict[str, float],
    now: float,
    note: Callable[[str, str], None],
    stopped_grace_s: float = STOPPED_GRACE_S,
) -> None:
    """``note(device, what)`` for every worker (not yet done) whose process died or has been
    stopped for ``stopped_grace_s``, or that has been silent for :data:`HEARTBEAT_TIMEOUT_S`;
    ``stopped_since`` carries the stop times between calls."""
    for d, p in peers.items():
        if p.proc is not None and p.proc.poll() is not None and p.done is None:
            note(d, exit_evidence(p.proc.returncode))
        elif p.proc is not None and p.done is None and process_stopped(p.proc):
            if now - stopped_since.setdefault(d, now) >= stopped_grace_s:
                note(d, "worker process stopped (SIGSTOP)")
        elif p.done is None and now - p.last_seen > HEARTBEAT_TIMEOUT_S:
            note(d, f"no heartbeat for {now - p.last_seen:.1f} s")
        else:
            stopped_since.pop(d, None)


def exit_evidence(code: int) -> str:
    """What a worker's exit code says about it: killed, died, or exited after reporting."""
    if code == EXIT_AFTER_ERROR:
        return f"worker exited after reporting an error (exit code {code})"
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return f"worker process died ({how})"


def is_death(what: str) -> bool:
    """Whether a suspect's evidence says the device itself failed (not a bystander's report)."""
    return what.startswith(_DEATH_SIGNS)


def evidence_rank(what: str) -> int:
    """How strongly ``what`` says its device is the one that failed: killed outright (SIGKILL)
    or stopped beats any other death (a worker that loses a peer may itself abort, SIGABRT
    from gloo), which beats silence, which beats a lost channel, which beats a report."""
    if "stopped (SIGSTOP)" in what or "killed by signal 9" in what or "code -9" in what:
        return 4
    if "process died" in what or "exited with code" in what:
        return 3
    if "no heartbeat" in what:
        return 2
    return 1 if "control channel lost" in what else 0


def is_conclusive(what: str) -> bool:
    """Evidence that needs no corroboration: the worker's process died or is stopped."""
    return what.startswith(_DEATH_SIGNS[:2])


__all__ = [
    "HEARTBEAT_TIMEOUT_S",
    "check_health",
    "evidence_rank",
    "exit_evidence",
    "is_conclusive",
    "is_death",
]
