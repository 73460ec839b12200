"""Measured Bayesian plan search (issue 17, S8 Flexi-BOPI) on the 4-device local testbed.

ResNet-18 coarsened to ``--max-pieces`` pieces (3 -> 52 plans with one device per stage) on
``examples/clusters/local_testbed.yaml``; every measurement is a hand-over plus a closed-loop
run through one live session (``coinfer.runtime.measured_eval``), the objective the period.

1. **Exhaustive**: one session measures every configuration ``--repeats`` times (a fresh
   random order each round, so drift of the shared host spreads over all of them); the median
   per configuration is the ground truth and its best the target.
2. **Live searches** at equal budget (``--budget-frac`` of the space, 20 %), ``--seeds``
   seeds each, every search in its own fresh session (its start-up counted in the total):
   ``bo_prior`` (heteroscedastic GP, cost model as prior mean — the issue's method),
   ``bo_noprior`` (heteroscedastic, no prior), ``bo_homo`` (homoscedastic, model prior),
   ``bo_homo_noprior`` (homoscedastic, no prior: ``bo_noprior``'s textbook twin),
   ``random`` (distinct random configurations measured once, best measured wins) and
   ``bo_prior_stop`` (``bo_prior`` with the CLI's expected-improvement stop, 0.5 %). Each
   answer is scored by its exhaustive median: gap = median(answer) / median(best) - 1.
3. **Replay**: the same strategies on the exhaustive table (each measurement draws one of the
   recorded repeats of that configuration), ``--replay-seeds`` seeds: cheap, so the comparison
   has weight; also how many measurements each needs to stay within 3 % (what the prior saves).

Results: ``benchmarks/results/bayes_measured.{json,md}`` and ``docs/img/bayes_search.png`` (the
first live ``bo_prior`` search, and the replay's median gap per measurement). ``--quick``
(2 pieces: 16 plans, 1 repeat, 1 seed, 0.5 s per measurement) writes ``*_quick`` files in
``benchmarks/results/`` instead, to show that the pipeline works.

    nice -n 19 python benchmarks/bench_bayes_measured.py            # full (~20 min)
    nice -n 19 python benchmarks/bench_bayes_measured.py --quick    # smoke run (~3 min)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_runtime_common import RESULTS, ROOT, host_load

CLUSTER = ROOT / "examples" / "clusters" / "local_testbed.yaml"
SOC_CLUSTER = ROOT / "examples" / "clusters" / "biglittle_testbed.yaml"
MODEL = "resnet18"
# Within this of the exhaustive best counts as found (the target).
TARGET_GAP = 0.03
# BO settings shared by every BO strategy: a 3-plan random design measured once (the budget
# is ~10 measurements), the rest chosen by expected improvement.
INIT = 3
# The CLI's default stopping threshold for a measured search (plan_cmds.MEASURED_EI_STOP).
EI_STOP = 0.005
STRATEGIES: dict[str, dict[str, Any] | None] = {
    "bo_prior": {"prior": "model", "noise_model": "heteroscedastic"},
    "bo_noprior": {"prior": "none", "noise_model": "heteroscedastic"},
    "bo_homo": {"prior": "model", "noise_model": "homoscedastic"},
    "bo_homo_noprior": {"prior": "none", "noise_model": "homoscedastic"},
    "random": None,
    "bo_prior_stop": {"prior": "model", "noise_model": "heteroscedastic", "ei_stop": EI_STOP},
}

Key = tuple[str, ...]


def key(cfg: Sequence[Any]) -> Key:
    return tuple(str(s) for s in cfg)


def search(
    strategy: str,
    seed: int,
    inst: Any,
    space: list[Any],
    budget: int,
    evaluate: Callable[[Any], float],
) -> dict[str, Any]:
    """One search with ``evaluate``: its answer, the incumbent after each measurement, the
    measurements used and (BO) the search log."""
    from coinfer.plan.search.bayes import BayesOptions, plan_bayes

    opts = STRATEGIES[strategy]
    if opts is None:  # random search: distinct configurations, each measured once
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(space), size=min(budget, len(space)), replace=False)
        seen: dict[Key, float] = {}
        incumbents = []
        for i in picks:
            seen[key(space[int(i)])] = evaluate(space[int(i)])
            incumbents.append(min(seen, key=seen.__getitem__))
        return {"answer": incumbents[-1], "incumbents": incumbents, "evaluations": len(picks)}
    bo = BayesOptions(
        seed=seed, budget=budget, init=INIT, repeats=1, evaluator=evaluate, candidates=space, **opts
    )
    plan = plan_bayes(inst, "throughput", bo)
    log = plan.details["search_log"]
    return {
        "answer": key(plan.stages),
        "incumbents": [tuple(r["incumbent"]) for r in log],
        "evaluations": plan.details["evaluations"],
        "stopped": plan.details["stopped"],
        "search_log": log,
    }


def exhaustive(
    cluster: Any, inst: Any, space: list[Any], repeats: int, seconds: float, max_pieces: int
) -> tuple[dict[Key, list[float]], dict[Key, list[float]], float]:
    """Every configuration measured ``repeats`` times in one session: values per config, each
    value's within-measurement relative standard error, and the seconds it took."""
    from coinfer.cli.measured_search import live_evaluator

    table: dict[Key, list[float]] = {key(c): [] for c in space}
    sems: dict[Key, list[float]] = {key(c): [] for c in space}
    rng = np.random.default_rng(12345)
    t0 = time.perf_counter()
    with live_evaluator(MODEL, cluster, inst, "throughput", max_pieces=max_pieces,
                        min_time_s=seconds) as (ev, _):  # fmt: skip
        for r in range(repeats):
            for n, i in enumerate(rng.permutation(len(space))):
                got = ev.sample(space[int(i)])
                table[key(space[int(i)])].append(got.value)
                sems[key(space[int(i)])].append(got.rel_sem)
                print(f"  exhaustive round {r + 1}/{repeats}: {n + 1}/{len(space)}", flush=True)
    return table, sems, time.perf_counter() - t0


