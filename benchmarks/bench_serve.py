"""Serving under open-loop load: ``coinfer serve`` with and without scaling, three arrival traces.

For ResNet-18 on the local testbed (``examples/clusters/local_testbed.yaml``, calibrated first
with ``coinfer calibrate`` as ``bench_adapt.py`` does, unless ``--no-calibrate``), each arrival
trace (``benchmarks/loadgen.py`` plays it; :mod:`coinfer.simulate.arrivals` draws it) is played
against two servers, each started fresh as a subprocess in its own process group on a free
loopback port and stopped with SIGINT afterwards:

- **static**: ``--scaling off --algo dp --objective latency``, the dp plan for latency (what a
  latency-SLO server runs; on the testbed it is ResNet-18 on d0 alone, leaving d1-d3 idle);
- **scaled**: ``--scaling on``, the same plan, scaled out and in by the server (Quart);
- **static_tp** (reference, not in the targets): ``--scaling off --objective throughput``, the
  dp plan for throughput, which pipelines over all four devices all the time.

Every server runs micro-batch 1 (``--microbatch``) and a queue of ``--queue-limit`` 64 samples:
at larger micro-batches the off periods' lone requests go out padded, each costing a full
micro-batch of compute (measured: at micro-batch 4 a burst's first second went out as 16 padded
micro-batches, 36 of 64 slots empty).

The rates are relative to the static plan's measured capacity ``C``: first a short closed loop
against a static server (enough concurrent clients to keep the pipeline and the batcher full)
measures its saturated throughput, and one client at a time its unloaded latency. Then, over
``--duration`` ``D`` seconds:

- **poisson**: steady at 0.7 C — below capacity: both modes should meet the SLO; scaling has
  nothing to fix (and must not make things worse);
- **bursty**: on at 1.6 C for D/6, off at 0.3 C for D/3, twice in D (mean 0.73 C) — the bursts
  overfill a static plan (queueing, then 429s), and last long enough for a scale-out (the
  scaler looks at 2 s of demand) to pay off; the off periods are long enough (> the policy's
  10 s hold) for a scale-in before the next burst;
- **diurnal**: sinusoidal from 0.2 C up to 1.3 C at D/2 and back (one period in D; mean
  0.75 C) — a slow ramp above capacity and down again.

The SLO (goodput: requests answered within it) is ``--slo-ms``, by default 4 x the unloaded
median latency (a request may queue behind three others' worth of pipeline time), rounded up
to 100 ms; the servers get the same ``--slo-ms``. Each run uses its own seed (run index), the
same for both modes, so the two modes face the very same arrival times.

Per run: the loadgen summary (sent, completed, rejected, failed, timeouts, mean / p50 / p99
latency, goodput, throughput), ``lost`` (sent - completed - rejected - failed: what got no
answer; must be 0), the scaling events (``GET /v1/plan``'s ``scaling.events`` just before the
stop, falling back to the ``coinfer_scaling_events_total`` counter) with their decision ->
serving times, the ``/metrics`` time series, whether the server exited cleanly with no process
left, and the host load before and after. The table has medians of the runs and the ratios
scaled / static. When the server refuses ``--scaling on`` (not built yet) those rows say
"scaling unavailable" instead of failing the benchmark.

Results: ``benchmarks/results/serve.json`` (after every run) and ``serve.md``; ``--quick`` (one
trace, one run, 15 s, no calibration) writes ``serve_quick.*``.

    python benchmarks/bench_serve.py                          # 3 traces x 2 modes x 3 runs
    python benchmarks/bench_serve.py --quick --modes static   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import loadgen
from bench_runtime_common import RESULTS, ROOT, host_load

from coinfer.runtime.processes import descendants
from coinfer.runtime.processes import running as _alive
from coinfer.simulate.arrivals import ArrivalTrace, make_trace

MODEL = "resnet18"
CLUSTER = ROOT / "examples" / "clusters" / "local_testbed.yaml"
# mode -> (--scaling, --objective override)
MODES = {"static": ("off", None), "scaled": ("on", None), "static_tp": ("off", "throughput")}
TRACES = ("poisson", "bursty", "diurnal")
# Bounds (seconds): a server's start (capture, profile, plan, fork the workers on 2 shared
# cores), its shutdown (drain a full queue, stop every worker), a calibration.
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 90.0
CALIBRATE_TIMEOUT_S = 900.0
# Pause between runs: the previous workers' exit and page cache settle before the next start.
PAUSE_S = 3.0
SCALE_OUT_TARGET_S = 2.0


class StartError(Exception):
    """A server that did not come up; ``unavailable`` when it refused the scaling option."""

    def __init__(self, message: str, unavailable: bool = False):
        super().__init__(message)
        self.unavailable = unavailable


# --- the server subprocess -----------------------------------------------------------------


@dataclass
class Server:
    """A ``coinfer serve`` subprocess (its own process group) and where its output goes."""

    proc: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def serve_command(
    cluster: Path, mode: str, slo_ms: float | None, args: argparse.Namespace
) -> list[str]:
    scaling, objective = MODES[mode]
    cmd = [sys.executable, "-m", "coinfer", "serve", MODEL, "--cluster", str(cluster),
           "--algo", "dp", "--objective", objective or args.objective, "--port", "0",
           "--scaling", scaling, "--queue-limit", str(args.queue_limit)]  # fmt: skip
    microbatch = args.microbatch
    if slo_ms is not None:
        cmd += ["--slo-ms", f"{slo_ms:g}"]
    if microbatch is not None:
        cmd += ["--microbatch", str(microbatch)]
    return cmd


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.lower().startswith("error")]
    return (errs or lines or ["(no output)"])[-1][:300]


def start_server(cmd: Sequence[str], workdir: Path, tag: str) -> Server:
    """Start ``cmd`` in a new session (its own process group: a stop signal reaches it and
    nothing of ours), wait for the URL it prints and for ``/healthz``; :class:`StartError`
    (``unavailable`` if it refused the scaling option) when it exits or times out first."""
    out, err = workdir / f"{tag}.stdout", workdir / f"{tag}.stderr"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            list(cmd), stdout=fo, stderr=fe, start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    server = Server(proc, "", out, err)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not server.url and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"serving \S+ on (http://\S+) ", out.read_text(errors="replace"))
            server.url = m.group(1) if m else ""
            if not server.url:
                time.sleep(0.2)
        if server.url and _healthy(server.url, deadline):
            return server
    except BaseException:  # Ctrl-C while waiting: the server is in its own session, stop it
        stop_server(server)
        raise
    exited = proc.poll() is not None
    stop_server(server)
    why = _last_error_line(server.output())
    if not exited:
        why = f"no URL and health within {START_TIMEOUT_S:g} s (last: {why})"
    # the CLI refuses an option it cannot honour with one "error: --scaling ..." line
    raise StartError(why, unavailable=exited and "scaling" in why.lower())


def _healthy(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _kill(pids: Sequence[int]) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def stop_server(server: Server) -> dict[str, Any]:
    """SIGINT to the server's group (a clean shutdown: in-flight requests finish, workers
    stop), bounded by :data:`STOP_TIMEOUT_S`; then SIGKILL whatever of ours is left. Returns
    the exit code, whether it was clean, and the processes that had to be killed."""
    proc = server.proc
    below = descendants(proc.pid)
    t0 = time.monotonic()
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = sorted(p for p in below if _alive(p))
    _kill(left)
    text = server.stdout.read_text(errors="replace")
    m = re.search(r"stopped \((\w+)\): (\d+) micro-batches completed, (\d+) lost", text)
    return {
        "exit_code": proc.returncode,
        "stop_s": time.monotonic() - t0,
        "stopped_line": bool(m),
        "server_lost_microbatches": int(m.group(3)) if m else None,
        "left_behind": left,
        "clean": proc.returncode == 0 and bool(m) and not left,
    }


# --- capacity and traces ---------------------------------------------------------------------


def calibrate(cluster: Path, out: Path) -> Path:
    """``coinfer calibrate`` the cluster with ResNet-18 (as bench_adapt does in-process): the
    planner then plans on measured device and link figures."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "coinfer", "calibrate", "--cluster", str(cluster),
         "--model", MODEL, "--requests", "24", "--out", str(out)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True,
    )  # fmt: skip
    try:
        code = proc.wait(CALIBRATE_TIMEOUT_S)
    except BaseException:  # timed out or interrupted: its workers are ours to stop
        _kill(sorted(descendants(proc.pid)))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise
    if code != 0:
        raise RuntimeError(f"coinfer calibrate exited {code}")
    return out


