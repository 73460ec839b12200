"""Seeded random planning instances: the test and benchmark workload of every planner.

Two generators, both pure functions of their seed: :func:`random_instance` (chains shaped like
CNNs over clusters of up to a dozen devices) and :func:`random_adv_instance` (small instances
for the search/graph planners and their exhaustive ground truth).

:func:`random_instance` draws a heterogeneous cluster and a chain of pieces whose shape is
loosely that of a CNN's (per-piece work and activation sizes varying by orders of magnitude).
The same seed always gives the same instance (one ``numpy`` Generator, no global state).

Modelling choices (each a knob a test may want to stress):

- **Speeds**: device speed factor log-uniform over 25x (phone-class to server-class); each
  piece's time on a device is ``work / speed`` times an *affinity* factor in [0.6, 1.4] so
  the best device differs from piece to piece (AP²'s task–device affinity, S1).
- **Links**: every directed pair gets its own bandwidth (log-uniform 1–100 MB/s, i.e. about 8
  Mbit/s Wi-Fi to 800 Mbit/s Ethernet) and latency (0.1–5 ms); the two directions differ.
  ``sparse_links`` keeps a random spanning tree (both directions) plus each other pair with
  probability 0.3, so some transfers must hop through a relay device.
- **Memory**: roomy by default (every device could hold the whole model); ``tight_memory``
  gives each device 25–60 % of the model (at least its largest piece) so memory binds.
- **Power** (``power=True``): active 2–30 W, idle 10–30 % of active, radio 0.5–3 W; half the
  devices get DVFS levels (0.5, 0.75, 1.0) or (0.6, 0.8, 1.0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .core.instance import Device, Instance, Link, Medium, make_instance

# Per-piece work in seconds on a speed-1 device: log-uniform between these (1 ms .. 50 ms).
WORK_RANGE_S = (1e-3, 5e-2)
# Device speed factors: log-uniform between these (a 25x spread).
SPEED_RANGE = (0.2, 5.0)
# Affinity factor range: how much a piece's time on a device deviates from work / speed.
AFFINITY_RANGE = (0.6, 1.4)
# Piece memory (bytes): uniform between 1 MB and 100 MB.
MEM_RANGE = (1_000_000, 100_000_000)
# Activation bytes crossing a cut: log-uniform 10 kB .. 2 MB.
CUT_RANGE = (1e4, 2e6)
# Link bandwidth in bytes/s (log-uniform) and latency in seconds (uniform).
BANDWIDTH_RANGE = (1e6, 1e8)
LATENCY_RANGE = (1e-4, 5e-3)
# Probability of an extra (non-tree) link pair when links are sparse.
SPARSE_EXTRA_P = 0.3
# Memory share of the whole model each device gets when memory is tight.
TIGHT_SHARE = (0.25, 0.6)


def _loguniform(
    rng: np.random.Generator, lo: float, hi: float, size: int | None = None
) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def random_instance(
    rng_or_seed: int | np.random.Generator,
    pieces: int,
    devices: int,
    *,
    tight_memory: bool = False,
    sparse_links: bool = False,
    power: bool = False,
) -> Instance:
    """A random instance with ``pieces`` pieces and ``devices`` devices named ``d0..``; source ``d0``.

    Parameters
    ----------
    rng_or_seed : an int seed or a ``numpy.random.Generator`` (drawn from, so consecutive calls differ).
    pieces, devices : sizes (both >= 1).
    tight_memory : devices hold 25–60 % of the model each, so memory constrains the split.
    sparse_links : not every pair is linked; transfers may be relayed (multi-hop).
    power : add power figures and DVFS levels (for the energy objective).
    """
    if pieces < 1 or devices < 1:
        raise ValueError(
            f"random_instance needs pieces >= 1 and devices >= 1, got {pieces}, {devices}"
        )
    rng = (
        rng_or_seed
        if isinstance(rng_or_seed, np.random.Generator)
        else np.random.default_rng(rng_or_seed)
    )
    names = [f"d{i}" for i in range(devices)]
    speed = _loguniform(rng, *SPEED_RANGE, devices)
    work = _loguniform(rng, *WORK_RANGE_S, pieces)
    affinity = rng.uniform(*AFFINITY_RANGE, (pieces, devices))
    times = [
        {names[d]: float(work[p] / speed[d] * affinity[p, d]) for d in range(devices)}
        for p in range(pieces)
    ]
    mem = rng.integers(MEM_RANGE[0], MEM_RANGE[1], pieces)
    cuts = _loguniform(rng, *CUT_RANGE, pieces + 1).astype(np.int64)
    total = int(mem.sum())
    if tight_memory:
        shares = rng.uniform(*TIGHT_SHARE, devices)
        dev_mem = [max(int(total * s), int(mem.max())) for s in shares]
    else:
        dev_mem = [2 * total] * devices
    devs = []
    for d in range(devices):
        kw: dict = {}
        if power:
            active = float(rng.uniform(2.0, 30.0))
            kw = {
                "power_active_w": active,
                "power_idle_w": active * float(rng.uniform(0.1, 0.3)),
                "power_transmit_w": float(rng.uniform(0.5, 3.0)),
            }
            pick = int(rng.integers(0, 4))
            if pick == 1:
                kw["dvfs_levels"] = (0.5, 0.75, 1.0)
            elif pick == 2:
                kw["dvfs_levels"] = (0.6, 0.8, 1.0)
        devs.append(Device(names[d], dev_mem[d], **kw))
    pairs = _link_pairs(rng, devices, sparse_links)
    links = [
        Link(
            names[u],
            names[v],
            float(_loguniform(rng, *BANDWIDTH_RANGE)),
            float(rng.uniform(*LATENCY_RANGE)),
        )
        for u, v in pairs
    ]
    tag = "".join(
        flag for flag, on in (("m", tight_memory), ("s", sparse_links), ("e", power)) if on
    )
    return make_instance(
        times,
        [int(m) for m in mem],
        [int(c) for c in cuts[1:]],
        int(cuts[0]),
        devs,
        links,
        names[0],
        name=f"random-{pieces}x{devices}{'-' + tag if tag else ''}",
    )


def _link_pairs(rng: np.random.Generator, n: int, sparse: bool) -> list[tuple[int, int]]:
    """Directed device pairs that get a link: all of them, or a spanning tree + random extras."""
    if not sparse:
        return [(u, v) for u in range(n) for v in range(n) if u != v]
    order = rng.permutation(n)
    undirected: set[tuple[int, int]] = set()
    for k in range(1, n):  # random tree: each new node attaches to an earlier one
        a, b = int(order[k]), int(order[int(rng.integers(0, k))])
        undirected.add((min(a, b), max(a, b)))
    for u in range(n):
        for v in range(u + 1, n):
            if (u, v) not in undirected and rng.random() < SPARSE_EXTRA_P:
                undirected.add((u, v))
    return sorted([(u, v) for u, v in undirected] + [(v, u) for u, v in undirected])


# Largest per-(piece, device) affinity factor of random_adv_instance: 2.5x either way flips the
# order of two devices whose overall speeds differ by up to 6x on some pieces (1-6x slow-downs).
ADV_AFFINITY = 2.5


def random_adv_instance(
    seed: int | np.random.Generator,
    pieces: int,
    devices: int,
    *,
    tight_memory: bool = False,
    sparse_links: bool = False,
    power: bool = False,
    affinity: bool = True,
) -> Instance:
    """A small random heterogeneous instance (seeded) for tests and benchmarks.

    Modelling choices, each a rough edge-cluster figure: piece work 1-20 ms on the fastest
    device, device slow-downs 1-6x (a phone vs a laptop); cut sizes 10 kB-2 MB (CNN feature
    maps); links 1-100 MB/s with 0.1-5 ms latency. ``sparse_links`` keeps a ring plus a few
    chords so multi-hop paths matter; ``tight_memory`` gives each device room for 30-80 % of
    the model (one random device all of it, so a plan exists) and memory binds.
    ``affinity`` (default) multiplies each piece's time on each device by its own factor,
    log-uniform in [1/ADV_AFFINITY, ADV_AFFINITY], so a device is fast on some pieces and slow
    on others (AP²'s task–device affinity) instead of a constant multiple of the fastest one;
    the factors are drawn last, so every other figure is the same with or without them.
    """
    rng = np.random.default_rng(seed)
    names = [f"d{i}" for i in range(devices)]
    work = rng.uniform(1e-3, 20e-3, pieces)
    slow = rng.uniform(1.0, 6.0, devices)
    times = [{n: float(w * s) for n, s in zip(names, slow, strict=True)} for w in work]
    mem = rng.integers(10_000_000, 200_000_000, pieces)
    out = rng.integers(10_000, 2_000_000, pieces)
    total = int(mem.sum())
    roomy = int(rng.integers(devices))  # under tight memory one device holds everything: feasible
    devs = []
    for i, n in enumerate(names):
        if tight_memory and i != roomy:
            cap = int(total * rng.uniform(0.3, 0.8))
            cap = max(cap, int(mem.max()))  # every piece fits somewhere, keeping it feasible
        else:
            cap = 4 * total if not tight_memory else total
        pw = {}
        if power:
            active = float(rng.uniform(2.0, 15.0))
            pw = {
                "power_idle_w": active * 0.2,
                "power_active_w": active,
                "power_transmit_w": float(rng.uniform(0.5, 3.0)),
            }
        devs.append(Device(n, cap if tight_memory or i else max(cap, int(mem.max())), **pw))
    pairs = [(a, b) for a in range(devices) for b in range(devices) if a != b]
    if sparse_links and devices > 3:
        keep = {(i, (i + 1) % devices) for i in range(devices)} | {
            ((i + 1) % devices, i) for i in range(devices)
        }
        extra = [p for p in pairs if p not in keep]
        for idx in rng.choice(len(extra), size=min(len(extra), devices // 2), replace=False):
            keep.add(extra[int(idx)])
        pairs = sorted(keep)
    links = [
        Link(names[a], names[b], float(rng.uniform(1e6, 100e6)), float(rng.uniform(1e-4, 5e-3)))
        for a, b in pairs
    ]
    input_bytes = int(rng.integers(100_000, 1_000_000))
    if affinity:
        factor = np.exp(rng.uniform(-np.log(ADV_AFFINITY), np.log(ADV_AFFINITY), (pieces, devices)))
        times = [
            {n: t[n] * float(factor[p, i]) for i, n in enumerate(names)}
            for p, t in enumerate(times)
        ]
    return make_instance(
        times,
        [int(m) for m in mem],
        [int(b) for b in out],
        input_bytes,
        devs,
        links,
        names[0],
        name=f"adv-{pieces}x{devices}",
    )


__all__ = ["ADV_AFFINITY", "random_adv_instance", "random_instance"]


def with_shared_medium(
    instance: Instance, rng_or_seed: int | np.random.Generator, *, keep_wired: float = 0.2
) -> Instance:
    """``instance`` with a random group of its devices (two or more) on one shared medium.

    The members lose the dedicated links between them except a fraction ``keep_wired`` (a
    wired pair beside the Wi-Fi), and the medium gets a bandwidth/latency drawn like a link's,
    so transfers among members contend for it while those leaving the group keep their links."""
    rng = (
        rng_or_seed
        if isinstance(rng_or_seed, np.random.Generator)
        else np.random.default_rng(rng_or_seed)
    )
    names = list(instance.device_names)
    size = int(rng.integers(2, len(names) + 1))
    members = tuple(sorted(rng.choice(names, size, replace=False).tolist(), key=names.index))
    inside = set(members)
    links = tuple(
        lk
        for lk in instance.dedicated_links
        if not (lk.src in inside and lk.dst in inside) or rng.random() < keep_wired
    )
    medium = Medium(
        "air",
        members,
        float(_loguniform(rng, *BANDWIDTH_RANGE)),
        float(rng.uniform(*LATENCY_RANGE)),
    )
    return dataclasses.replace(
        instance, links=links, media=(medium,), name=f"{instance.name}-air{size}"
    )
