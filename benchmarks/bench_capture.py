"""How long does capture take, per zoo model and mode?

``meta``: model built on the meta device, fake-tensor capture (costing only: what FLOP tests and
``coinfer inspect --fake`` do). ``real``: random weights, capture runs the model twice (the eager
reference and the recorded graph) and checks the outputs. Single run each (capture is
deterministic; the spread comes from machine load), one intra-op thread.

    .venv/bin/python benchmarks/bench_capture.py [--models tiny_cnn,resnet50] [--real resnet18,resnet50]

Writes benchmarks/results/capture_time.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from coinfer.graph import capture
from coinfer.zoo import ZOO, load_model

RESULTS = Path(__file__).parent / "results" / "capture_time.json"


def _one(spec: str, meta: bool) -> dict:
    t0 = time.perf_counter()
    model, inputs = load_model(spec, meta=meta)
    t1 = time.perf_counter()
    graph = capture(model, inputs, name=spec, fake=meta)
    t2 = time.perf_counter()
    return {
        "model": spec,
        "mode": "meta" if meta else "real",
        "backend": graph.backend,
        "load_s": t1 - t0,
        "capture_s": t2 - t1,
        "nodes": len(graph.nodes),
        "pieces": len(graph.pieces),
        "gmacs": graph.total_flops / 2e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--real", default="resnet18,resnet50,inception,bert_base_plain")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [_one(spec, True) for spec in args.models.split(",") if spec]
    rows += [_one(spec, False) for spec in args.real.split(",") if spec]
    for r in rows:
        print(
            f"{r['model']:16s} {r['mode']:4s} {r['backend']:6s} load {r['load_s']:6.2f} s  "
            f"capture {r['capture_s']:6.2f} s  {r['nodes']:4d} nodes {r['pieces']:4d} pieces"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"torch": torch.__version__, "threads": 1, "rows": rows}, indent=2)
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
