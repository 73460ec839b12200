"""Benchmark of ``coinfer generate`` (issue 13): GPT-2 small split over the 4-device testbed.

Measures, with real worker processes under the testbed's CPU quotas and emulated links
(medians of 5 runs; each run's tokens are checked against the unsplit model's greedy
``generate``):

- time to first token of a 512-token prompt, token-sliced (``auto``) vs one chunk, on the
  pipeline over all four devices (the memory split: each device holds layers);
- decode tokens/s of one sequence: capability vs memory-proportional vs even split;
- aggregate decode tokens/s of 8 sequences: the capability split vs the best single device;
- every figure beside the simulator's replay of the same plan (:mod:`coinfer.llm.simulate`;
  the memory-split 8-sequence run's timeline beside it in ``docs/img/llm_gantt.png``) and
  the cost model's prediction (costs profiled at the start of the run, the
  runtime's per-item overhead probed right after: :mod:`coinfer.llm.overhead`).

Writes ``benchmarks/results/llm.json`` and ``llm.md``. Run: ``nice -n 5 python
benchmarks/bench_llm.py`` (about 3 minutes on 2 cores). Host load is recorded, not controlled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_runtime_common import host_load

from coinfer.cli.run_cmds import _load_cluster
from coinfer.errors import InputError
from coinfer.llm.cost import prefill_makespan
from coinfer.llm.decoder import load_causal_lm
from coinfer.llm.overhead import with_measured_overhead
from coinfer.llm.planning import device_speed, measured_costs, plan_generation
from coinfer.llm.runner import generate_on, measured_events, reference_tokens, start_workers
from coinfer.llm.simulate import simulate_plan
from coinfer.llm.slices import choose_slices
from coinfer.report.plots import gantt_pair

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt2"
CLUSTER = ROOT / "examples" / "clusters" / "local_testbed.yaml"
OUT = ROOT / "benchmarks" / "results"
REPEATS = 5
TTFT_PROMPT, DECODE_PROMPT, NEW = 512, 64, 24
GANTT, GANTT_CASE = ROOT / "docs" / "img" / "llm_gantt.png", "memory x8"


def _ids(n: int, vocab: int) -> list[int]:
    return torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(n)).tolist()


def _runs(gen, ids, plan, new, ref, label):
    """REPEATS jobs on started workers; every sequence must match the reference."""
    out = []
    for _ in range(REPEATS):
        load, steal = os.getloadavg()[0], host_load()["steal_s"]
        res = generate_on(gen, ids, plan, new)
        stolen = host_load()["steal_s"] - steal if steal is not None else None
        same = all(row == ref for t in res.tokens for row in t.tolist())
        out.append({"ttft_s": res.ttft_s, "tokens_per_s": res.decode_tokens_per_s,
                    "identical": same, "load1": load, "steal_s": stolen})  # fmt: skip
        print(f"  {label}: ttft {res.ttft_s:.3f} s, {res.decode_tokens_per_s or 0:.1f} tok/s, "
              f"identical {same}, load {load:.2f}, steal {stolen}", flush=True)  # fmt: skip
    return out, res


def _single_plans(parts, cl, costs, kw):
    """8 sequences on each device alone (those the model and its KV cache fit)."""
    out = []
    for d in cl.device_names:
        try:
            out.append(plan_generation(parts, cl, costs, sequences=8, devices=[d], **kw))
        except InputError:
            continue
    return out


def _partitions(n: int, most: int | None = None):
    """Every way to write ``n`` as a sum of positive parts (non-increasing)."""
    most = n if most is None else most
    if n == 0:
        yield ()
        return
    for first in range(min(n, most), 0, -1):
        for rest in _partitions(n - first, first):
            yield (first, *rest)


def pipeline_bound(costs, n_layers: int, speeds, sequences: int, context: int) -> float:
    """An upper bound, from the cost model's own measured coefficients, on the decode rate of
    ``sequences`` sequences on *any* multi-device arrangement over the best single device's.

    A single group crossing several devices is never faster than the fastest device alone (its
    trip adds the slower devices' times). Two or more groups — pipeline micro-batches or
    replicas — must each run every layer and the head, so a round costs at least
    ``min over partitions of Σ step(b)`` reference-seconds, while the devices supply at most
    ``Σ speeds`` of them per second; the best device runs all sequences as one batch."""

    def step(b: int) -> float:
        return n_layers * costs.decode_s(context, b) + costs.embed_s(b) + costs.head_s(b)

    least = min(sum(step(b) for b in part) for part in _partitions(sequences) if len(part) > 1)
    single = max(speeds) / step(sequences)
    return max(1.0, (sum(speeds) / least) / single)


def _simulated(plan, costs, parts, prompt, new, key):
    sim = simulate_plan(plan, costs, prompt, new, kv_bytes=parts.kv_bytes_per_token_layer)
    return (sim.ttft_s if key == "ttft_s" else sim.decode_tokens_per_s), sim


def _row(name, plan, runs, key, predicted, simulated):
    med = statistics.median(r[key] for r in runs)
    return {"simulated": simulated, "sim_error": simulated / med - 1,
        "case": name, "devices": list(plan.devices), "layer_counts": list(plan.layer_counts),
        "slices": len(plan.slices), "sequences": sum(plan.group_sizes),
        "microbatches": list(plan.group_sizes), "metric": key,
        "measured": med, "predicted": predicted, "error": predicted / med - 1,
        "identical": all(r["identical"] for r in runs), "runs": runs,
    }  # fmt: skip


def main() -> int:
    torch.set_num_threads(1)
    cl = _load_cluster(str(CLUSTER))
    parts = load_causal_lm(MODEL)
    t0 = time.perf_counter()
    costs = measured_costs(MODEL, parts, refresh=True)
    print(f"profiled {MODEL} in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    costs, probe = with_measured_overhead(MODEL, parts, costs, cl, refresh=True)
    scales = probe.speed_scales
    print(f"per-item overhead {costs.item_overhead_s * 1e3:.2f} ms, device scales "
          f"{ {d: round(x, 2) for d, x in scales.items()} } in {time.perf_counter() - t0:.1f} s",
          flush=True)  # fmt: skip
    long_ids, short_ids = _ids(TTFT_PROMPT, parts.vocab), _ids(DECODE_PROMPT, parts.vocab)
    ref_long = reference_tokens(parts, torch.tensor([long_ids]), 1)[0].tolist()
    ref_short = reference_tokens(parts, torch.tensor([short_ids]), NEW)[0].tolist()
    kw = {"prompt_tokens": DECODE_PROMPT, "new_tokens": NEW, "speed_scales": scales}
    plans = {
        "capability x8": plan_generation(parts, cl, costs, sequences=8, **kw),
        "memory x8": plan_generation(parts, cl, costs, algo="memory", sequences=8, **kw),
        "best single device x8": max(
            _single_plans(parts, cl, costs, kw), key=lambda p: p.predicted_tokens_per_s
        ),
        "capability x1": plan_generation(parts, cl, costs, **kw),
        "memory x1": plan_generation(parts, cl, costs, algo="memory", **kw),
        "even x1": plan_generation(parts, cl, costs, algo="even", **kw),
    }
    # time to first token of one 512-token sequence on the pipeline over all four devices
    # (the memory split: every device holds layers); slicing is independent of the split
    pipe = plan_generation(
        parts, cl, costs, algo="memory", prompt_tokens=TTFT_PROMPT, new_tokens=1,
        speed_scales=scales,
    )  # fmt: skip
    ttft_plans = {}
    for label, sl in (("one chunk", [TTFT_PROMPT]), ("sliced (auto)", None)):
        if sl is None:
            links = list(pipe.links)
            choice = choose_slices(TTFT_PROMPT, pipe.layer_counts, pipe.speeds, costs, links)
            sl = list(choice.sizes)
        pred = prefill_makespan(sl, pipe.layer_counts, pipe.speeds, costs, list(pipe.links))
        ttft_plans[label] = dataclasses.replace(
            pipe, group_sizes=(1,), slices=tuple(sl), predicted_ttft_s=pred
        )
    rows = []
    done: dict[tuple, object] = {}
    groups = [("capability x8", ["capability x8"]),
              ("capability x1", ["capability x1", "best single device x8"]),
              ("memory x1", ["ttft", "memory x1", "memory x8"]),
              ("even x1", ["even x1"])]  # fmt: skip
    for key, cases in groups:
        plan = plans[key]
        print(f"{key}: {dict(zip(plan.devices, plan.layer_counts, strict=True))}", flush=True)
        with start_workers(MODEL, plan, cl, timeout_s=600) as gen:
            for case in cases:
                if case == "ttft":
                    for label, tp in ttft_plans.items():
                        runs, _ = _runs(gen, long_ids, tp, 1, ref_long, f"TTFT {label}")
                        sim, _ = _simulated(tp, costs, parts, TTFT_PROMPT, 1, "ttft_s")
                        rows.append(
                            _row(f"TTFT 512, {label}", tp, runs, "ttft_s", tp.predicted_ttft_s, sim)
                        )
                    continue
                p = plans[case]
                if (p.devices, p.layer_counts) != (plan.devices, plan.layer_counts):
                    continue  # the best single device is not the 1-sequence split: own workers
                runs, last = _runs(gen, short_ids, p, NEW, ref_short, case)
                value, sim = _simulated(p, costs, parts, DECODE_PROMPT, NEW, "tokens_per_s")
                rows.append(
                    _row(
                        f"decode, {case}", p, runs, "tokens_per_s", p.predicted_tokens_per_s, value
                    )
                )
                if case == GANTT_CASE:  # the last run's timeline beside the simulated one
                    gantt_pair(
                        [(f"measured: {case}, {DECODE_PROMPT}-token prompt, {NEW} new tokens",
                          measured_events(p, last, NEW)),
                         ("simulated (same costs, same item order)", sim.events)],
                        GANTT, devices=p.devices,
                    )  # fmt: skip
                done[case] = True
    single = plans["best single device x8"]
    if "best single device x8" not in done:
        with start_workers(MODEL, single, cl, timeout_s=600) as gen:
            runs, _ = _runs(gen, short_ids, single, NEW, ref_short, "best single device x8")
            value, _ = _simulated(single, costs, parts, DECODE_PROMPT, NEW, "tokens_per_s")
            rows.append(_row("decode, best single device x8", single, runs, "tokens_per_s",
                             single.predicted_tokens_per_s, value))  # fmt: skip
    by = {r["case"]: r["measured"] for r in rows}
    speeds = [device_speed(cl.device(d)) / scales.get(d, 1.0) for d in cl.device_names]
    bound = pipeline_bound(costs, parts.n_layers, speeds, 8, DECODE_PROMPT + NEW // 2)
    targets = {
        "TTFT sliced / one chunk <= 0.7": by["TTFT 512, sliced (auto)"] / by["TTFT 512, one chunk"],
        "1 seq capability / memory >= 1.3": by["decode, capability x1"] / by["decode, memory x1"],
        "8 seq pipeline / best single device >= 1.5": by["decode, capability x8"]
        / by["decode, best single device x8"],
        "8 seq memory-split pipeline / best single device": by["decode, memory x8"]
        / by["decode, best single device x8"],
        "bound on any multi-device arrangement / best single device (cost model)": bound,
        "max |predicted / measured - 1| <= 0.15": max(abs(r["error"]) for r in rows),
        "max |simulated / measured - 1| <= 0.15": max(abs(r["sim_error"]) for r in rows),
        "tokens identical in every run": all(r["identical"] for r in rows),
    }
    doc = {"model": MODEL, "cluster": str(CLUSTER.relative_to(ROOT)), "repeats": REPEATS,
           "cpus": os.cpu_count(), "load_end": os.getloadavg(), "costs": dataclasses.asdict(costs),
           "overhead_probe": probe.to_dict(), "speed_scales": scales,
           "rows": rows, "targets": targets}  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "llm.json").write_text(json.dumps(doc, indent=2))
    (OUT / "llm.md").write_text(_markdown(doc))
    print(_markdown(doc))
    return 0


def _markdown(doc: dict) -> str:
    lines = [
        f"# coinfer generate: {doc['model']} on {doc['cluster']} (medians of {doc['repeats']})",
        "",
        "| case | split (layers) | chunks | micro-batches | metric | measured | predicted | error | simulated | error | same tokens | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        split = ", ".join(f"{d}:{n}" for d, n in zip(r["devices"], r["layer_counts"], strict=True))
        load = statistics.median(x["load1"] for x in r["runs"])
        lines.append(
            f"| {r['case']} | {split} | {r['slices']} | {r['microbatches']} | {r['metric']} | "
            f"{r['measured']:.3f} | {r['predicted']:.3f} | {r['error'] * 100:+.0f} % | "
            f"{r['simulated']:.3f} | {r['sim_error'] * 100:+.0f} % | "
            f"{'yes' if r['identical'] else 'NO'} | {load:.2f} |"
        )
    lines += ["", "| target | value |", "|---|---|"]
    for k, v in doc["targets"].items():
        lines.append(f"| {k} | {v if isinstance(v, bool) else f'{v:.3f}'} |")
    lines += ["", f"{doc['cpus']} CPUs, shared with other work; load average at the end: "
              f"{', '.join(f'{x:.2f}' for x in doc['load_end'])}.", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
