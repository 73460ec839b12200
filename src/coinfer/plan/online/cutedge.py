"""CutEdge (seed S3): a virtual-queue Lyapunov controller for device–edge split, DVFS and rate.

The system, one slot of ``slot_s`` seconds at a time
---------------------------------------------------
A mobile device (the instance's source) receives inference tasks; each can be split after
piece ``k`` (``k = 0``: send the input, ``k = P``: run everything locally). Pieces ``1..k`` run
on the device at DVFS level ``f`` (a fraction of f_max), the cut tensor ``b[k]`` goes up at a
transmission rate ``r <= w(t)`` (``w(t)`` is this slot's uplink bandwidth), the edge server runs
the rest and sends the output back. Per task, with the reference cost model's formulas
(:meth:`Instance.compute_s` for DVFS time, :meth:`Device.active_power_w` for DVFS power, a hop
costing ``latency + bytes / rate`` as in :mod:`coinfer.core.evaluate`):

- service latency ``l = c_k(f) + u_k(r) + s_k + d_k``: device compute, uplink hop, edge compute,
  downlink hop (the reference latency of the two-stage plan when ``r = w``);
- period ``max(c_k(f), u_k(r), s_k, d_k)``: device, uplink, edge and downlink overlap across
  tasks as in the reference period, so the slot serves at most ``mu = slot_s / period`` tasks;
- energy ``e = c_k(f) * P_active(f) + u_k(r) * P_radio(r, w)`` joules of the *device* (its
  battery is what CutEdge spends; the edge is mains-powered and not counted).

``P_radio`` makes the rate a real knob: reading ``w(t)`` as the Shannon capacity of the slot's
channel at the device's full transmit power ``P_tx``, sending at ``r`` needs
``P_tx * (2**(r/W) - 1) / (2**(w/W) - 1)`` watts (``W`` the channel width in Hz). At ``r = w`` this
is ``P_tx`` — the reference model's transmit energy exactly — and a slower rate costs less energy
per bit (power is convex in rate) but takes longer: the classic rate/energy trade-off.

Queues (the state)
------------------
- ``Q``: tasks waiting on the device (fluid: fractions of a task are allowed). Each slot serves
  ``s = min(Q, mu)`` tasks, or none when the controller idles, and ``A(t)`` new tasks arrive:
  ``Q(t+1) = Q(t) - s(t) + A(t)``. Keeping ``Q`` (strongly) stable is the *throughput*
  constraint: the long-run throughput equals the arrival rate.
- ``Z``: a virtual queue for the *latency* constraint "the task-averaged service latency is at
  most ``L_max``": ``Z(t+1) = max(Z(t) + s(t) * (l(t) - L_max), 0)``. ``Z`` grows by the excess
  latency the served tasks carry and drains when they beat ``L_max``; if ``Z`` is stable, the
  time-average of ``s * (l - L_max)`` is at most ``0``, which is the constraint.

Drift-plus-penalty: why the controller minimises what it does
-------------------------------------------------------------
Take the quadratic Lyapunov function ``L = (Q**2 + Z**2) / 2`` and its one-slot drift ``Delta``.
Since ``Q`` evolves exactly as ``Q - s + A``, its part is ``Q (A - s) + (A - s)**2 / 2``; for ``Z``,
``max(x, 0)**2 <= x**2`` gives at most ``Z g + g**2 / 2`` with ``g = s (l - L_max)``. Arrivals
have a finite second moment and ``s``, ``l`` are bounded by the slowest configuration, so the
squares are at most a constant ``B``. Adding ``V`` times the slot's energy ``p = s e``:

    Delta + V E[p]  <=  B + Q E[A] + E[ V s e - Q s + Z s (l - L_max) | Q, Z ].

The controller, seeing ``Q``, ``Z`` and this slot's bandwidth, picks the option minimising the
last term, ``J = s * (V e - Q + Z (l - L_max))``, over every split ``k``, level ``f`` and rate
``r`` — and "idle" (``s = 0``, ``J = 0``): when even the best option has ``J > 0``, energy costs
more than the backlog's pressure, and waiting is right. It minimises the bound slot by slot
without knowing the arrival rate or the bandwidth's statistics.

*Optimality gap O(1/V).* Suppose some stationary randomised policy, looking only at the slot's
bandwidth, spends ``p*`` per slot on average while serving the arrival rate and meeting the
latency bound (``E[mu] >= E[A]``, ``E[g] <= 0``, written with its offered service ``mu``; serving
``min(Q, mu)`` instead changes ``Q s`` by at most ``mu_max**2 / 4``, which joins ``B``). Our choice
makes the bracket no larger than that policy's expected one (a minimum is at most any average
over the same options); that policy's ``Q`` and ``Z`` terms are at most 0, so
``Delta + V E[p] <= B + V p*``. Summing over ``T`` slots, the drifts
telescope, and dividing by ``V T``: the time-average energy is at most ``p* + B / V + L(0) / (V T)``.

*Backlog O(V).* If a policy exists with slack (``E[mu] >= E[A] + eps`` and ``E[g] <= -eps``), the
same comparison gives ``Delta <= B + V (p_max - p_min) - eps (Q + Z)``; summing, the time-average of
``Q + Z`` is at most ``(B + V (p_max - p_min)) / eps``. By Little's law the waiting time grows at most
linearly in ``V``: ``V`` trades an ``O(1/V)`` energy gap for an ``O(V)`` delay. (For bandwidth from
a Markov chain or a repeating trace rather than i.i.d. slots, the argument runs over frames of
``T`` slots, with constants that grow with how fast the bandwidth process mixes.)

Everything here is pure numpy: per slot, the options form a small ``(K, F, R)`` array, and
:func:`drift_plus_penalty` is the one scalar formula the vectorised choice, the brute-force check
in the tests and the records agree on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...core.instance import Instance
from ...errors import InputError

# Rates offered each slot, as fractions of that slot's bandwidth (the device may send slower
# than the channel allows to save radio energy; four levels like the four DVFS levels).
DEFAULT_RATE_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
# Channel width of the uplink: a 10 MHz LTE carrier (3GPP bandwidth options are 1.4-20 MHz).
# With the 4-40 Mbit/s phone trace the spectral efficiency is 0.4-4 bit/s/Hz, inside LTE's range.
DEFAULT_CHANNEL_HZ = 10e6


def radio_power_w(
    rate_Bps: float | np.ndarray, capacity_Bps: float, transmit_w: float, channel_hz: float
) -> float | np.ndarray:
    """Watts the radio needs to send at ``rate_Bps`` over a channel whose capacity at full power
    ``transmit_w`` is ``capacity_Bps`` (Shannon inversion, see the module docstring).

    Equals ``transmit_w`` at ``rate = capacity``; convex and increasing in the rate.
    """
    ln2 = math.log(2.0)
    num = np.expm1(ln2 * 8.0 * np.asarray(rate_Bps, dtype=float) / channel_hz)
    den = math.expm1(ln2 * 8.0 * capacity_Bps / channel_hz)
    out = transmit_w * num / den
    return float(out) if np.ndim(out) == 0 else out


def drift_plus_penalty(
    served: float,
    energy_per_task_j: float,
    latency_s: float,
    *,
    V: float,
    backlog: float,
    virtual: float,
    latency_max_s: float,
) -> float:
    """``J = s (V e - Q + Z (l - L_max))``: the part of the drift-plus-penalty bound a slot's
    choice controls (module docstring). Idling is ``served = 0``, so ``J = 0``."""
    if served == 0.0:
        return 0.0
    return served * (V * energy_per_task_j - backlog + virtual * (latency_s - latency_max_s))


def next_queues(
    backlog: float, virtual: float, served: float, latency_s: float, arrivals: float,
    latency_max_s: float,
) -> tuple[float, float]:  # fmt: skip
    """``(Q(t+1), Z(t+1))`` after a slot that served ``served`` tasks of service latency
    ``latency_s`` and saw ``arrivals`` new ones."""
    q = max(backlog - served, 0.0) + arrivals
    z = max(virtual + served * (latency_s - latency_max_s), 0.0)
    return q, z


@dataclass(frozen=True, slots=True)
class SlotOptions:
    """Every (split, level, rate) option of one slot, priced per task; arrays ``(K, F, R)``.

    Options that are the same thing under another name are masked (``valid`` false): a fully
    local split sends nothing, so only its first rate is kept; a fully offloaded split computes
    nothing on the device, so only its top level is kept. This makes the argmin unique up to
    genuine ties.
    """

    bandwidth_Bps: float
    rates_Bps: np.ndarray  # (R,)
    latency_s: np.ndarray
    period_s: np.ndarray
    energy_j: np.ndarray
    capacity_tasks: np.ndarray  # slot_s / period
    valid: np.ndarray


@dataclass(frozen=True)
class SplitSystem:
    """The per-task costs of every split of ``instance`` between ``device`` and ``server``.

    Build with :meth:`from_instance`; :meth:`options` prices a slot's options for its bandwidth
    and :meth:`price` one option (the scalar form the tests brute-force over).
    """

    device: str
    server: str
    slot_s: float
    levels: tuple[float, ...]
    rate_fractions: tuple[float, ...]
    channel_hz: float
    transmit_w: float
    uplink_latency_s: float
    device_s: np.ndarray  # (K, F): compute seconds on the device of pieces 1..k at each level
    device_j: np.ndarray  # (K, F): their energy
    up_bytes: np.ndarray  # (K,): bytes sent up (0 for the fully local split)
    server_s: np.ndarray  # (K,): edge compute of pieces k+1..P
    down_s: np.ndarray  # (K,): output transfer back to the device (0 when fully local)

    @property
    def num_splits(self) -> int:
        return int(self.device_s.shape[0])

    @classmethod
    def from_instance(
        cls,
        instance: Instance,
        device: str | None = None,
        server: str | None = None,
        *,
        slot_s: float,
        rate_fractions: Sequence[float] = DEFAULT_RATE_FRACTIONS,
        channel_hz: float = DEFAULT_CHANNEL_HZ,
    ) -> SplitSystem:
        """Precompute the split costs (``device`` defaults to the source, ``server`` to the
        only other device).

        Raises
        ------
        InputError
            Unknown device/server, no direct uplink, missing power figures, bad slot or rates.
        """
        dev_name = device or instance.source
        others = [d for d in instance.device_names if d != dev_name]
        if server is None:
            if len(others) != 1:
                raise InputError(f"{instance.name}: name the edge server, one of {others}")
            server = others[0]
        for role, name in (("device", dev_name), ("server", server)):
            if name not in instance.device_by_name:
                raise InputError(
                    f"{instance.name}: {role} {name!r} is not a device "
                    f"(devices: {list(instance.device_names)})"
                )
        if dev_name == server:
            raise InputError(f"{instance.name}: device and server are both {dev_name!r}")
        dev = instance.device_by_name[dev_name]
        if dev.power_active_w is None or dev.power_transmit_w is None:
            raise InputError(
                f"{instance.name}: device {dev_name!r} needs active and transmit power figures"
            )
        uplink = instance.link_by_pair.get((dev_name, server))
        if uplink is None:
            raise InputError(f"{instance.name}: no direct link {dev_name} -> {server}")
        if not (slot_s > 0) or not (channel_hz > 0):
            raise InputError(f"slot_s and channel_hz must be > 0 (got {slot_s}, {channel_hz})")
        fr = tuple(float(x) for x in rate_fractions)
        if not fr or any(not (0 < x <= 1) for x in fr):
            raise InputError(f"rate_fractions must be fractions in (0, 1] (got {list(fr)})")
        levels = tuple(sorted(dev.dvfs_levels))
        P = instance.num_pieces
        device_s = np.zeros((P + 1, len(levels)))
        device_j = np.zeros((P + 1, len(levels)))
        for k in range(1, P + 1):
            for j, f in enumerate(levels):
                t = instance.compute_s(0, k - 1, dev_name, f)
                device_s[k, j] = t
                device_j[k, j] = t * dev.active_power_w(f)
        up = np.array([float(instance.cut_bytes(k)) for k in range(P)] + [0.0])
        srv = np.array([instance.compute_s(k, P - 1, server) for k in range(P)] + [0.0])
        down_one = instance.transfer_s(server, dev_name, instance.output_bytes)
        down = np.array([down_one] * P + [0.0])
        return cls(
            dev_name, server, float(slot_s), levels, fr, float(channel_hz),
            float(dev.power_transmit_w), uplink.latency_s, device_s, device_j, up, srv, down,
        )  # fmt: skip

    # ----- pricing -------------------------------------------------------------------------
    def price(
        self, split: int, level: int, rate_Bps: float, bandwidth_Bps: float
    ) -> dict[str, float]:
        """Per-task ``latency_s``, ``period_s``, ``energy_j`` and the slot's ``capacity_tasks`` of
        one option (``level`` indexes :attr:`levels`)."""
        local = split == self.num_splits - 1
        up_s = 0.0 if local else self.uplink_latency_s + self.up_bytes[split] / rate_Bps
        radio = 0.0 if local else radio_power_w(
            rate_Bps, bandwidth_Bps, self.transmit_w, self.channel_hz
        )  # fmt: skip
        c = float(self.device_s[split, level])
        s, d = float(self.server_s[split]), float(self.down_s[split])
        period = max(c, up_s, s, d)
        return {
            "latency_s": c + up_s + s + d,
            "period_s": period,
            "energy_j": float(self.device_j[split, level]) + up_s * float(radio),
            "capacity_tasks": math.inf if period <= 0 else self.slot_s / period,
        }

    def options(self, bandwidth_Bps: float) -> SlotOptions:
        """All options of a slot with uplink bandwidth ``bandwidth_Bps`` (arrays ``(K, F, R)``)."""
        if not (bandwidth_Bps > 0 and math.isfinite(bandwidth_Bps)):
            raise InputError(f"bandwidth must be finite and > 0 (got {bandwidth_Bps!r})")
        K, F = self.device_s.shape
        rates = np.asarray(self.rate_fractions) * bandwidth_Bps
        R = rates.size
        up_s = self.uplink_latency_s + self.up_bytes[:, None] / rates[None, :]  # (K, R)
        up_s[K - 1, :] = 0.0
        radio = np.asarray(radio_power_w(rates, bandwidth_Bps, self.transmit_w, self.channel_hz))
        c = self.device_s[:, :, None]
        u = up_s[:, None, :]
        rest = (self.server_s + self.down_s)[:, None, None]
        latency = np.broadcast_to(c + u + rest, (K, F, R))
        period = np.maximum(np.maximum(c, u), np.maximum(self.server_s, self.down_s)[:, None, None])
        period = np.broadcast_to(period, (K, F, R))
        energy = np.broadcast_to(self.device_j[:, :, None] + u * radio[None, None, :], (K, F, R))
        with np.errstate(divide="ignore"):
            capacity = np.where(period > 0, self.slot_s / np.where(period > 0, period, 1.0), np.inf)
        valid = np.ones((K, F, R), dtype=bool)
        valid[K - 1, :, 1:] = False  # fully local: the rate means nothing, keep one
        valid[0, :-1, :] = False  # fully offloaded: the level means nothing, keep the top one
        return SlotOptions(
            float(bandwidth_Bps), rates, latency, period, energy, capacity, valid
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Decision:
    """One slot's choice and its consequences, as plain data (``to_dict`` / ``from_dict``).

    ``split``/``level``/``freq``/``rate_Bps`` are ``None`` when the slot idles (nothing served).
    ``split`` counts pieces on the device (0 = all on the edge, ``P`` = all local); ``rate_Bps``
    is 0 for a fully local split. ``objective`` is the drift-plus-penalty term ``J`` the
    controller minimised (0 for policies that do not use it, and for idling).
    """

    policy: str
    slot: int
    bandwidth_Bps: float
    backlog: float
    virtual: float
    served: float
    energy_j: float
    latency_s: float
    capacity_tasks: float
    objective: float
    split: int | None = None
    level: int | None = None
    freq: float | None = None
    rate_Bps: float | None = None

    @property
    def idle(self) -> bool:
        return self.split is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise InputError(f"decision record: {exc}") from None


def decision_for(
    policy: str,
    system: SplitSystem,
    opts: SlotOptions,
    index: tuple[int, int, int] | None,
    *,
    slot: int,
    backlog: float,
    virtual: float,
    served: float,
    objective: float = 0.0,
) -> Decision:
    """The record of serving ``served`` tasks with option ``index`` (``None``: idle)."""
    if index is None or served <= 0.0:
        return Decision(policy, slot, opts.bandwidth_Bps, backlog, virtual, 0.0, 0.0, 0.0, 0.0, 0.0)
    k, j, r = index
    local = k == system.num_splits - 1
    return Decision(
        policy, slot, opts.bandwidth_Bps, backlog, virtual, float(served),
        float(served * opts.energy_j[index]), float(opts.latency_s[index]),
        float(opts.capacity_tasks[index]), float(objective), int(k), int(j),
        system.levels[j], 0.0 if local else float(opts.rates_Bps[r]),
    )  # fmt: skip


@dataclass(frozen=True)
class CutEdge:
    """The Lyapunov controller: each slot, the option minimising ``J`` (module docstring).

    Parameters
    ----------
    system : the split costs.
    V : energy weight (joules are multiplied by it against queue lengths in tasks): larger V,
        less energy and more backlog.
    latency_max_s : ``L_max``, the bound on the task-averaged service latency.
    """

    system: SplitSystem
    V: float
    latency_max_s: float
    name: str = "cutedge"

    def __post_init__(self) -> None:
        if not (self.V >= 0 and math.isfinite(self.V)):
            raise InputError(f"V must be finite and >= 0 (got {self.V!r})")
        if not (self.latency_max_s > 0):
            raise InputError(f"latency_max_s must be > 0 (got {self.latency_max_s!r})")

    def objective(self, opts: SlotOptions, backlog: float, virtual: float) -> np.ndarray:
        """``J`` of every option (``+inf`` for masked ones); vectorised :func:`drift_plus_penalty`."""
        served = np.minimum(backlog, opts.capacity_tasks)
        bracket = self.V * opts.energy_j - backlog + virtual * (opts.latency_s - self.latency_max_s)
        j = np.where(served > 0, served * bracket, 0.0)
        return np.where(opts.valid, j, np.inf)

    def decide(self, slot: int, backlog: float, virtual: float, bandwidth_Bps: float) -> Decision:
        """The slot's decision given the queues and the observed bandwidth."""
        opts = self.system.options(bandwidth_Bps)
        if backlog <= 0.0:
            return decision_for(self.name, self.system, opts, None,
                                slot=slot, backlog=backlog, virtual=virtual, served=0.0)  # fmt: skip
        j = self.objective(opts, backlog, virtual)
        flat = int(np.argmin(j))
        best = float(j.flat[flat])
        if not best < 0.0:  # no option beats waiting
            return decision_for(self.name, self.system, opts, None,
                                slot=slot, backlog=backlog, virtual=virtual, served=0.0)  # fmt: skip
        index = tuple(int(i) for i in np.unravel_index(flat, j.shape))
        served = min(backlog, float(opts.capacity_tasks[index]))
        return decision_for(
            self.name, self.system, opts, index,  # type: ignore[arg-type]
            slot=slot, backlog=backlog, virtual=virtual, served=served, objective=best,
        )  # fmt: skip


__all__ = [
    "DEFAULT_CHANNEL_HZ",
    "DEFAULT_RATE_FRACTIONS",
    "CutEdge",
    "Decision",
    "SlotOptions",
    "SplitSystem",
    "decision_for",
    "drift_plus_penalty",
    "next_queues",
    "radio_power_w",
]
