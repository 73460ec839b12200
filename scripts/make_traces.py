"""Write the bandwidth traces of ``examples/clusters/traces/`` (seeded, reproducible).

Run from the repository root::

    python scripts/make_traces.py            # all four traces, default seeds
    python scripts/make_traces.py --check    # regenerate in memory, fail if a file differs

Every trace is a CSV ``time_s,bandwidth_mbps`` read by ``coinfer.cluster.load_trace``: piecewise
constant, each value holding from its time until the next row, the last row marking the end of
the window (and holding afterwards). ``examples/clusters/traces/README.md`` states each model,
its parameters and where each number comes from; the constants below carry the same notes.

Two traces are *shaped from published statistics* (a stochastic process whose parameters are
the published figures, not a replay of a measured log) and two are synthetic steps:

``lte_uplink.csv``
    An LTE uplink as seen by one phone: a log-normal throughput whose logarithm is an AR(1)
    (Ornstein-Uhlenbeck sampled every ``dt``) process, i.e. exponential autocorrelation with a
    correlation time, plus a two-state (Gilbert-Elliott) outage chain. Level scaled by
    ``LTE_SCALE`` onto the local testbed (see the README, "Scaling").
``wifi_congested.csv``
    One 802.11n station's share of a cell shared with ``WIFI_BACKGROUND`` other stations that
    switch between backlogged (ON) and idle (OFF). The share when ``k`` others are ON is
    ``S(k + 1) / (k + 1)``, ``S(n)`` the saturation throughput of ``n`` stations from Bianchi's
    model (computed here from the 802.11 timing parameters), times a small log-normal jitter for
    rate adaptation.
``step_10x.csv`` / ``steps_staircase.csv``
    Synthetic: a nominal level with a 10x drop at t = 10 s for 20 s; and a staircase of levels.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parents[1] / "examples" / "clusters" / "traces"

# ----- LTE uplink --------------------------------------------------------------------------------
# Median uplink throughput of commercial LTE: 6 Mbit/s (Huang, Qian, Gerber, Mao, Sen, Spatscheck,
# "A Close Examination of Performance and Power Characteristics of 4G LTE Networks", ACM MobiSys
# 2012: 4GTest, >3000 users; abstract: median downlink 13 Mbit/s and uplink 6 Mbit/s).
LTE_MEDIAN_MBPS = 6.0
# Coefficient of variation of the throughput within one session: ASSUMED (0.6). Crowd-sourced
# studies report spreads across users and places, not within one session; 0.6 puts the 5-95 %
# range at 0.4x-2.5x the median, the swing seen in the published per-second LTE logs we know of
# only qualitatively (e.g. Raca, Quinlan, Zahran, Sreenan, "Beyond Throughput: a 4G LTE Dataset
# with Channel and Context Metrics", ACM MMSys 2018), not from a figure we could check here.
LTE_COV = 0.6
# Correlation time of the log-throughput (exponential autocorrelation): ASSUMED 3 s, between fast
# fading (milliseconds, averaged out by 1 s samples) and the cell-load/position changes of a
# walking user (tens of seconds).
LTE_CORR_TIME_S = 3.0
# Outages (coverage holes, handover stalls as TCP sees them): ASSUMED 2 % of the time, mean length
# 1.5 s. Radio-level handover interruptions are tens of milliseconds (measured by Han, Shin, Cho,
# Chung, Ok, Hwang, "Measurement and stochastic modeling of handover delay and interruption time
# of smartphone real-time applications on LTE networks", IEEE Communications Magazine 53(3),
# 2015), invisible at 1 s; what 1 s samples show are the longer stalls around them.
LTE_OUTAGE_FRACTION = 0.02
LTE_OUTAGE_MEAN_S = 1.5
# During an outage a trace cannot be 0 (coinfer traces must stay > 0): 5 % of the median remains.
LTE_OUTAGE_LEVEL = 0.05
# Cap: the uplink peak of an LTE category-4 UE, 50 Mbit/s (3GPP TS 36.306), before scaling.
LTE_PEAK_MBPS = 50.0
# Scaling onto the local testbed: x20 puts the median at 120 Mbit/s, inside the range where the
# dp plan of ResNet-18 on the testbed changes (links of d3 at ~40, 60, 100 and 200 Mbit/s). Only
# the ratio bytes-per-request / bandwidth matters to a plan, so this is the same as a model whose
# cut tensors are 20x smaller (e.g. compressed features) over a real LTE uplink.
LTE_SCALE = 20.0

# ----- congested Wi-Fi (802.11n, Bianchi's saturation model) --------------------------------------
# 802.11 OFDM/HT timing (IEEE Std 802.11-2016, OFDM PHY characteristics): slot 9 us, SIFS 16 us,
# DIFS = SIFS + 2 slots = 34 us, CWmin = 15 and CWmax = 1023, i.e. W = 16 and m = 6 backoff stages.
WIFI_SLOT_S = 9e-6
WIFI_SIFS_S = 16e-6
WIFI_DIFS_S = WIFI_SIFS_S + 2 * WIFI_SLOT_S
WIFI_W = 16
WIFI_M = 6
# PHY: HT 40 MHz, 2 spatial streams, MCS 15, short guard interval = 300 Mbit/s (802.11n rate
# table); HT-mixed preamble for 2 streams = 8 + 8 + 4 (legacy) + 8 + 4 + 2 x 4 (HT) = 40 us.
WIFI_PHY_RATE_BPS = 300e6
WIFI_PREAMBLE_S = 40e-6
# Each channel access sends an A-MPDU of 16 MSDUs of 1500 bytes, each MPDU carrying 38 bytes of
# MAC header, FCS, delimiter and padding: ASSUMED (a modest aggregate; the limit is 64 KiB).
WIFI_MSDUS_PER_TXOP = 16
WIFI_MSDU_BYTES = 1500
WIFI_MPDU_OVERHEAD_BYTES = 38
# Block Ack: 32 bytes at the 24 Mbit/s legacy rate = 20 us preamble + 3 OFDM symbols of 4 us.
WIFI_BLOCK_ACK_S = 20e-6 + 3 * 4e-6
# Background load: 8 other stations, each alternating backlogged (ON, mean 4 s) and idle (OFF,
# mean 12 s), exponential durations: ASSUMED (a busy office/cafe cell; 2 stations ON on average).
WIFI_BACKGROUND = 8
WIFI_ON_MEAN_S = 4.0
WIFI_OFF_MEAN_S = 12.0
# Rate-adaptation / interference jitter on top: log-normal, 10 % spread (ASSUMED).
WIFI_JITTER = 0.10

# ----- shared -----------------------------------------------------------------------------------
DT_S = 1.0  # sample period of the stochastic traces (1 s, as speed-test style logs)
DURATION_S = 120.0  # window of the stochastic traces
SEEDS = {"lte_uplink": 20250101, "wifi_congested": 20250102}
# Synthetic steps, on the scale of the testbed link d0-d3 (200 Mbit/s in local_testbed.yaml).
STEP_NOMINAL_MBPS = 200.0
STEP_FACTOR = 10.0
STEP_AT_S = 10.0
STEP_FOR_S = 20.0
STEP_DURATION_S = 60.0
STAIRCASE_MBPS = (200.0, 100.0, 50.0, 25.0, 50.0, 100.0, 200.0)
STAIRCASE_STEP_S = 10.0

Rows = list[tuple[float, float]]


def lte_uplink(
    rng: np.random.Generator,
    *,
    duration_s: float = DURATION_S,
    dt_s: float = DT_S,
    median_mbps: float = LTE_MEDIAN_MBPS * LTE_SCALE,
    cov: float = LTE_COV,
    corr_time_s: float = LTE_CORR_TIME_S,
    outage_fraction: float = LTE_OUTAGE_FRACTION,
    outage_mean_s: float = LTE_OUTAGE_MEAN_S,
    outage_level: float = LTE_OUTAGE_LEVEL,
    peak_mbps: float = LTE_PEAK_MBPS * LTE_SCALE,
) -> Rows:
    """Log-normal AR(1) throughput with Gilbert-Elliott outages, one value per ``dt_s``.

    ``log(bw / median)`` is a stationary AR(1) with coefficient ``exp(-dt / corr_time)`` and
    standard deviation ``sqrt(log(1 + cov^2))`` (so ``bw`` is log-normal with that median and
    coefficient of variation). The outage chain leaves the good state with probability
    ``dt / mean_good`` per step, ``mean_good = outage_mean * (1 - f) / f``, so the long-run
    outage fraction is ``f``; it leaves an outage with probability ``dt / outage_mean``.
    """
    n = round(duration_s / dt_s)
    sigma = math.sqrt(math.log(1.0 + cov * cov))
    phi = math.exp(-dt_s / corr_time_s)
    innovation = sigma * math.sqrt(1.0 - phi * phi)
    p_enter = min(1.0, dt_s / (outage_mean_s * (1.0 - outage_fraction) / outage_fraction))
    p_leave = min(1.0, dt_s / outage_mean_s)
    x = rng.normal(0.0, sigma)
    out = False
    rows: Rows = []
    for i in range(n):
        if i:
            x = phi * x + rng.normal(0.0, innovation)
        u = rng.random()
        out = (u >= p_leave) if out else (u < p_enter)
        bw = min(median_mbps * math.exp(x), peak_mbps)
        if out:
            bw = median_mbps * outage_level
        rows.append((i * dt_s, bw))
    return rows


def bianchi_tau(p: float, w: int = WIFI_W, m: int = WIFI_M) -> float:
    """Per-slot transmission probability of a saturated station given collision probability ``p``.

    Bianchi (IEEE JSAC 18(3), 2000), eq. (7), written as ``2 / (W + 1 + p W sum_{i<m} (2p)^i)``
    (the same expression with ``1 - 2p`` divided out, so it is finite at ``p = 1/2``).
    """
    return 2.0 / (w + 1.0 + p * w * sum((2.0 * p) ** i for i in range(m)))


def bianchi_saturation_bps(n: int) -> float:
    """Aggregate saturation throughput (useful bit/s) of ``n`` saturated 802.11n stations.

    Solves Bianchi's fixed point ``p = 1 - (1 - tau(p))^(n-1)`` by bisection (its left side grows
    and its right side falls with ``p``: one root), then eq. (13) with basic access:
    ``S = Ps Ptr E[P] / ((1 - Ptr) slot + Ptr Ps Ts + Ptr (1 - Ps) Tc)``.
    """
    if n < 1:
        raise ValueError(f"need at least one station, got {n}")
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if mid - (1.0 - (1.0 - bianchi_tau(mid)) ** (n - 1)) < 0:
            lo = mid
        else:
            hi = mid
    tau = bianchi_tau(0.5 * (lo + hi))
    p_tr = 1.0 - (1.0 - tau) ** n
    p_s = n * tau * (1.0 - tau) ** (n - 1) / p_tr
    payload_bits = WIFI_MSDUS_PER_TXOP * WIFI_MSDU_BYTES * 8
    frame_s = (
        WIFI_PREAMBLE_S
        + WIFI_MSDUS_PER_TXOP * (WIFI_MSDU_BYTES + WIFI_MPDU_OVERHEAD_BYTES) * 8 / WIFI_PHY_RATE_BPS
    )
    t_success = frame_s + WIFI_SIFS_S + WIFI_BLOCK_ACK_S + WIFI_DIFS_S
    t_collision = frame_s + WIFI_DIFS_S
    slot_mean = (1 - p_tr) * WIFI_SLOT_S + p_tr * p_s * t_success + p_tr * (1 - p_s) * t_collision
    return p_s * p_tr * payload_bits / slot_mean


def wifi_congested(
    rng: np.random.Generator,
    *,
    duration_s: float = DURATION_S,
    dt_s: float = DT_S,
    background: int = WIFI_BACKGROUND,
    on_mean_s: float = WIFI_ON_MEAN_S,
    off_mean_s: float = WIFI_OFF_MEAN_S,
    jitter: float = WIFI_JITTER,
) -> Rows:
    """One saturated station's share ``S(k + 1) / (k + 1)`` as ``k`` background stations turn on/off."""
    n = round(duration_s / dt_s)
    share = [bianchi_saturation_bps(k + 1) / (k + 1) / 1e6 for k in range(background + 1)]
    p_on = on_mean_s / (on_mean_s + off_mean_s)
    on = rng.random(background) < p_on  # start in the stationary distribution
    p_stop, p_start = min(1.0, dt_s / on_mean_s), min(1.0, dt_s / off_mean_s)
    rows: Rows = []
    for i in range(n):
        if i:
            u = rng.random(background)
            on = np.where(on, u >= p_stop, u < p_start)
        k = int(on.sum())
        # the jitter only takes away: no station gets more than the cell alone gives it
        factor = math.exp(rng.normal(-0.5 * jitter**2, jitter))
        rows.append((i * dt_s, min(share[k] * factor, share[0])))
    return rows


