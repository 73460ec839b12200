"""Network-namespace testbed: each device's worker in its own namespace, links shaped by ``tc``.

Layout (root only; every address lives INSIDE namespaces created here, all traffic stays on this
machine)::

    cf<run>h  (hub)      bridge "br0" 10.213.X.1/24  <- the coordinator's control socket + store
      |  veth pairs (hub end enslaved to br0)
    cf<run>d<i>          "eth0" 10.213.X.(i+2)/24    <- worker of device i

On each device namespace's ``eth0`` an HTB qdisc has one class per peer device, limited to the
cluster's bandwidth for that directed link (u32 filter on the destination address); everything
else (control traffic) goes to an unshaped default class.

A shared medium is one real bottleneck: in the hub, an ``ifb`` device per medium carries an HTB
class at the medium's rate, and the ingress of every member's hub-side veth redirects packets
addressed to another member (over the medium, not a dedicated link) into it — so all members'
transfers, in both directions, queue for the one shaped egress, as they would for the air. This kernel has no ``netem``, so the
link *latency* stays in the transport (:meth:`Testbed.transport_shapes` keeps only latency).

The coordinator process stays in the root namespace; it opens its listening sockets inside the
hub namespace from a helper thread that ``setns``-es there (a socket keeps the namespace it was
created in). :meth:`Testbed.destroy` deletes every namespace (which removes the veths, the
bridge and the qdiscs with them) and is safe to call twice.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import InputError
from .transport import LinkShape

T = TypeVar("T")
# setns(2) flag for network namespaces (linux/sched.h).
CLONE_NEWNET = 0x40000000
# Unshaped default class rate: far above what loopback veths carry here (~3 GB/s measured).
DEFAULT_RATE = "40gbit"
# HTB burst per shaped class: a few MTU-sized packets, so short messages are not sent at line
# rate for long (a larger bucket would make small transfers look faster than the link).
BURST = "16k"


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise InputError(f"netns setup: `{' '.join(cmd)}` failed: {res.stderr.strip()}")


def _tc(ns: str, *args: str) -> None:
    cmd = ["ip", "netns", "exec", ns, "tc", *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise InputError(f"netns setup: `{' '.join(cmd)}` failed: {res.stderr.strip()}")


def _htb_class(ns: str, classid: str, rate: str, *extra: str) -> None:
    """Add an htb class ``classid`` under the root qdisc of ``eth0`` in namespace ``ns``."""
    _tc(
        ns,
        "class",
        "add",
        "dev",
        "eth0",
        "parent",
        "1:",
        "classid",
        classid,
        "htb",
        "rate",
        rate,
        *extra,
        "quantum",
        "1514",
    )


def _setns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (setns(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_available() -> tuple[bool, str]:
    """Whether ``--netns`` can work here, and why not."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    for tool in ("ip", "tc"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return False, f"the `{tool}` command is missing"
    return True, "ok"


