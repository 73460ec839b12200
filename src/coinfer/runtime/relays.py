"""Routes: every transfer of a run takes the store-and-forward path the cost model priced.

The reference cost model (and the simulator) carry a transfer ``u -> v`` of ``nbytes`` along the
cheapest path of links (``Instance.path``), hop by hop, each hop occupying its own link — which
on a sparse or uneven network is not the direct link (on the local testbed, ResNet-18's dp plan
prices d2 -> d0 -> d3 because the direct 100 Mbit/s link is slower than two 500/200 Mbit/s
hops). The runtime must do the same, or the plan's prediction is for a network it does not use:
here each transfer's hops are decided once, before the run, so that

- the sender sends to the first hop, the final receiver receives from the last hop, and
- every intermediate device runs a *relay* for that flow: receive from the previous hop, send
  to the next, in the sender's order, with the message's tag unchanged.

A pure function of the schedule and the instance (no process, no socket), tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..core.instance import Instance
from ..core.schedules import Action, Schedule
from ..schedule import scheduler

# One relay step: (request, input stage carried, previous hop, next hop, flow "u>v").
RelayStep = tuple[int, int, str, str, str]


def hop_route(instance: Instance, src: str, dst: str, nbytes: float) -> tuple[str, ...]:
    """Devices a transfer visits, ``src`` first and ``dst`` last (the priced path; the direct
    pair when the instance knows no path, so a run never invents a route)."""
    if src == dst:
        return (src,)
    path = instance.path(src, dst, nbytes)
    if not path:
        return (src, dst)
    return (src, *(lk.dst for lk in path))


@dataclass(frozen=True)
class RoutedRun:
    """A schedule's actions with peers replaced by hops, plus each relay device's work."""

    actions: Mapping[str, tuple[Action, ...]]  # worker (stage) actions per device
    client: tuple[Action, ...]  # the source's client actions
    last_hop: Mapping[int, str]  # request -> device the output reaches the source from
    relays: Mapping[str, tuple[RelayStep, ...]]  # device -> its relay steps, in flow order
    routes: Mapping[tuple[str, str, int, int], tuple[str, ...]]  # (u, v, request, stage) -> hops

    @property
    def relay_devices(self) -> tuple[str, ...]:
        return tuple(d for d, steps in self.relays.items() if steps)


def route_run(sched: Schedule, instance: Instance, stage_bytes: Sequence[int]) -> RoutedRun:
    """Decide every transfer's hops (see the module docstring).

    ``stage_bytes[k]`` is the size of stage ``k``'s input (``k = num_stages``: the output), used
    when an action carries no byte count. Routes are decided on the *send* side and looked up
    on the receive side, so both ends always agree on the hop they talk to.
    """
    source = sched.source
    routes: dict[tuple[str, str, int, int], tuple[str, ...]] = {}
    relays: dict[str, list[RelayStep]] = {}

    def on_send(u: str, a: Action, stage_in: int) -> Action:
        v = str(a.peer)
        nbytes = a.nbytes or stage_bytes[stage_in]
        hops = hop_route(instance, u, v, nbytes)
        routes[(u, v, a.request, stage_in)] = hops
        for i in range(1, len(hops) - 1):
            relays.setdefault(hops[i], []).append(
                (a.request, stage_in, hops[i - 1], hops[i + 1], f"{u}>{v}")
            )
        return replace(a, peer=hops[1]) if len(hops) > 1 else a

    workers = {d: scheduler.worker_actions(sched, d) for d in sched.actions}
    client = scheduler.client_actions(sched)
    sent: dict[str, list[Action]] = {}
    for d, acts in workers.items():
        sent[d] = [on_send(d, a, a.stage + 1) if a.kind == "send" else a for a in acts]
    client_sent = [on_send(source, a, 0) if a.kind == "send" else a for a in client]

    def prev_hop(u: str, v: str, request: int, stage_in: int) -> str:
        hops = routes.get((u, v, request, stage_in))
        return hops[-2] if hops and len(hops) > 1 else u

    out: dict[str, tuple[Action, ...]] = {}
    for d, acts in sent.items():
        out[d] = tuple(
            replace(a, peer=prev_hop(str(a.peer), d, a.request, a.stage)) if a.kind == "recv" else a
            for a in acts
        )
    last_device = {r: a[-1] for r, a in enumerate(sched.assignment)}
    k_out = len(stage_bytes) - 1
    last_hop = {r: prev_hop(dev, source, r, k_out) for r, dev in last_device.items()}
    client_out = tuple(
        replace(a, peer=last_hop[a.request]) if a.kind == "recv" else a for a in client_sent
    )
    return RoutedRun(
        actions=out,
        client=client_out,
        last_hop=last_hop,
        relays={d: tuple(steps) for d, steps in relays.items()},
        routes=routes,
    )


__all__ = ["RelayStep", "RoutedRun", "hop_route", "route_run"]