def step_10x() -> Rows:
    """Nominal, a ``STEP_FACTOR`` drop at ``STEP_AT_S`` for ``STEP_FOR_S``, nominal again."""
    low = STEP_NOMINAL_MBPS / STEP_FACTOR
    return [
        (0.0, STEP_NOMINAL_MBPS),
        (STEP_AT_S, low),
        (STEP_AT_S + STEP_FOR_S, STEP_NOMINAL_MBPS),
    ]


def steps_staircase() -> Rows:
    return [(i * STAIRCASE_STEP_S, mbps) for i, mbps in enumerate(STAIRCASE_MBPS)]


def to_csv(rows: Rows, end_s: float, header: Sequence[str]) -> str:
    """CSV text: comment lines, the column header, one row per value, and a closing row at
    ``end_s`` repeating the last value (it marks the end of the window for the mean)."""
    lines = [f"# {h}" for h in header] + ["time_s,bandwidth_mbps"]
    lines += [f"{t:g},{bw:.1f}" for t, bw in rows]
    lines.append(f"{end_s:g},{rows[-1][1]:.1f}")
    return "\n".join(lines) + "\n"


def summary(rows: Rows) -> str:
    bw = np.array([b for _, b in rows])
    return (
        f"mean {bw.mean():.1f}, median {np.median(bw):.1f}, min {bw.min():.1f}, "
        f"max {bw.max():.1f} Mbit/s; cov {bw.std() / bw.mean():.2f}"
    )