@dataclass
class Testbed:
    """Namespaces, addresses and shaping of one run (see the module docstring)."""

    run_id: str
    names: tuple[str, ...]
    subnet: str  # "10.213.X"
    hub: str
    spaces: dict[str, str] = field(default_factory=dict)
    media: list[str] = field(default_factory=list)
    destroyed: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _medium_ifb: dict[str, str] = field(default_factory=dict, repr=False)  # medium -> its ifb

    @classmethod
    def create(
        cls, run_id: str, names: Sequence[str], shapes: Mapping[str, Mapping[str, LinkShape]]
    ) -> Testbed:
        """Build the namespaces, veths, bridge and tc classes; on any error, undo and raise."""
        ok, why = netns_available()
        if not ok:
            raise InputError(f"--netns: {why}")
        if len(names) > 250:
            raise InputError("--netns supports at most 250 devices (one /24)")
        # 10.213.0.0/16 is private (RFC 1918); the random /24 only keeps concurrent runs apart.
        tb = cls(run_id, tuple(names), f"10.213.{secrets.randbelow(250) + 1}", f"cf{run_id}h")
        try:
            tb._build(shapes)
        except BaseException:
            tb.destroy()
            raise
        return tb

    def _build_media(self, shapes: Mapping[str, Mapping[str, LinkShape]]) -> None:
        """One shaped ``ifb`` per medium in the hub; members' hops over it are redirected there."""
        rates: dict[str, float] = {}
        for m in shapes.values():
            for shape in m.values():
                if shape.medium is not None and shape.bandwidth_Bps is not None:
                    rates[shape.medium] = shape.bandwidth_Bps
        ifb_of: dict[str, str] = {}
        for k, (medium, bw) in enumerate(sorted(rates.items())):
            ifb = f"cf{self.run_id}m{k}"  # <= 15 chars
            _ip("link", "add", ifb, "type", "ifb", ns=self.hub)
            _ip("link", "set", ifb, "up", ns=self.hub)
            _tc(self.hub, "qdisc", "add", "dev", ifb, "root", "handle", "1:", "htb", "default", "1")
            rate = f"{max(8, int(bw * 8))}bit"
            _tc(self.hub, "class", "add", "dev", ifb, "parent", "1:", "classid", "1:1", "htb",
                "rate", rate, "burst", BURST, "quantum", "1514")  # fmt: skip
            ifb_of[medium] = ifb
        self._medium_ifb = ifb_of
        for i, u in enumerate(self.names):
            outer = f"cf{self.run_id}v{i}"
            hops = [
                (v, s.medium)
                for v, s in shapes.get(u, {}).items()
                if s.medium in ifb_of and v in self.names and v != u
            ]
            if not hops:
                continue
            _tc(self.hub, "qdisc", "add", "dev", outer, "handle", "ffff:", "ingress")
            for v, medium in hops:
                _tc(self.hub, "filter", "add", "dev", outer, "parent", "ffff:", "protocol", "ip",
                    "prio", "1", "u32", "match", "ip", "dst", f"{self.address(v)}/32",
                    "action", "mirred", "egress", "redirect", "dev", ifb_of[medium])  # fmt: skip
        self.media = sorted(ifb_of)

    def _build(self, shapes: Mapping[str, Mapping[str, LinkShape]]) -> None:
        _ip("netns", "add", self.hub)
        _ip("link", "set", "lo", "up", ns=self.hub)
        _ip("link", "add", "br0", "type", "bridge", ns=self.hub)
        _ip("addr", "add", f"{self.host_address}/24", "dev", "br0", ns=self.hub)
        _ip("link", "set", "br0", "up", ns=self.hub)
        for i, d in enumerate(self.names):
            ns = f"cf{self.run_id}d{i}"
            _ip("netns", "add", ns)
            self.spaces[d] = ns
            outer, inner = f"cf{self.run_id}v{i}", f"cf{self.run_id}w{i}"  # <= 15 chars
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", outer, "netns", self.hub)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "master", "br0", ns=self.hub)
            _ip("link", "set", outer, "up", ns=self.hub)
            _ip("link", "set", inner, "name", "eth0", ns=ns)
            _ip("addr", "add", f"{self.address(d)}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
        for d in self.names:
            ns = self.spaces[d]
            _tc(ns, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "999")
            _htb_class(ns, "1:999", DEFAULT_RATE)
            for j, v in enumerate(self.names):
                shape = shapes.get(d, {}).get(v)
                if v == d or shape is None or shape.bandwidth_Bps is None:
                    continue
                if shape.medium is not None:  # shaped once, in the hub (_build_media)
                    continue
                rate = f"{max(8, int(shape.bandwidth_Bps * 8))}bit"
                cls_id = f"1:{j + 1}"
                _htb_class(ns, cls_id, rate, "burst", BURST)
                _tc(
                    ns,
                    "filter",
                    "add",
                    "dev",
                    "eth0",
                    "protocol",
                    "ip",
                    "parent",
                    "1:",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    "dst",
                    f"{self.address(v)}/32",
                    "flowid",
                    cls_id,
                )
        self._build_media(shapes)

    @property
    def host_address(self) -> str:
        """The coordinator's address (on the hub bridge)."""
        return f"{self.subnet}.1"

    def address(self, device: str) -> str:
        return f"{self.subnet}.{self.names.index(device) + 2}"

    def enter_fn(self, device: str) -> Callable[[], None]:
        """A ``preexec_fn`` moving a child process into ``device``'s network namespace.

        Unlike ``ip netns exec`` this does not remount ``/sys``, so the worker still sees the
        cgroup hierarchy and can apply its CPU quota.
        """
        path = f"/run/netns/{self.spaces[device]}"

        def enter() -> None:
            _setns(path)

        return enter

    def follow_traces(
        self, shapes: Mapping[str, Mapping[str, LinkShape]], origin_unix: float
    ) -> threading.Thread | None:
        """Change each traced class's ``tc`` rate at its trace's breakpoints (trace time 0 =
        ``origin_unix``), on a thread that ends with :meth:`destroy`; ``None`` if no link has
        a trace. The kernel then shapes what the transport would emulate without namespaces."""
        steps: list[tuple[float, str, tuple[str, ...]]] = []
        done_media: set[str] = set()
        for u, m in shapes.items():
            for v, shape in m.items():
                if shape.trace is None or u not in self.spaces or v not in self.names or u == v:
                    continue
                if shape.medium is not None:
                    if shape.medium in done_media or shape.medium not in self._medium_ifb:
                        continue
                    done_media.add(shape.medium)
                    where = (self.hub, "dev", self._medium_ifb[shape.medium], "classid", "1:1")
                else:
                    where = (
                        self.spaces[u],
                        "dev",
                        "eth0",
                        "classid",
                        f"1:{self.names.index(v) + 1}",
                    )
                for t, bw in zip(shape.trace.times_s, shape.trace.bandwidth_Bps, strict=True):
                    steps.append((t, f"{max(8, int(bw * 8))}bit", where))
        if not steps:
            return None
        steps.sort(key=lambda s: s[0])

        def run() -> None:
            for t, rate, (ns, *where) in steps:
                if self._stop.wait(max(0.0, origin_unix + t - time.time())):
                    return
                with contextlib.suppress(InputError):  # a namespace being torn down
                    _tc(ns, "class", "change", *where[:2], "parent", "1:", *where[2:], "htb",
                        "rate", rate, "burst", BURST, "quantum", "1514")  # fmt: skip

        th = threading.Thread(target=run, name=f"tc-traces {self.run_id}", daemon=True)
        th.start()
        return th

    @staticmethod
    def transport_shapes(
        shapes: Mapping[str, Mapping[str, LinkShape]],
    ) -> dict[str, dict[str, LinkShape]]:
        """Shapes for the transport when tc does the bandwidth: latency only (a medium's sharing
        is the hub's ifb then, not a clock)."""
        return {
            u: {v: LinkShape(None, s.latency_s) for v, s in m.items()} for u, m in shapes.items()
        }

    def in_hub(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on a helper thread that joined the hub namespace (sockets it opens stay there)."""
        out: dict[str, Any] = {}

        def target() -> None:
            try:
                _setns(f"/run/netns/{self.hub}")
                out["value"] = fn()
            except BaseException as exc:
                out["error"] = exc

        th = threading.Thread(target=target, name="netns-hub")
        th.start()
        th.join()
        if "error" in out:
            raise out["error"]
        return out["value"]

    def destroy(self) -> None:
        """Delete every namespace of this run (veths, bridge and qdiscs go with them)."""
        if self.destroyed:
            return
        self.destroyed = True
        self._stop.set()
        for ns in [*self.spaces.values(), self.hub]:
            with contextlib.suppress(Exception):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def cleanup_stale(prefix: str = "cf") -> list[str]:
    """Delete leftover namespaces named like this module's (``cf<8 hex>h`` / ``cf<8 hex>d<i>``)."""
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    gone = []
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        tail = name[len(prefix) :]
        if (
            name.startswith(prefix)
            and len(tail) >= 10
            and all(c in "0123456789abcdef" for c in tail[:8])
            and tail[8] in "hd"
        ):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            gone.append(name)
    return gone


__all__ = ["Testbed", "cleanup_stale", "netns_available"]