def live_search(
    strategy: str, seed: int, cluster: Any, inst: Any, space: list[Any], budget: int,
    seconds: float, max_pieces: int,
) -> dict[str, Any]:  # fmt: skip
    """One search measuring on the testbed in a fresh session (start-up included in total_s)."""
    from coinfer.cli.measured_search import live_evaluator

    t0 = time.perf_counter()
    with live_evaluator(MODEL, cluster, inst, "throughput", max_pieces=max_pieces,
                        min_time_s=seconds, seed=seed) as (ev, start_s):  # fmt: skip
        t1 = time.perf_counter()
        out = search(strategy, seed, inst, space, budget, ev.sample)
        out["search_s"] = time.perf_counter() - t1
        out["measurements"] = [r.to_dict() for r in ev.records]
    out["session_start_s"] = start_s
    out["total_s"] = time.perf_counter() - t0
    return out


def replay_evaluator(
    table: dict[Key, list[float]], sems: dict[Key, list[float]], seed: int
) -> Callable[[Any], Any]:
    """A measurement drawn from the recorded repeats of the configuration (with its own
    within-measurement error, as the live evaluator reports it)."""
    from coinfer.core.plans import Sample

    rng = np.random.default_rng(10_000 + seed)

    def measure(cfg: Any) -> Sample:
        vals = table[key(cfg)]
        i = int(rng.integers(len(vals)))
        return Sample(vals[i], sems[key(cfg)][i])

    return measure


def score(run: dict[str, Any], medians: dict[Key, float], best: float, budget: int) -> None:
    """Add the answer's gap, the gap after each measurement and the measurements it needs to
    stay within TARGET_GAP (None: never within it)."""
    gaps = [medians[k] / best - 1 for k in run["incumbents"]]
    gaps += [gaps[-1]] * (budget - len(gaps))  # stopped early: the answer stands
    run["gap"] = medians[run["answer"]] / best - 1
    run["gaps"] = gaps
    bad = [i for i, g in enumerate(gaps[: run["evaluations"]]) if g > TARGET_GAP]
    ok = run["gap"] <= TARGET_GAP
    run["evals_to_target"] = (bad[-1] + 2 if bad else 1) if ok else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [r["gap"] for r in runs]
    reach = [r["evals_to_target"] for r in runs if r["evals_to_target"] is not None]
    out = {
        "runs": len(runs),
        "gap_median": statistics.median(gaps),
        "gap_mean": statistics.fmean(gaps),
        "gap_max": max(gaps),
        "within_target": sum(g <= TARGET_GAP for g in gaps) / len(gaps),
        "evaluations_mean": statistics.fmean(r["evaluations"] for r in runs),
        "evals_to_target_median": statistics.median(reach) if reach else None,
    }
    if "total_s" in runs[0]:
        out["search_s_median"] = statistics.median(r["search_s"] for r in runs)
        out["total_s_median"] = statistics.median(r["total_s"] for r in runs)
        out["total_s_max"] = max(r["total_s"] for r in runs)
    return out


