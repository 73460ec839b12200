"""Collect profiles, train the affinity predictor, and evaluate it on HELD-OUT models and devices.

    python benchmarks/bench_predictor.py --collect   # ~10 min: profile zoo models under cgroup quotas
    python benchmarks/bench_predictor.py --train     # evaluate + write the table + ship the predictor

``--collect`` profiles several zoo models (small inputs, so the whole run stays near ten minutes on
2 shared cores) on six emulated device settings: CPU quota 1.0 / 0.5 / 0.25 core x 1 / 2 threads.
Each setting runs in one child process started inside a cgroup v1 CPU quota (root; otherwise the
run stops: unthrottled numbers would silently mislabel the settings). Profiles are stored in
``benchmarks/results/predictor_profiles.jsonl.gz``.

``--train`` splits the profiles into training and held-out sets along both axes — held-out MODELS
(never seen in training) and held-out DEVICE SETTINGS (quota 0.5, between the training quotas) —
and reports MAPE and the share of predictions within ±10% / ±20%, per node, per op family and per
piece, next to a FLOPs-only baseline (time = FLOPs / a per-setting speed fitted on the training
set). Results go to ``benchmarks/results/predictor.md`` and ``.json``; the final predictor, trained
on ALL profiles, is written to ``src/coinfer/profile/data/predictor.joblib``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROFILES = RESULTS / "predictor_profiles.jsonl.gz"

# Models and the (small) input shapes used for collection; None = the zoo default (tiny models).
MODELS: dict[str, list[int] | None] = {
    "tiny_cnn": None,
    "tiny_dag": None,
    "tiny_mlp": None,
    "alexnet": [1, 3, 96, 96],
    "vgg16": [1, 3, 48, 48],
    "resnet18": [1, 3, 64, 64],
    "mobilenet_v2": [1, 3, 96, 96],
    "unet": [1, 3, 48, 48],
    "bert_base": [1, 16],
    "resnet50": [1, 3, 64, 64],
    "inception": [1, 3, 96, 96],
    "tiny_yolov2": [1, 3, 128, 128],
    "gpt2": [1, 16],
}
# Held out of training entirely: a bottleneck ResNet, a 4-branch concat DAG, a detector, a decoder.
HELD_OUT_MODELS = ("resnet50", "inception", "tiny_yolov2", "gpt2")
# Device settings (quota in cores, threads); quota 0.5 is held out (interpolation between 1.0 and 0.25).
SETTINGS: tuple[tuple[float, int], ...] = (
    (1.0, 1),
    (0.5, 1),
    (0.25, 1),
    (1.0, 2),
    (0.5, 2),
    (0.25, 2),
)
HELD_OUT_QUOTAS = (0.5,)
# Fewer passes than the CLI default: collection must fit in ~10 minutes; under throttling the
# profiler keeps measuring for >= 2 s anyway (see coinfer.profile.profiler).
WARMUP, REPEATS = 1, 6


# ----- collection ---------------------------------------------------------------------------------


def _worker(setting: dict[str, Any], out_dir: Path) -> None:
    """Runs inside the cgroup: profile every model at one setting, one JSON file each."""
    from coinfer.profile.profiler import measure

    for name, shape in MODELS.items():
        t0 = time.time()
        try:
            data = measure(
                name,
                input_shape=shape,
                threads=setting["threads"],
                quota=setting["quota"],
                repeats=REPEATS,
                warmup=WARMUP,
            )
        except Exception as exc:  # keep collecting the other models; the summary says what failed
            print(f"  {name}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        data["setting"] = setting
        (out_dir / f"{name}-q{setting['quota']}-t{setting['threads']}.json").write_text(
            json.dumps(data)
        )
        print(
            f"  {name}: {time.time() - t0:.1f}s, {data['passes']} passes",
            file=sys.stderr,
            flush=True,
        )


def collect() -> None:
    import os
    import tempfile

    from coinfer.profile.cgroup import EMULATION_PERIOD_US, cgroup_support, cpu_quota_cgroup

    ok, why = cgroup_support()
    if not ok:
        sys.exit(f"cannot collect: CPU quotas need cgroup v1 as root ({why})")
    out_dir = Path(tempfile.mkdtemp(prefix="coinfer-collect-"))
    start = time.time()
    for quota, threads in SETTINGS:
        setting = {"quota": quota, "threads": threads}
        print(f"setting quota={quota} threads={threads}", file=sys.stderr, flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        # the runtime's (and the profiler's) CFS period, so labels match what devices do in a run
        with cpu_quota_cgroup(
            f"coinfer-collect-{os.getpid()}", quota, period_us=EMULATION_PERIOD_US
        ) as cg:
            subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(setting), str(out_dir)],
                check=True,
                env=env,
                preexec_fn=cg.enter,
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    with gzip.open(PROFILES, "wt") as fh:
        for f in sorted(out_dir.glob("*.json")):
            fh.write(f.read_text().strip() + "\n")
    print(
        f"collected {len(list(out_dir.glob('*.json')))} profiles in {time.time() - start:.0f}s -> {PROFILES}"
    )


def load_profiles() -> list[dict[str, Any]]:
    with gzip.open(PROFILES, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ----- evaluation ---------------------------------------------------------------------------------


def _flops_baseline(train: list[dict[str, Any]]):
    """The analytic cost model with a perfectly calibrated speed: time = FLOPs / G, where G is
    the setting's effective FLOP/s over the training set (sum of FLOPs / sum of times), plus a
    per-setting floor (median time of zero-FLOP nodes). Settings unseen in training use the
    nearest training quota with the same threads, scaled by the quota ratio."""
    per: dict[tuple[float, int], tuple[float, float]] = {}
    groups: dict[tuple[float, int], list[dict[str, Any]]] = {}
    for p in train:
        groups.setdefault((p["quota"], p["threads"]), []).append(p)
    for k, profs in groups.items():
        nodes = [r for p in profs for r in p["nodes"]]
        spf = sum(r["time_s"] for r in nodes if r["flops"] > 0) / sum(r["flops"] for r in nodes)
        floor = [r["time_s"] for r in nodes if r["flops"] == 0]
        per[k] = (spf, float(np.median(floor)) if floor else 0.0)

    def predict(profile: dict[str, Any]) -> np.ndarray:
        key = (profile["quota"], profile["threads"])
        if key in per:
            spf, floor = per[key]
        else:
            near = min((k for k in per if k[1] == key[1]), key=lambda k: abs(k[0] - key[0]))
            spf, floor = per[near]
            ratio = min(near[0], near[1]) / min(key[0], key[1])
            spf, floor = spf * ratio, floor * ratio
        return np.array([max(r["flops"] * spf, floor) for r in profile["nodes"]])

    return predict


def _summary_rows(name: str, res: dict[str, Any], base: dict[str, float]) -> list[str]:
    n, pc = res["nodes"], res["pieces"]
    return [
        f"| {name} | {n['n']} | {n['mape']:.0f} | {n['wape']:.0f} | {n['within10']:.1f} | {n['within20']:.1f} "
        f"| {pc['n']} | {pc['mape']:.0f} | {pc['wape']:.0f} | {pc['within10']:.1f} | {pc['within20']:.1f} "
        f"| {base['wape']:.0f} | {base['within20']:.1f} |"
    ]


def noise_floor(profiles: list[dict[str, Any]]) -> dict[str, float]:
    """How repeatable are the measurements themselves? Within one profile, nodes that are the
    same operation (op, input/output shape, FLOPs, parameter bytes) should take the same time;
    the share of such nodes within ±10% / ±20% of their group's median bounds what any
    predictor can score on this host."""
    rel: list[float] = []
    for p in profiles:
        groups: dict[str, list[float]] = {}
        for r in p["nodes"]:
            key = json.dumps(
                [r["op"], r.get("shape"), r.get("in_shape"), r["flops"], r["param_bytes"]]
            )
            groups.setdefault(key, []).append(r["time_s"])
        for ts in groups.values():
            if len(ts) >= 3:
                med = float(np.median(ts))
                rel += [abs(t - med) / med for t in ts]
    a = np.array(rel)
    if a.size == 0:
        return {"n": 0, "within10": math.nan, "within20": math.nan}
    return {
        "n": int(a.size),
        "within10": float(100 * (a <= 0.1).mean()),
        "within20": float(100 * (a <= 0.2).mean()),
    }


def train_and_evaluate() -> None:
    from coinfer.profile.predictor import (
        DEFAULT_PREDICTOR_PATH,
        error_summary,
        evaluate_on_profiles,
        train_predictor,
    )

    profiles = load_profiles()
    t0 = time.time()

    def is_train(p: dict[str, Any]) -> bool:
        return p["model"] not in HELD_OUT_MODELS and p["quota"] not in HELD_OUT_QUOTAS

    train = [p for p in profiles if is_train(p)]
    pred = train_predictor(train, seed=0)
    fit_s = time.time() - t0
    baseline = _flops_baseline(train)
    splits = {
        "training set (in-sample)": [p for p in profiles if is_train(p)],
        "held-out models, training settings": [
            p
            for p in profiles
            if p["model"] in HELD_OUT_MODELS and p["quota"] not in HELD_OUT_QUOTAS
        ],
        "training models, held-out settings (quota 0.5)": [
            p
            for p in profiles
            if p["model"] not in HELD_OUT_MODELS and p["quota"] in HELD_OUT_QUOTAS
        ],
        "held-out models AND settings": [
            p for p in profiles if p["model"] in HELD_OUT_MODELS and p["quota"] in HELD_OUT_QUOTAS
        ],
    }
    results: dict[str, Any] = {}
    lines = [
        "# Affinity predictor: held-out evaluation",
        "",
        f"Produced by `benchmarks/bench_predictor.py --train` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"from {len(profiles)} profiles ({len(MODELS)} zoo models x {len(SETTINGS)} emulated device settings: "
        "cgroup CPU quota 1.0/0.5/0.25 core x 1/2 threads, measured on this 2-core host with nothing else running, in 10 ms CFS periods).",
        f"Training: {len(train)} profiles ({pred.info['rows']} node rows), models "
        f"{', '.join(sorted({p['model'] for p in train}))}; fit in {fit_s:.1f}s. "
        f"Held-out models: {', '.join(HELD_OUT_MODELS)}. Held-out quota: {', '.join(map(str, HELD_OUT_QUOTAS))}.",
        "",
        "Errors are relative to the measured time (under a quota: CPU time x the passes' wall/CPU ratio; else the median). "
        "MAPE in %; WAPE = Σ|error| / Σ time in % (time-weighted: what a planner summing pieces feels); "
        "'w10'/'w20' = % of predictions within ±10% / ±20%. Pieces are predicted as the sum of "
        f"their nodes times a learned stage factor ({pred.piece_scale:.3f}). Baseline: the analytic model with a "
        "perfectly calibrated speed per setting (FLOPs / effective FLOP/s fitted on the training set, "
        "+ a floor for zero-FLOP nodes).",
        "",
        "| split | nodes | node MAPE | node WAPE | node w10 | node w20 | pieces | piece MAPE | piece WAPE "
        "| piece w10 | piece w20 | baseline node WAPE | baseline node w20 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, all_profs in splits.items():
        for threads in (None, 1, 2):
            profs = [p for p in all_profs if threads is None or p["threads"] == threads]
            if not profs:
                continue
            label = (
                name
                if threads is None
                else f"&nbsp;&nbsp;… {threads} thread{'s' if threads > 1 else ''} only"
            )
            res = evaluate_on_profiles(pred, profs)
            truth = np.concatenate([[max(r["time_s"], 1e-7) for r in p["nodes"]] for p in profs])
            base = error_summary(truth, np.concatenate([baseline(p) for p in profs]))
            res["baseline_nodes"] = base
            results[name if threads is None else f"{name} / {threads} threads"] = res
            lines += _summary_rows(label, res, base)
    lines += [
        "",
        "## Noise floor: how repeatable are the measurements?",
        "",
        "Within one profile, identical operations (same op, shapes, FLOPs, parameters; groups of >= 3) "
        "should take the same time. Share of such nodes within ±10% / ±20% of their group's median:",
        "",
        "| settings | nodes | w10 | w20 |",
        "|---|---|---|---|",
    ]
    for label, sel in (("1 thread", 1), ("2 threads", 2)):
        nf = noise_floor([p for p in profiles if p["threads"] == sel])
        results[f"noise_floor_{sel}_threads"] = nf
        lines.append(f"| {label} | {nf['n']} | {nf['within10']:.1f} | {nf['within20']:.1f} |")
    held = "held-out models, training settings"
    for name in (held, "held-out models AND settings"):
        if name not in results:
            continue
        lines += [
            "",
            f"## Per op family — {name}",
            "",
            "| family | nodes | MAPE | w10 | w20 |",
            "|---|---|---|---|---|",
        ]
        for fam, s in sorted(results[name]["per_family"].items(), key=lambda kv: -kv[1]["n"]):
            lines.append(
                f"| {fam} | {s['n']} | {s['mape']:.1f} | {s['within10']:.1f} | {s['within20']:.1f} |"
            )
    # per held-out model, whole-model time (sum of pieces) error
    lines += ["", "## Whole-model time (sum of predicted pieces) on held-out models", "",
              "| model | setting | measured ms | predicted ms | error % |", "|---|---|---|---|---|"]  # fmt: skip
    for p in sorted(profiles, key=lambda p: (p["model"], p["quota"], p["threads"])):
        if p["model"] not in HELD_OUT_MODELS:
            continue
        by = dict(
            zip(
                [r["name"] for r in p["nodes"]],
                pred.predict_records(p["nodes"], _dev(p)),
                strict=True,
            )
        )
        predicted = pred.piece_scale * sum(by[n] for pc in p["pieces"] for n in pc["nodes"])
        meas = p["pieces_sum_s"]
        lines.append(
            f"| {p['model']} | q={p['quota']}, t={p['threads']} | {meas * 1e3:.2f} | {predicted * 1e3:.2f} "
            f"| {100 * (predicted - meas) / meas:+.1f} |"
        )
    lines += [
        "",
        "## Reading these numbers",
        "",
    ]
    hm1 = results.get(f"{held} / 1 threads")
    hb1 = results.get("held-out models AND settings / 1 threads")
    nf1 = results.get("noise_floor_1_threads")
    if hm1 and hb1 and nf1:
        lines.append(
            f"At one thread (the local testbed's setting) the predictor's time-weighted node error on "
            f"models it never saw is {hm1['nodes']['wape']:.0f}% ({hb1['nodes']['wape']:.0f}% when the quota is "
            f"also new) against {hm1['baseline_nodes']['wape']:.0f}% ({hb1['baseline_nodes']['wape']:.0f}%) for "
            f"the calibrated analytic model, and {hm1['nodes']['within20']:.0f}% of nodes land within ±20% "
            f"(analytic: {hm1['baseline_nodes']['within20']:.0f}%). That is far from nn-Meter's ~99% within "
            f"±10% — which is measured on a dedicated, quiet device with per-device kernel-fusion rules. "
            f"Here the measurements themselves are the limit: even IDENTICAL operations inside one profile "
            f"agree within ±20% only {nf1['within20']:.0f}% of the time (within ±10%: {nf1['within10']:.0f}%), "
            f"because this 2-core VM is a noisy place to time single operations (cache state after every "
            f"10 ms throttling period, other tenants of the host)."
        )
    lines += [
        "",
        "Two threads under a quota of at most one core is a pathological device: OpenMP's worker threads "
        "spin-wait at barriers and burn the quota, so times jump 5-15x and vary wildly between models; "
        "there the predictor is no better than the analytic model. Tiny nodes (views, ReLUs, adds: a few "
        "microseconds) dominate node counts and therefore MAPE; WAPE and the piece/whole-model rows are what "
        "a planner feels. The predictor shipped in the package is trained on ALL profiles (every model "
        "and setting); its training domain (threads 1-2, quota 0.25-1) is recorded, and the cost model "
        "prices devices outside it analytically.",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "predictor.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "predictor.json").write_text(json.dumps(results, indent=1, default=_json_default))
    _update_docs(lines)
    final = train_predictor(profiles, seed=0)
    final.save(DEFAULT_PREDICTOR_PATH)
    size = DEFAULT_PREDICTOR_PATH.stat().st_size
    print("\n".join(lines))
    print(
        f"\nshipped predictor: {DEFAULT_PREDICTOR_PATH} ({size / 1024:.0f} KiB, {final.info['rows']} rows)"
    )


DOCS = ROOT / "docs" / "predictor.md"
_START, _END = "<!-- predictor-results:start -->", "<!-- predictor-results:end -->"


def _update_docs(lines: list[str]) -> None:
    """Put the results (without their H1, headings demoted) between the markers in docs/predictor.md."""
    if not DOCS.exists():
        return
    text = DOCS.read_text()
    if _START not in text or _END not in text:
        return
    body = [("#" + ln if ln.startswith("## ") else ln) for ln in lines[1:]]
    head, rest = text.split(_START, 1)
    _, tail = rest.split(_END, 1)
    DOCS.write_text(head + _START + "\n" + "\n".join(body).strip() + "\n" + _END + tail)


def _dev(profile: dict[str, Any]):
    from coinfer.profile.predictor import profile_device

    return profile_device(profile)


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    return str(x)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--collect", action="store_true", help="profile the models under cgroup quotas")
    ap.add_argument(
        "--train", action="store_true", help="evaluate on held-out splits and ship the predictor"
    )
    ap.add_argument(
        "--worker", nargs=2, metavar=("SETTING_JSON", "OUT_DIR"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.worker:
        _worker(json.loads(args.worker[0]), Path(args.worker[1]))
        return
    if not (args.collect or args.train):
        ap.error("give --collect and/or --train")
    if args.collect:
        collect()
    if args.train:
        train_and_evaluate()


if __name__ == "__main__":
    main()
