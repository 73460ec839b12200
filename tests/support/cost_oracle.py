"""An independent, deliberately plain implementation of the reference cost model.

Written from ``docs/cost_model.md`` alone, to check ``coinfer.core.evaluate`` (and the simulator)
against something that shares none of their code: it reads only the raw fields of an instance
(piece times, memory and cut bytes, devices' memory and power figures, links, the source) and
does everything else itself — routes by enumerating every simple path (no Dijkstra, no cache),
replica shares from their definition, busy time per device and per directed link, energy with
the DVFS power curve. Simple beats fast here: instances in the tests have at most ~7 devices.

Definitions (the doc's words, as code):

- a hop of ``x`` bytes over a directed link costs ``L + x / B``; a transfer takes the path of
  least total cost (a relay when cheaper); on one device it is free; with no path it never
  happens (infinite cost);
- stage ``k`` holds pieces ``first..last`` and devices (replicas) whose compute time is the sum
  of the piece times divided by the DVFS level; replicas share requests ``w_i ∝ 1 / T_i``;
- latency: source → stage 1 (input bytes) → ... → last stage → source (output bytes), taking the
  cheapest route through the replicas;
- period: the largest per-request busy time of any device (Σ over its stages of ``w_i T_i``)
  or directed link (Σ over transfers crossing it of ``share · (L + x / B)``, with share
  ``w_u · w_v`` between replicas);
- shared media: every ordered pair of a medium's members without a dedicated link has a hop at
  the medium's bandwidth and latency; all hops over one medium, in either direction, add to ONE
  busy time (the medium's), which enters the period beside the links';
- energy: Σ device busy time × (idle + (active − idle) · f^exponent) + Σ hop time × share ×
  the sending device's transmit power; undefined (None) when a used device has no power figure.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

INF = math.inf


class Hop(NamedTuple):
    """A usable hop and the resource it keeps busy (its pair, or its medium's name)."""

    src: str
    dst: str
    bandwidth_Bps: float
    latency_s: float
    resource: Any

    def transfer_s(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bandwidth_Bps


def hops(instance: Any) -> list[Hop]:
    """Dedicated links as given, plus a hop for every ordered member pair of a medium that has
    no dedicated link (built here from the raw fields, not from the instance's own expansion)."""
    dedicated = [lk for lk in instance.links if getattr(lk, "medium", None) is None]
    out = [
        Hop(lk.src, lk.dst, lk.bandwidth_Bps, lk.latency_s, (lk.src, lk.dst)) for lk in dedicated
    ]
    wired = {(lk.src, lk.dst) for lk in dedicated}
    for m in getattr(instance, "media", ()):
        for u in m.members:
            for v in m.members:
                if u != v and (u, v) not in wired:
                    out.append(Hop(u, v, m.bandwidth_Bps, m.latency_s, m.name))
    return out


def hop_cost(link: Any, nbytes: float) -> float:
    return link.latency_s + nbytes / link.bandwidth_Bps


def all_simple_paths(instance: Any, u: str, v: str) -> list[list[Any]]:
    """Every simple path of hops from ``u`` to ``v`` (depth-first enumeration)."""
    out_links: dict[str, list[Any]] = {}
    for lk in hops(instance):
        out_links.setdefault(lk.src, []).append(lk)
    paths: list[list[Any]] = []

    def walk(node: str, seen: set[str], path: list[Any]) -> None:
        if node == v:
            paths.append(list(path))
            return
        for lk in out_links.get(node, []):
            if lk.dst not in seen:
                seen.add(lk.dst)
                path.append(lk)
                walk(lk.dst, seen, path)
                path.pop()
                seen.discard(lk.dst)

    walk(u, {u}, [])
    return paths


def cheapest_path(instance: Any, u: str, v: str, nbytes: float) -> list[Any] | None:
    """The least-cost path for ``nbytes`` (``[]`` on one device, ``None`` if unreachable).

    Ties (equal cost to ~1e-12 relative) go to the path with fewer hops, so a direct link wins
    an exact tie with a relay."""
    if u == v:
        return []
    best, best_key = None, (INF, 0)
    for p in all_simple_paths(instance, u, v):
        cost = sum(hop_cost(lk, nbytes) for lk in p)
        key = (cost, len(p))
        if (
            best is None
            or cost < best_key[0] * (1 - 1e-12)
            or (math.isclose(cost, best_key[0], rel_tol=1e-12) and len(p) < best_key[1])
        ):
            best, best_key = p, key
    return best


# (id(instance), u, v, bytes) -> (instance, path): a plain memo so exhaustive plan enumeration
# stays fast; the instance is kept alive in the value so its id cannot be reused.
_ROUTES: dict[tuple[int, str, str, float], tuple[Any, list[Any] | None]] = {}


def route(instance: Any, u: str, v: str, nbytes: float) -> list[Any] | None:
    """:func:`cheapest_path`, remembered."""
    key = (id(instance), u, v, float(nbytes))
    hit = _ROUTES.get(key)
    if hit is None or hit[0] is not instance:
        if len(_ROUTES) > 200_000:
            _ROUTES.clear()
        hit = _ROUTES[key] = (instance, cheapest_path(instance, u, v, nbytes))
    return hit[1]


def transfer_time(instance: Any, u: str, v: str, nbytes: float) -> float:
    p = route(instance, u, v, nbytes)
    return INF if p is None else sum(hop_cost(lk, nbytes) for lk in p)


def device(instance: Any, name: str) -> Any:
    return next(d for d in instance.devices if d.name == name)


def freq(stage: Any, i: int) -> float:
    return 1.0 if stage.freqs is None else stage.freqs[i]


def compute_time(instance: Any, stage: Any, i: int) -> float:
    d = stage.devices[i]
    work = sum(instance.pieces[p].time_s[d] for p in range(stage.first, stage.last + 1))
    return work / freq(stage, i)


def shares(instance: Any, stage: Any) -> list[float]:
    """Replica shares ``w_i ∝ 1/T_i`` (replicas that take no time absorb all, equally)."""
    times = [compute_time(instance, stage, i) for i in range(len(stage.devices))]
    if any(t == 0 for t in times):
        zeros = [t == 0 for t in times]
        return [1.0 / sum(zeros) if z else 0.0 for z in zeros]
    inv = [1.0 / t for t in times]
    return [x / sum(inv) for x in inv]


def cut_in(instance: Any, stage: Any) -> int:
    """Bytes entering a stage: the input for the first piece, else the previous piece's cut."""
    return instance.input_bytes if stage.first == 0 else instance.pieces[stage.first - 1].out_bytes


def oracle_latency_s(instance: Any, stages: Any) -> float:
    """One request through an idle system, cheapest route through the replicas."""
    arrive_done = {instance.source: 0.0}  # device -> earliest time its work on the request ends
    for st in stages:
        nbytes = cut_in(instance, st)
        nxt = {}
        for i, d in enumerate(st.devices):
            reach = min(t + transfer_time(instance, u, d, nbytes) for u, t in arrive_done.items())
            nxt[d] = reach + compute_time(instance, st, i)
        arrive_done = nxt
    out = instance.pieces[-1].out_bytes
    return min(t + transfer_time(instance, u, instance.source, out) for u, t in arrive_done.items())


def _transfers(instance: Any, stages: Any) -> list[tuple[str, str, float, float]]:
    """Every (sender, receiver, bytes, share) a request causes, source to source."""
    groups = [([instance.source], [1.0])]
    groups += [(list(st.devices), shares(instance, st)) for st in stages]
    groups.append(([instance.source], [1.0]))
    sizes = [cut_in(instance, st) for st in stages] + [instance.pieces[-1].out_bytes]
    out = []
    for k, nbytes in enumerate(sizes):
        (us, wu), (vs, wv) = groups[k], groups[k + 1]
        for u, a in zip(us, wu, strict=True):
            for v, b in zip(vs, wv, strict=True):
                if u != v and a * b > 0:
                    out.append((u, v, nbytes, a * b))
    return out


def oracle_busy(instance: Any, stages: Any) -> tuple[dict[str, float], dict[Any, float]]:
    dev: dict[str, float] = {}
    for st in stages:
        w = shares(instance, st)
        for i, d in enumerate(st.devices):
            dev[d] = dev.get(d, 0.0) + w[i] * compute_time(instance, st, i)
    link: dict[Any, float] = {}
    for u, v, nbytes, share in _transfers(instance, stages):
        p = route(instance, u, v, nbytes)
        if p is None:
            link[(u, v)] = INF
            continue
        for lk in p:
            link[lk.resource] = link.get(lk.resource, 0.0) + share * hop_cost(lk, nbytes)
    return dev, link


def oracle_period_s(instance: Any, stages: Any) -> float:
    dev, link = oracle_busy(instance, stages)
    return max([0.0, *dev.values(), *link.values()])


def power_at(dev: Any, f: float) -> float:
    idle = dev.power_idle_w or 0.0
    return idle + (dev.power_active_w - idle) * f**dev.power_exponent


def oracle_energy_j(instance: Any, stages: Any) -> float | None:
    used = {d for st in stages for d in st.devices}
    if any(device(instance, d).power_active_w is None for d in used):
        return None
    total = 0.0
    for st in stages:
        w = shares(instance, st)
        for i, d in enumerate(st.devices):
            total += (
                w[i] * compute_time(instance, st, i) * power_at(device(instance, d), freq(st, i))
            )
    for u, v, nbytes, share in _transfers(instance, stages):
        p = route(instance, u, v, nbytes)
        if p is None:
            return INF
        for lk in p:
            total += (
                share * hop_cost(lk, nbytes) * (device(instance, lk.src).power_transmit_w or 0.0)
            )
    return total


def oracle_fits(instance: Any, stages: Any) -> bool:
    """Every device holds the pieces of all its stages within its memory."""
    need: dict[str, int] = {}
    for st in stages:
        mem = sum(instance.pieces[p].mem_bytes for p in range(st.first, st.last + 1))
        for d in st.devices:
            need[d] = need.get(d, 0) + mem
    return all(need[d] <= device(instance, d).mem_bytes for d in need)