def measure_capacity(
    cluster: Path, args: argparse.Namespace, workdir: Path, sat_s: float, unloaded_s: float
) -> dict[str, Any]:
    """The static plan's saturated throughput (closed loop, enough clients to fill the pipeline
    and the batcher: 2 x window + 2 micro-batches, within the queue) and unloaded latency."""
    server = start_server(serve_command(cluster, "static", None, args), workdir, "cap")
    try:
        plan = httpx.get(f"{server.url}/v1/plan", timeout=10).json()
        mb, window = plan["microbatch"], plan["window"]
        conc = min(plan["queue_capacity_samples"], (2 * window + 2) * mb)
        one = loadgen.closed_loop(server.url, concurrency=1, duration_s=unloaded_s,
                                  warmup_s=min(2.0, unloaded_s / 2))  # fmt: skip
        sat = loadgen.closed_loop(server.url, concurrency=conc, duration_s=sat_s,
                                  warmup_s=sat_s / 3)  # fmt: skip
    finally:
        exit_ = stop_server(server)
    return {
        "plan": plan["plan"],
        "microbatch": mb,
        "window": window,
        "queue_capacity_samples": plan["queue_capacity_samples"],
        "saturated": sat,
        "unloaded": one,
        "capacity_rps": sat["throughput_rps"],
        "unloaded_p50_s": one["latency_p50_s"],
        "server_exit": exit_,
    }