def markdown(res: dict[str, Any]) -> str:
    s = res["setup"]
    lines = [
        f"# Measured Bayesian plan search: {MODEL} on {s['cluster']}"
        + (" (quick mode)" if s["quick"] else ""),
        "",
        f"{s['space']} configurations ({s['pieces']} pieces, {s['space_note']}), each measured "
        f"{s['repeats']}x exhaustively in {res['exhaustive']['seconds']:.0f} s; exhaustive best "
        f"{' | '.join(res['exhaustive']['best'])} at {res['exhaustive']['best_period_s'] * 1e3:.2f} ms "
        f"(median relative spread of repeats {res['exhaustive']['rel_spread_median']:.1%}). "
        + (
            f"The cost model's own best (dp) measures {res['exhaustive']['model_choice_gap']:+.1%} "
            "from it. "
            if res["exhaustive"]["model_choice_gap"] is not None
            else "The cost model's own best (dp) is outside this space. "
        )
        + f"Budget {s['budget']} measurements ({s['budget'] / s['space']:.0%} of the "
        f"space); target: within {TARGET_GAP:.0%}.",
        "",
        "| strategy | mode | runs | gap median | gap max | within 3 % | measurements | to stay within 3 % (median) | search s (median) | total s incl. session start (max) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in [m for m in ("live", "replay") if m in res]:
        for name, summ in res[mode]["summary"].items():
            to = summ["evals_to_target_median"]
            lines.append(
                f"| {name} | {mode} | {summ['runs']} | {summ['gap_median']:+.1%} | "
                f"{summ['gap_max']:+.1%} | {summ['within_target']:.0%} | "
                f"{summ['evaluations_mean']:.1f} | {'-' if to is None else f'{to:g}'} | "
                + (f"{summ['search_s_median']:.0f} | {summ['total_s_max']:.0f} |" if "total_s_median" in summ else "- | - |")
            )  # fmt: skip
    saved = res.get("prior_saves")
    if saved:
        lines += ["", saved]
    lines += ["", f"Host load at start {res['load_start']['loadavg_1m']:.2f}, end "
              f"{res['load_end']['loadavg_1m']:.2f} (1-min averages, {res['load_start']['cores']} cores)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 pieces, 1 repeat, 1 seed")
    ap.add_argument("--max-pieces", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="exhaustive rounds (default 3)")
    ap.add_argument("--seeds", type=int, default=None, help="live seeds per strategy (default 3)")
    ap.add_argument("--replay-seeds", type=int, default=None, help="default 50")
    ap.add_argument("--budget-frac", type=float, default=0.2)
    ap.add_argument("--seconds", type=float, default=None, help="timed per measurement (1.0)")
    ap.add_argument(
        "--soc", action="store_true",
        help="the emulated big.LITTLE SoC (biglittle_testbed.yaml): stages on core groups, one "
        "plan per class equal up to renaming cores (Flexi-BOPI's space: cuts x core counts)",
    )  # fmt: skip
    ap.add_argument(
        "--max-stages", type=int, default=None, help="keep plans of <= this many stages"
    )
    ap.add_argument("--no-live", action="store_true", help="replay only (with --table-from)")
    ap.add_argument(
        "--table-from", type=Path, default=None,
        help="reuse the exhaustive table of an earlier run's JSON (same space) instead of measuring",
    )  # fmt: skip
    args = ap.parse_args()
    q = args.quick
    pieces = args.max_pieces or (2 if q else 3)
    repeats = args.repeats or (1 if q else 3)
    seeds = args.seeds or (1 if q else 3)
    replay_seeds = args.replay_seeds or (10 if q else 50)
    seconds = args.seconds or (0.5 if q else 1.0)
    suffix = ("_soc" if args.soc else "") + ("_quick" if q else "")
    cluster_file = SOC_CLUSTER if args.soc else CLUSTER

    from coinfer.cluster import load_cluster
    from coinfer.core.evaluate import objective_value
    from coinfer.plan import plan as make_plan
    from coinfer.plan._shared import enumerate_configs
    from coinfer.plan.search.bayes import _reachable, config_class, distinct_up_to_cores
    from coinfer.profile.costmodel import build_instance
    from coinfer.report.plots import search_trace

    load_start = host_load()
    cluster = load_cluster(cluster_file)
    inst = build_instance(MODEL, cluster, max_pieces=pieces)
    space = [
        c
        for c in enumerate_configs(inst)
        if math.isfinite(objective_value(inst, c, "throughput")) and _reachable(inst, c)
        and (args.max_stages is None or len(c) <= args.max_stages)
    ]  # fmt: skip
    space = distinct_up_to_cores(inst, space, "throughput")
    space_note = (
        "stages on core groups, one plan per core-count class" if args.soc
        else f"{len(inst.devices)} devices, one per stage"
    ) + (f", <= {args.max_stages} stages" if args.max_stages else "")  # fmt: skip
    budget = max(INIT + 1, int(args.budget_frac * len(space)))
    print(
        f"{MODEL}: {inst.num_pieces} pieces, {len(space)} configurations, budget {budget}",
        flush=True,
    )

    if args.table_from is not None:
        earlier = json.loads(args.table_from.read_text())
        old = earlier["exhaustive"]
        table = {tuple(r["stages"]): r["values_s"] for r in old["table"]}
        sems = {
            tuple(r["stages"]): r.get("rel_sems", [0.0] * len(r["values_s"])) for r in old["table"]
        }
        ex_s = old["seconds"]
        if set(table) != {key(c) for c in space}:
            raise SystemExit(f"{args.table_from}: its table is not this space")
    else:
        table, sems, ex_s = exhaustive(cluster, inst, space, repeats, seconds, pieces)
        (RESULTS / f"bayes_measured{suffix}_table.json").write_text(json.dumps(
            {"exhaustive": {"seconds": ex_s, "table": [
                {"stages": list(k), "values_s": table[k], "rel_sems": sems[k]} for k in table]}}
        ))  # fmt: skip
    medians = {k: statistics.median(v) for k, v in table.items()}
    best_key = min(medians, key=medians.__getitem__)
    best = medians[best_key]
    spreads = [statistics.stdev(v) / statistics.fmean(v) for v in table.values() if len(v) > 1]
    dp_class = config_class(inst, make_plan(inst, "dp", "throughput").stages)
    # dp's plan, or its twin up to core names in the space (dp may pick more stages than kept)
    model_key = next((key(c) for c in space if config_class(inst, c) == dp_class), None)
    res: dict[str, Any] = {
        "setup": {"model": MODEL, "cluster": str(cluster_file.relative_to(ROOT)), "pieces": inst.num_pieces,
                  "space": len(space), "space_note": space_note, "max_stages": args.max_stages, "repeats": repeats, "seeds": seeds, "replay_seeds": replay_seeds,
                  "budget": budget, "seconds_per_measurement": seconds, "init": INIT, "quick": q},
        "load_start": load_start,
        "exhaustive": {
            "seconds": ex_s, "best": list(best_key), "best_period_s": best,
            "rel_spread_median": statistics.median(spreads) if spreads else 0.0,
            "model_choice": list(model_key or []),
            "model_choice_gap": None if model_key is None else medians[model_key] / best - 1,
            "table": [{"stages": list(k), "values_s": v, "rel_sems": sems[k], "median_s": medians[k],
                       "model_s": objective_value(inst, c, "throughput")}
                      for c in space for k, v in [(key(c), table[key(c)])]],
        },
    }  # fmt: skip

    for mode in ("replay",) if args.no_live else ("live", "replay"):
        runs: dict[str, list[dict[str, Any]]] = {}
        for name in STRATEGIES:
            runs[name] = []
            for seed in range(seeds if mode == "live" else replay_seeds):
                if mode == "live":
                    print(f"  live {name} seed {seed}", flush=True)
                    run = live_search(name, seed, cluster, inst, space, budget, seconds, pieces)
                else:
                    run = search(
                        name, seed, inst, space, budget, replay_evaluator(table, sems, seed)
                    )
                score(run, medians, best, budget)
                runs[name].append(run)
        res[mode] = {
            "summary": {n: summarise(rs) for n, rs in runs.items()},
            "runs": {n: [{k: v for k, v in r.items() if mode == "live" or k != "search_log"}
                         for r in rs] for n, rs in runs.items()},
        }  # fmt: skip
    rp = res["replay"]["summary"]
    a, b = rp["bo_prior"]["evals_to_target_median"], rp["bo_noprior"]["evals_to_target_median"]
    res["prior_saves"] = (
        f"What the prior saves (replay, median over seeds): {a if a is not None else 'never'} "
        f"measurements to stay within {TARGET_GAP:.0%} with the cost model as prior mean vs "
        f"{b if b is not None else 'never (within the budget)'} without; gap at the budget "
        f"{rp['bo_prior']['gap_median']:+.1%} vs {rp['bo_noprior']['gap_median']:+.1%}."
    )
    if args.no_live:
        if args.table_from is None or "live" not in earlier:
            raise SystemExit(
                "--no-live needs --table-from an earlier full run (its live searches are kept)"
            )
        res["live"] = earlier["live"]
    res["load_end"] = host_load()
    out = RESULTS / f"bayes_measured{suffix}.json"
    out.write_text(json.dumps(res, indent=1, default=list))
    out.with_suffix(".md").write_text(markdown(res))
    curves = {
        name: [(k + 1, 100 * statistics.median(r["gaps"][k] for r in res["replay"]["runs"][name]))
               for k in range(budget)]
        for name in STRATEGIES
    }  # fmt: skip
    first = res["live"]["runs"]["bo_prior"][0]["search_log"]
    png = (
        (RESULTS / f"bayes_search{suffix}.png")
        if q
        else (ROOT / "docs" / "img" / f"bayes_search{suffix}.png")
    )
    search_trace(first, png, title=f"{MODEL}: measured bayes search (bo_prior, seed 0)", best=best,
                 curves=curves)  # fmt: skip
    print(markdown(res))
    print(f"wrote {out}, {out.with_suffix('.md')}, {png}")


if __name__ == "__main__":
    main()