def build() -> dict[str, str]:
    """File name -> CSV text of every trace."""
    regen = "regenerate: python scripts/make_traces.py (see README.md in this folder)"
    lte = lte_uplink(np.random.default_rng(SEEDS["lte_uplink"]))
    wifi = wifi_congested(np.random.default_rng(SEEDS["wifi_congested"]))
    return {
        "lte_uplink.csv": to_csv(
            lte,
            DURATION_S,
            [
                "LTE uplink, shaped from published statistics (README.md): log-normal AR(1) + outages,",
                f"median {LTE_MEDIAN_MBPS:g} Mbit/s (Huang et al., MobiSys 2012) x {LTE_SCALE:g} "
                f"(testbed scale), seed {SEEDS['lte_uplink']}.",
                summary(lte),
                regen,
            ],
        ),
        "wifi_congested.csv": to_csv(
            wifi,
            DURATION_S,
            [
                "Congested 802.11n cell: one station's share S(k+1)/(k+1) of Bianchi's saturation",
                f"throughput (IEEE JSAC 2000) with k of {WIFI_BACKGROUND} background stations ON; "
                f"seed {SEEDS['wifi_congested']}.",
                summary(wifi),
                regen,
            ],
        ),
        "step_10x.csv": to_csv(
            step_10x(),
            STEP_DURATION_S,
            [
                f"Synthetic: {STEP_NOMINAL_MBPS:g} Mbit/s, a {STEP_FACTOR:g}x drop at t = {STEP_AT_S:g} s "
                f"for {STEP_FOR_S:g} s, back up.",
                regen,
            ],
        ),
        "steps_staircase.csv": to_csv(
            steps_staircase(),
            len(STAIRCASE_MBPS) * STAIRCASE_STEP_S,
            [
                f"Synthetic staircase: {STAIRCASE_STEP_S:g} s per level, "
                + ", ".join(f"{v:g}" for v in STAIRCASE_MBPS)
                + " Mbit/s.",
                regen,
            ],
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out", type=Path, default=OUT_DIR, help="folder to write (default: %(default)s)"
    )
    ap.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = ap.parse_args(argv)
    stale = []
    for name, text in build().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(
            f"out of date (run python scripts/make_traces.py): {', '.join(stale)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