def trace_specs(capacity: float, duration: float, seed: int) -> dict[str, str]:
    """The three traces at rates relative to ``capacity`` (see the module docstring)."""
    c, d = capacity, duration

    def r(x: float) -> str:
        return f"{x:.3f}".rstrip("0").rstrip(".")

    return {
        "poisson": f"poisson:rate={r(0.7 * c)},duration={r(d)},seed={seed}",
        "bursty": f"bursty:on={r(1.6 * c)},off={r(0.3 * c)},on_s={r(d / 6)},off_s={r(d / 3)},"
        f"duration={r(d)},seed={seed}",
        "diurnal": f"diurnal:min={r(0.2 * c)},max={r(1.3 * c)},period={r(d)},duration={r(d)},"
        f"seed={seed}",
    }


def default_slo_ms(unloaded_p50_s: float) -> float:
    """4 x the unloaded median latency, rounded up to 100 ms."""
    return 100.0 * math.ceil(4 * unloaded_p50_s * 1e3 / 100.0)


# --- one run ---------------------------------------------------------------------------------


def scaling_events(
    plan_doc: dict[str, Any] | None, series: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The server's scaling events: ``/v1/plan``'s ``scaling.events`` when it reports them,
    else the counts of ``coinfer_scaling_events_total`` at the last scrape (no times)."""
    sc = (plan_doc or {}).get("scaling")
    if isinstance(sc, dict) and isinstance(sc.get("events"), list):
        evs = sc["events"]
        outs = [e for e in evs if e.get("kind") == "scale_out"]
        return {
            "source": "v1/plan",
            "scale_out": len(outs),
            "scale_in": sum(1 for e in evs if e.get("kind") == "scale_in"),
            "decision_to_serving_s": [e.get("decision_to_serving_s") for e in outs],
            # decided but never took requests (the hand-over failed or the run ended first)
            "never_served": sum(1 for e in outs if e.get("decision_to_serving_s") is None),
            "events": evs,
        }
    last = next((m["metrics"] for m in reversed(series) if "metrics" in m), {})
    outs = last.get("coinfer_scaling_events_total{kind=scale_out}")
    return {
        "source": "metrics" if outs is not None else None,
        "scale_out": None if outs is None else int(outs),
        "scale_in": _int(last.get("coinfer_scaling_events_total{kind=scale_in}")),
        "decision_to_serving_s": [],
        "never_served": None,
        "events": [],
    }


def _int(x: float | None) -> int | None:
    return None if x is None else int(x)


def server_counts(series: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The server's own request counters at the last scrape (cross-check of the client's)."""
    last = next((m["metrics"] for m in reversed(series) if "metrics" in m), {})
    return {k: v for k, v in last.items() if k.startswith("coinfer_requests")}


def one_run(
    cluster: Path, mode: str, trace: ArrivalTrace, slo_ms: float, args: argparse.Namespace,
    workdir: Path, tag: str,
) -> dict[str, Any]:  # fmt: skip
    """Start a server in ``mode``, play ``trace`` at it, read its scaling events, stop it."""
    row: dict[str, Any] = {"mode": mode, "trace": trace.name, "spec": trace.spec}
    row["load_before"] = host_load()
    try:
        server = start_server(serve_command(cluster, mode, slo_ms, args), workdir, tag)
    except StartError as exc:
        row.update(status="unavailable" if exc.unavailable else "error", reason=str(exc))
        row["load_after"] = host_load()
        return row
    failure = None
    try:
        res = loadgen.run_load(server.url, trace, slo_s=slo_ms / 1e3, grace_s=args.grace_s,
                               max_requests=args.max_requests)  # fmt: skip
        final_plan = httpx.get(f"{server.url}/v1/plan", timeout=10).json()
    except Exception as exc:  # the server died under load: a row that says so, then go on
        failure = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        row["server_exit"] = stop_server(server)
    row["load_after"] = host_load()
    if failure is not None:
        row.update(status="error", reason=failure, server_output=server.output()[-2000:])
        return row
    row["status"] = "ok"
    row["summary"] = res.summary()
    row["scaling"] = scaling_events(final_plan, res.metrics)
    row["server_counts"] = server_counts(res.metrics)
    row["final_plan"] = (final_plan or {}).get("plan")
    row["batch_wait_s"] = (final_plan or {}).get("batch_wait_s")
    row["metrics"] = res.metrics
    row["records"] = [r.to_dict() for r in res.records]
    return row


# --- the simulator's replay ----------------------------------------------------------------


def sim_setup(cluster: Path, args: argparse.Namespace, cap: dict[str, Any]) -> dict[str, Any]:
    """The instance and plans the servers use (same cluster file, same planner), and the
    per-request overhead the simulator adds: the measured unloaded latency minus the plan's
    predicted latency (HTTP handling, encoding, the session's hops to the source)."""
    from coinfer import plan as plan_mod
    from coinfer.cli.run_cmds import _build_instance, _load_cluster
    from coinfer.core.evaluate import latency_s

    inst = _build_instance(MODEL, _load_cluster(str(cluster)), None, "graph", None)
    plans = {m: plan_mod.plan(inst, "dp", MODES[m][1] or args.objective) for m in MODES}
    overhead = max(0.0, cap["unloaded_p50_s"] - latency_s(inst, plans["static"].stages))
    return {"instance": inst, "plans": plans, "overhead_s": overhead}


def simulate_row(
    sim: dict[str, Any], row: dict[str, Any], trace: ArrivalTrace, slo_ms: float,
    args: argparse.Namespace, handover_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Replay one run's trace in the serving simulator with the run's mode (the scaled mode
    with the server's scaling policy and ``handover_s`` decision-to-serving delay)."""
    from coinfer.core.scaling import ScalingPolicy
    from coinfer.simulate.serving import ServeSimConfig, simulate_serving

    cfg = ServeSimConfig(
        microbatch=args.microbatch, queue_samples=args.queue_limit,
        batch_wait_s=row.get("batch_wait_s") or 0.0, slo_s=slo_ms / 1e3,
        handover_s=handover_s, overhead_s=sim["overhead_s"],
    )  # fmt: skip
    policy = ScalingPolicy() if MODES[row["mode"]][0] == "on" else None
    res = simulate_serving(sim["instance"], sim["plans"][row["mode"]], trace.times, cfg, policy)
    lat = res.latencies_s
    good = sum(1 for x in lat if x <= slo_ms / 1e3)
    return {
        "completed": len(lat),
        "rejected": len(trace.times) - len(lat),
        "latency_mean_s": statistics.fmean(lat) if lat else None,
        "latency_p99_s": res.summary()["p99_s"] if lat else None,
        "goodput_rps": good / trace.duration_s if trace.duration_s > 0 else None,
        "scale_outs": sum(1 for e in res.events if e["kind"] == "scale_out"),
        "scale_ins": sum(1 for e in res.events if e["kind"] == "scale_in"),
        "handover_s": handover_s,
        "overhead_s": sim["overhead_s"],
    }


# --- aggregation and the table -------------------------------------------------------------


def _med(xs: Sequence[float | None]) -> float | None:
    ok = [x for x in xs if x is not None]
    return statistics.median(ok) if ok else None


def devices_held(series: Sequence[dict[str, Any]]) -> float | None:
    """Mean number of devices the plan held over the run: the sum of
    ``coinfer_stage_replicas`` at each once-a-second scrape (Quart's point is to hold extra
    devices only while a burst needs them)."""
    counts = [
        sum(v for k, v in m["metrics"].items() if k.startswith("coinfer_stage_replicas{"))
        for m in series
        if "metrics" in m
    ]
    counts = [c for c in counts if c > 0]
    return statistics.fmean(counts) if counts else None


def aggregate(rows: Sequence[dict[str, Any]], trace: str, mode: str) -> dict[str, Any]:
    """Medians over the ok runs of one (trace, mode); lost and rejected summed too."""
    mine = [r for r in rows if r["trace"] == trace and r["mode"] == mode]
    ok = [r for r in mine if r["status"] == "ok"]
    if not ok:
        reason = mine[0].get("reason") if mine else None
        status = mine[0]["status"] if mine else "not run"
        return {"runs": 0, "status": status, "reason": reason}

    def med(key: str) -> float | None:
        return _med([r["summary"][key] for r in ok])

    took = [t for r in ok for t in r["scaling"]["decision_to_serving_s"] if t is not None]
    outs = [r["scaling"]["scale_out"] for r in ok]
    return {
        "runs": len(ok),
        "status": "ok",
        "latency_mean_s": med("latency_mean_s"),
        "latency_p50_s": med("latency_p50_s"),
        "latency_p99_s": med("latency_p99_s"),
        "goodput_rps": med("goodput_rps"),
        "throughput_rps": med("throughput_rps"),
        "sent": med("sent"),
        "rejected": med("rejected"),
        "lost_total": sum(r["summary"]["lost"] for r in ok),
        "scale_outs": _med(outs),
        "decision_to_serving_s": took,
        "decision_to_serving_max_s": max(took) if took else None,
        "never_served": sum(r["scaling"].get("never_served") or 0 for r in ok),
        "clean_exits": sum(1 for r in ok if r["server_exit"]["clean"]),
        "devices_held": _med([devices_held(r.get("metrics") or []) for r in ok]),
        "sim_goodput_rps": _med([(r.get("simulated") or {}).get("goodput_rps") for r in ok]),
        "sim_latency_mean_s": _med([(r.get("simulated") or {}).get("latency_mean_s") for r in ok]),
        "load_1m": [(r["load_before"]["loadavg_1m"], r["load_after"]["loadavg_1m"]) for r in ok],
    }


def ratios(static: dict[str, Any], scaled: dict[str, Any]) -> dict[str, float | None]:
    """scaled / static of the headline figures (targets: mean latency <= 0.5, goodput >= 1.5)."""

    def div(key: str) -> float | None:
        a, b = scaled.get(key), static.get(key)
        return a / b if a is not None and b else None

    return {"latency_mean": div("latency_mean_s"), "goodput": div("goodput_rps"),
            "latency_p99": div("latency_p99_s")}  # fmt: skip


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}"


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(doc: dict[str, Any]) -> str:
    cap = doc["capacity"]
    out = [
        "# Serving under open-loop load (`bench_serve.py`)",
        "",
        f"`{MODEL}` on `{doc['cluster']}`{' (calibrated)' if doc['calibrated'] else ''}; "
        f"static plan `{_plan_str(cap.get('plan'))}`, micro-batch {cap.get('microbatch')}, "
        f"queue {cap.get('queue_capacity_samples')} samples.",
        f"Capacity C (closed loop, {cap['saturated']['concurrency']} clients): "
        f"**{cap['capacity_rps']:.2f} req/s** (p50 {_ms(cap['saturated']['latency_p50_s'])} ms "
        f"at saturation); unloaded p50 {_ms(cap['unloaded_p50_s'])} ms; "
        f"SLO {doc['slo_ms']:g} ms. Traces (run 0's seeds; run i uses seed i):",
        "",
        *[f"- `{spec}`" for spec in doc["specs"].values()],
        "",
        f"Medians of {doc['runs']} run(s); latency from arrival to answer, ms; goodput = "
        "answered within the SLO per second of the trace's duration (so scaled / static is "
        "a ratio of counts); throughput = answers per second from the first send to the last "
        "answer; lost = sent - completed - rejected - failed (summed over runs).",
        "",
        "| trace | mode | mean | p50 | p99 | goodput/s | throughput/s | rejected | lost | "
        "devices held | scale-outs | decision→serving s | clean exits | load 1m before→after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for trace in doc["traces"]:
        for mode in doc["modes"]:
            a = doc["aggregate"][trace][mode]
            if a["status"] != "ok":
                label = "scaling unavailable" if a["status"] == "unavailable" else a["status"]
                out.append(f"| {trace} | {mode} | {label}: {a.get('reason') or ''} |" + " |" * 11)
                continue
            took = ", ".join(f"{t:.2f}" for t in a["decision_to_serving_s"]) or "-"
            if a["never_served"]:
                took += f" ({a['never_served']} never served)"
            loads = ", ".join(f"{x:.1f}→{y:.1f}" for x, y in a["load_1m"])
            out.append(
                f"| {trace} | {mode} | {_ms(a['latency_mean_s'])} | {_ms(a['latency_p50_s'])} | "
                f"{_ms(a['latency_p99_s'])} | {_f(a['goodput_rps'])} | {_f(a['throughput_rps'])} | "
                f"{_f(a['rejected'], 0)} | {a['lost_total']} | {_f(a.get('devices_held'), 2)} | "
                f"{_f(a['scale_outs'], 0)} | "
                f"{took} | {a['clean_exits']}/{a['runs']} | "
                f"{loads} |"
            )
    if "static" in doc["modes"] and "scaled" in doc["modes"]:
        out += ["", "Scaled / static (targets: mean latency ≤ 0.5, goodput ≥ 1.5; every "
                f"decision→serving < {SCALE_OUT_TARGET_S:g} s; 0 lost):", "",
                "| trace | mean latency | p99 latency | goodput | max decision→serving s |",
                "|---|---|---|---|---|"]  # fmt: skip
        for trace in doc["traces"]:
            rr = doc["ratios"].get(trace) or {}
            worst = doc["aggregate"][trace]["scaled"].get("decision_to_serving_max_s")
            out.append(f"| {trace} | {_f(rr.get('latency_mean'))} | {_f(rr.get('latency_p99'))} | "
                       f"{_f(rr.get('goodput'))} | {_f(worst)} |")  # fmt: skip
    if any(doc["aggregate"][t][m].get("sim_goodput_rps") is not None
           for t in doc["traces"] for m in doc["modes"]):  # fmt: skip
        out += ["", "The serving simulator replaying each run (same trace, plan, queue, policy; "
                "target: goodput within 15 %):", "",
                "| trace | mode | goodput/s measured | simulated | error | mean ms measured | "
                "simulated |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for trace in doc["traces"]:
            for mode in doc["modes"]:
                a = doc["aggregate"][trace][mode]
                g, sg = a.get("goodput_rps"), a.get("sim_goodput_rps")
                err = f"{(sg - g) / g * 100:+.1f} %" if g and sg is not None else "-"
                out.append(f"| {trace} | {mode} | {_f(g)} | {_f(sg)} | {err} | "
                           f"{_ms(a.get('latency_mean_s'))} | "
                           f"{_ms(a.get('sim_latency_mean_s'))} |")  # fmt: skip
    start, end = doc["host_start"], doc.get("host_end") or {}
    at_end = _f(end.get("loadavg_1m"), 1)
    out += ["", f"Host: {start['cores']} cores; load (1 min) {start['loadavg_1m']:.1f} at the "
            f"start, {at_end} at the end."]  # fmt: skip
    return "\n".join(out) + "\n"


def _plan_str(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "?"
    return " | ".join(
        f"[{s['pieces'][0]}-{s['pieces'][1]}]->{','.join(s['devices'])}" for s in plan["stages"]
    )


# --- main ------------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Calibrate (optional), measure capacity, then every trace x mode x run."""
    doc: dict[str, Any] = {"model": MODEL, "cluster": str(Path(args.cluster).relative_to(ROOT))
                           if Path(args.cluster).is_relative_to(ROOT) else args.cluster,
                           "host_start": host_load(), "runs": args.runs,
                           "duration_s": args.duration, "modes": args.modes,
                           "traces": args.traces}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        workdir = Path(tmp)
        cluster = Path(args.cluster)
        doc["calibrated"] = args.calibrate
        if args.calibrate:
            print("calibrating the cluster ...", flush=True)
            cluster = calibrate(cluster, workdir / "calibrated.yaml")
            doc["calibrated_cluster"] = cluster.read_text()
        sat_s, one_s = (12.0, 5.0) if args.quick else (30.0, 10.0)
        print("measuring the static plan's capacity ...", flush=True)
        cap = measure_capacity(cluster, args, workdir, sat_s, one_s)
        if args.capacity is not None:
            cap["capacity_rps_measured"], cap["capacity_rps"] = cap["capacity_rps"], args.capacity
        doc["capacity"] = cap
        doc["slo_ms"] = args.slo_ms or default_slo_ms(cap["unloaded_p50_s"])
        print(f"  capacity {cap['capacity_rps']:.2f} req/s, unloaded p50 "
              f"{cap['unloaded_p50_s'] * 1e3:.0f} ms, SLO {doc['slo_ms']:g} ms", flush=True)  # fmt: skip
        doc["specs"] = {k: v for k, v in trace_specs(cap["capacity_rps"], args.duration, 0).items()
                        if k in args.traces}  # fmt: skip
        sim = sim_setup(cluster, args, cap) if args.simulate else None
        doc["rows"] = []
        for run in range(args.runs):
            specs = trace_specs(cap["capacity_rps"], args.duration, run)
            for name in args.traces:
                trace = make_trace(specs[name])
                for mode in args.modes:
                    time.sleep(PAUSE_S)
                    row = one_run(cluster, mode, trace, doc["slo_ms"], args, workdir,
                                  f"{name}-{mode}-{run}")  # fmt: skip
                    row["run"] = run
                    if sim is not None and row["status"] == "ok":
                        took = [t for t in row["scaling"]["decision_to_serving_s"] if t]
                        handover = statistics.median(took) if took else args.handover_s
                        row["simulated"] = simulate_row(sim, row, trace, doc["slo_ms"], args,
                                                        handover)  # fmt: skip
                    doc["rows"].append(row)
                    _say(row)
                    save(finish(doc))
    doc["host_end"] = host_load()
    return finish(doc)


def finish(doc: dict[str, Any]) -> dict[str, Any]:
    """Recompute the aggregate and the ratios from the rows so far."""
    rows = doc.get("rows", [])
    doc["aggregate"] = {t: {m: aggregate(rows, t, m) for m in doc["modes"]} for t in doc["traces"]}
    doc["ratios"] = {
        t: ratios(doc["aggregate"][t]["static"], doc["aggregate"][t]["scaled"])
        for t in doc["traces"]
        if "static" in doc["modes"] and "scaled" in doc["modes"]
    }
    return doc


def _say(row: dict[str, Any]) -> None:
    head = f"  {row['trace']} {row['mode']} run {row.get('run')}:"
    if row["status"] != "ok":
        print(f"{head} {row['status']}: {row.get('reason')}", flush=True)
        return
    s = row["summary"]
    print(f"{head} sent {s['sent']}, completed {s['completed']}, rejected {s['rejected']}, "
          f"lost {s['lost']}; mean {_ms(s['latency_mean_s'])} ms, p99 {_ms(s['latency_p99_s'])} ms, "
          f"goodput {_f(s['goodput_rps'])}/s; scale-outs {row['scaling']['scale_out']}; "
          f"clean exit {row['server_exit']['clean']}", flush=True)  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of each trace")
    ap.add_argument("--traces", default=",".join(TRACES), help="comma-separated subset")
    ap.add_argument("--modes", default="static,scaled", help="comma-separated subset")
    ap.add_argument("--cluster", default=str(CLUSTER))
    ap.add_argument("--no-calibrate", dest="calibrate", action="store_false")
    ap.add_argument("--capacity", type=float, default=None,
                    help="use this capacity (req/s) for the rates instead of the measured one")  # fmt: skip
    ap.add_argument("--slo-ms", type=float, default=None)
    ap.add_argument("--microbatch", type=int, default=1)
    ap.add_argument("--queue-limit", type=int, default=64)
    ap.add_argument("--objective", default="latency", help="the static and scaled plans' objective")
    ap.add_argument(
        "--handover-s",
        type=float,
        default=1.0,
        help="simulated decision-to-serving time when a run measured none",
    )
    ap.add_argument("--no-simulate", dest="simulate", action="store_false",
                    help="skip the serving simulator's replay of every run")  # fmt: skip
    ap.add_argument("--grace-s", type=float, default=loadgen.DEFAULT_GRACE_S)
    ap.add_argument("--max-requests", type=int, default=loadgen.DEFAULT_MAX_REQUESTS)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: bursty only, 1 run, 15 s, no calibration, serve_quick.*")  # fmt: skip
    ap.add_argument("--out", default=None, help="default results/serve.json (serve_quick.json)")
    ap.add_argument("--render", action="store_true", help="only redraw the .md from the .json")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.calibrate = 1, 15.0, False
        if args.traces == ",".join(TRACES):
            args.traces = "bursty"
    args.traces = [t for t in args.traces.split(",") if t]
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [t for t in args.traces if t not in TRACES] + [m for m in args.modes if m not in MODES]
    if bad or not args.traces or not args.modes:
        ap.error(f"unknown or empty --traces / --modes: {bad}")
    args.out = args.out or str(RESULTS / ("serve_quick.json" if args.quick else "serve.json"))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    md_path = Path(args.out).with_suffix(".md")
    if args.render:
        doc = finish(json.loads(Path(args.out).read_text()))
        md_path.write_text(markdown(doc))
        print(markdown(doc))
        return

    def save(doc: dict[str, Any]) -> None:
        Path(args.out).write_text(json.dumps(doc, indent=1))
        md_path.write_text(markdown(doc))

    doc = run_all(args, save)
    save(doc)
    print(markdown(doc))


if __name__ == "__main__":
    main()
