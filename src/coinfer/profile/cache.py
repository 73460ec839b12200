"""The profile cache: measured profiles as JSON files, keyed, versioned, written under a lock.

A profile is only valid for exactly what was measured, so the key holds everything that changes
the numbers: the model spec and a hash of the captured graph (so an edited model misses), the
device name and host, dtype, batch size, threads, CPU quota and the torch version. The schema
version is part of the file name: a format change simply misses old files instead of
misreading them. Two processes profiling the same key serialise on a file lock, so the second one
finds the first one's result (a cache hit) instead of measuring again.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

# Bump when the profile JSON layout or the measuring method changes; old files are then ignored
# (never misread). 2: throttled times from CPU time x the chain's stall factor, measured with the
# runtime's CFS period and pinning (see coinfer.profile.profiler). 3: measured with freed memory
# kept in the process (coinfer.profile.allocator), as the runtime's workers now run.
PROFILE_SCHEMA = 3
# A profiling run of a large model takes minutes; waiting longer than this for another process's
# lock means something is stuck, and the caller gets an error instead of a hang.
LOCK_TIMEOUT_S = 1800.0


def cache_dir() -> Path:
    """``$COINFER_CACHE/profiles`` if set, else ``~/.cache/coinfer/profiles``."""
    root = os.environ.get("COINFER_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "coinfer"
    return base / "profiles"


@dataclass(frozen=True, slots=True)
class ProfileKey:
    """Everything a measured profile depends on (see the module docstring)."""

    model: str
    graph_hash: str
    device: str
    host: str
    dtype: str = "float32"
    batch: int = 1
    threads: int = 1
    quota: float | None = None
    torch: str = ""
    max_pieces: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "graph_hash": self.graph_hash,
            "device": self.device,
            "host": self.host,
            "dtype": self.dtype,
            "batch": self.batch,
            "threads": self.threads,
            "quota": self.quota,
            "torch": self.torch,
            "max_pieces": self.max_pieces,
            # several threads were measured with idle threads sleeping (cgroup.OMP_WAIT_POLICY);
            # older multi-thread profiles spun and are not predictions for today's workers
            **({"omp_wait": "passive"} if self.threads > 1 else {}),
        }

    @property
    def digest(self) -> str:
        """Stable short hash of the key (file-name part)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def filename(self) -> str:
        safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)[-40:]
        return f"profile-v{PROFILE_SCHEMA}-{safe_model}-{self.device}-{self.digest}.json"


def default_host() -> str:
    """This machine's name, part of every key (profiles from another host are another device)."""
    return socket.gethostname()


def graph_hash(graph: Any) -> str:
    """Hash of a captured graph's structure: node names, ops, shapes, costs, and the pieces."""
    h = hashlib.sha256()
    for n in graph.nodes:
        h.update(
            json.dumps(
                [
                    n.name,
                    n.op,
                    list(n.shape or ()),
                    n.flops,
                    n.param_bytes,
                    n.out_bytes,
                    list(n.inputs),
                ]
            ).encode()
        )
    for p in graph.pieces:
        h.update(json.dumps(list(p.nodes)).encode())
    for t in graph.inputs:
        h.update(json.dumps([t.name, list(t.shape), t.dtype]).encode())
    return h.hexdigest()[:20]


def cache_path(key: ProfileKey, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / key.filename()


def read_cached(key: ProfileKey, directory: Path | None = None) -> dict[str, Any] | None:
    """The cached profile for ``key``, or ``None`` (missing, unreadable, or another key's file)."""
    path = cache_path(key, directory)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("schema") != PROFILE_SCHEMA
        or data.get("key") != key.to_dict()
    ):
        return None
    return data


def get_or_measure(
    key: ProfileKey,
    measure: Callable[[], Mapping[str, Any]],
    *,
    directory: Path | None = None,
    refresh: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Return ``(profile, cache_hit)``: the cached profile, or ``measure()`` stored under ``key``.

    The whole check-measure-write runs under a file lock on the key, and the file is written
    atomically (temp file + rename), so concurrent profilers never see half a file.
    """
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = cache_path(key, directory)
    with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
        if not refresh:
            hit = read_cached(key, directory)
            if hit is not None:
                return hit, True
        data = dict(measure())
        data["schema"] = PROFILE_SCHEMA
        data["key"] = key.to_dict()
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        return data, False


__all__ = [
    "PROFILE_SCHEMA",
    "ProfileKey",
    "cache_dir",
    "cache_path",
    "default_host",
    "get_or_measure",
    "graph_hash",
    "read_cached",
]
