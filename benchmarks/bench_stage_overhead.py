"""Is a one-stage split as fast as the eager model? (the runtime depends on it)

For each model: the eager module, the whole model as one stage (``split(graph, [])``), and the
same model captured with torch.export run as one stage, timed at batch 1 with one intra-op
thread. Each variant is warmed up, then timed in ``ROUNDS`` rounds of ``REPS`` calls; the
variants are interleaved round by round so background load on the shared machine hits them
alike. Reported: median seconds per call and the stage/eager ratio.

    .venv/bin/python benchmarks/bench_stage_overhead.py [--models resnet50,vgg16] [--rounds 7]

Writes benchmarks/results/stage_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from coinfer.graph import capture, split
from coinfer.zoo import load_model

# Calls per timed round; a median over rounds discards rounds disturbed by other processes.
REPS = 3
WARMUP = 2
RESULTS = Path(__file__).parent / "results" / "stage_overhead.json"


def _time(fn, inputs, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn(*inputs)
    return (time.perf_counter() - start) / reps


def bench(spec: str, rounds: int) -> dict:
    model, inputs = load_model(spec)
    variants = {"eager": model}
    variants["stage_fx"] = split(capture(model, inputs, name=spec, backend="fx"), [])[0]
    variants["stage_export"] = split(capture(model, inputs, name=spec, backend="export"), [])[0]
    samples: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for fn in variants.values():
            _time(fn, inputs, WARMUP)
        for _ in range(rounds):
            for name, fn in variants.items():
                samples[name].append(_time(fn, inputs, REPS))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "model": spec,
        "input_shape": list(inputs[0].shape),
        "median_s": med,
        "samples_s": samples,
        "ratio_stage_fx_over_eager": med["stage_fx"] / med["eager"],
        "ratio_stage_export_over_eager": med["stage_export"] / med["eager"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,vgg16")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for spec in args.models.split(","):
        r = bench(spec, args.rounds)
        results.append(r)
        m = r["median_s"]
        print(
            f"{spec:10s} eager {m['eager'] * 1e3:7.1f} ms  stage(fx) {m['stage_fx'] * 1e3:7.1f} ms "
            f"({r['ratio_stage_fx_over_eager']:.3f}x)  stage(export) {m['stage_export'] * 1e3:7.1f} ms "
            f"({r['ratio_stage_export_over_eager']:.3f}x)"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": 1,
                "reps_per_round": REPS,
                "rounds": args.rounds,
                "machine": platform.processor() or platform.machine(),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
