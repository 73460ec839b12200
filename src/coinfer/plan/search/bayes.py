"""Bayesian optimisation of partition configurations under noisy measurements (S8 Flexi-BOPI).

When the objective is *measured* (run the pipeline, time it), each evaluation is expensive and
noisy, so exhaustive search is too slow and a plain "best measured value" is fooled by lucky
noise. Flexi-BOPI answers with Bayesian optimisation over partition configurations using a
heteroscedastic Gaussian-process surrogate. Here:

- **space**: plans with one device per stage (cut points + device order). A configuration is
  encoded as the ``P x D`` one-hot matrix "piece ``p`` runs on device ``d``", flattened; it
  determines the cuts (where the device changes) and the order, and two plans are close when
  most pieces sit on the same devices — the notion of similarity a kernel needs.
- **surrogate** (:mod:`.surrogate`): scikit-learn's GP (constant x Matern-5/2 kernel) on
  ``log`` of the measured value. Noise is *heteroscedastic* by default: each configuration's
  noise variance is estimated from its own repeated measurements (shrunk toward the pooled
  estimate), divided by its number of measurements, and passed as the per-sample ``alpha`` —
  configurations measured often or quietly are trusted more; ``noise_model="homoscedastic"``
  gives every configuration the pooled variance (the textbook GP, for comparison).
- **acquisition**: expected improvement over the best posterior mean among measured configs,
  maximised over the whole space when it has at most ``enumerate_limit`` configs, otherwise
  over a random pool plus every neighbour of the incumbent (one cut moved, devices swapped,
  stages merged/split). If the best EI is a configuration already measured, it is measured
  again (that is how the noise estimates improve).
- **stopping**: the budget is spent, or (``ei_stop > 0``) the largest expected improvement
  falls below ``ei_stop`` — in log units, so ``0.01`` is "no candidate is expected to gain
  1 %" — or every candidate was measured ``max_repeats`` times.
- **answer**: the measured configuration with the lowest posterior mean; the Plan's
  ``predicted`` is the *noiseless* reference evaluation of it.
- **search log**: one row per measurement (configuration, measured value, its mean and spread
  so far, the GP's prediction and EI when it was chosen, the incumbent, elapsed time) in
  ``details["search_log"]`` — what a measured search (``coinfer plan --measure``) saves and
  plots.

Heuristic; cost ``O(budget * (n^3 + pool * n))`` for ``n <= budget`` measurements. The default
evaluator is the reference model times ``1 + noise * N(0, 1)`` (seeded), which makes the
search reproducible and lets tests compare against the known optimum.

Why one module: the plan encoding, the candidate sets, the search loop with its log and the
benchmark comparators are one Bayesian optimiser over plans; the statistics it calls are in
:mod:`.surrogate`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...core.cores import core_conflict, core_signature, has_core_groups
from ...core.evaluate import memory_bound_check, objective_value
from ...core.instance import Instance
from ...core.plans import Objective, Plan, Sample, Stage, check_objective
from ...errors import InfeasibleError, InputError
from .._shared import Config, enumerate_configs, finish, infeasible_message
from .pso import _neighbours, repair
from .surrogate import NOISE_MODELS, NoiseModel, expected_improvement, fit_gp, noise_variances

# An evaluator returns the measured value, or a Sample carrying the measurement's own relative
# standard error as well (what the heteroscedastic noise model scales each configuration by).
Evaluator = Callable[[tuple[Stage, ...]], "float | Sample"]


@dataclass(frozen=True, slots=True)
class BayesOptions:
    """Options of :func:`plan_bayes`.

    evaluator : measures a configuration (seconds, or joules for energy); ``None`` = reference
        model x (1 + noise x N(0, 1)) from this planner's seeded generator.
    noise : relative standard deviation of the default evaluator (ignored with a custom one).
    budget : total measurements allowed (initial design included).
    init : configurations in the initial random design; each measured ``repeats`` times.
    enumerate_limit : spaces up to this many configs are scored exhaustively by the acquisition.
    pool : random candidates per step when the space is larger.
    prior : ``"model"`` — the GP models the *discrepancy* ``log(measured) - log(reference)``,
        i.e. the reference cost model is the prior mean and the measurements correct it;
        ``"none"`` — pure black-box BO on ``log(measured)`` (no use of the cost model).
    max_repeats : measurements per configuration at most (then EI looks elsewhere).
    refit_every : re-optimise the kernel hyper-parameters every this many steps (others reuse
        the last ones; fitting dominates the run time).
    noise_model : ``"heteroscedastic"`` (noise per configuration) or ``"homoscedastic"`` (one
        pooled noise level), see :mod:`.surrogate`.
    ei_stop : stop once the largest expected improvement (log units ~ relative gain) is below
        this; ``0`` = only the budget stops the search.
    candidates : search only these configurations (e.g. a small space measured exhaustively
        to compare searchers); ``None`` = every reachable plan, with plans that differ only by
        which cores of one type they use counted once (:func:`distinct_up_to_cores`).
    """

    evaluator: Evaluator | None = None
    noise: float = 0.05
    budget: int = 40
    seed: int = 0
    init: int = 5
    repeats: int = 2
    enumerate_limit: int = 3_000
    pool: int = 500
    prior: Literal["model", "none"] = "model"
    max_repeats: int = 4
    refit_every: int = 5
    noise_model: NoiseModel = "heteroscedastic"
    ei_stop: float = 0.0
    candidates: Sequence[Config] | None = None


def default_evaluator(
    instance: Instance, objective: Objective, noise: float, rng: np.random.Generator
) -> Evaluator:
    """Reference objective x (1 + noise x N(0, 1)), floored at 1 % of the true value."""

    def measure(cfg: tuple[Stage, ...]) -> float:
        v = objective_value(instance, cfg, objective)
        return v * max(0.01, 1.0 + noise * float(rng.standard_normal()))

    return measure


def encode(instance: Instance, cfg: Config) -> np.ndarray:
    """Feature vector: per-device share of the pieces, then the piece -> device one-hot.

    The ``P x D`` one-hot (scaled by ``1 / sqrt(P)`` so moving every piece is distance ~1.4)
    says which plans are neighbours; the ``D`` device shares let the kernel see "plans that
    use device d" as similar even when their cuts differ — a discrepancy tied to one device
    (a throttled board, a slow driver) is then learnt from a few measurements.
    """
    idx = {d: i for i, d in enumerate(instance.device_names)}
    P = instance.num_pieces
    x = np.zeros((P, len(idx)))
    for st in cfg:
        x[st.first : st.last + 1, idx[st.devices[0]]] = 1.0
    return np.concatenate([x.mean(axis=0), x.ravel() / math.sqrt(P)])


def _random_config(instance: Instance, rng: np.random.Generator) -> Config | None:
    P, D = instance.num_pieces, len(instance.devices)
    k = int(rng.integers(1, min(P, D) + 1))
    cuts = sorted(rng.choice(P - 1, size=k - 1, replace=False).tolist()) if k > 1 else []
    devs = rng.permutation(D)[:k].tolist()
    return repair(instance, cuts, devs)


def _count_configs(instance: Instance) -> int:
    P, D = instance.num_pieces, len(instance.devices)
    return sum(math.comb(P - 1, k - 1) * math.perm(D, k) for k in range(1, min(P, D) + 1))


class _Search:
    """State of one optimisation: measurements, surrogate, incumbent trace."""

    def __init__(
        self,
        instance: Instance,
        objective: Objective,
        evaluate_fn: Evaluator,
        prior: str,
        noise_model: NoiseModel = "heteroscedastic",
    ) -> None:
        self.instance = instance
        self.prior = prior
        self.noise_model = noise_model
        self.started = time.perf_counter()
        self.log: list[dict[str, Any]] = []  # one row per measurement, see log_row
        self.kernel: Any = None
        self.prior_cache: dict[Config, float] = {}
        self.enc_cache: dict[Config, np.ndarray] = {}
        self.objective = objective
        self.measure_fn = evaluate_fn
        self.meas: dict[Config, list[float]] = {}
        self.sems: dict[Config, list[float]] = {}  # within-measurement relative errors
        self.trace: list[float] = []  # noiseless value of the incumbent after each measurement

    def features(self, cfgs: Sequence[Config]) -> np.ndarray:
        """Encoded configs (cached: the same configs are re-encoded every step otherwise)."""
        rows = []
        for c in cfgs:
            x = self.enc_cache.get(c)
            if x is None:
                x = encode(self.instance, c)
                self.enc_cache[c] = x
            rows.append(x)
        return np.array(rows)

    def prior_mean(self, cfgs: Sequence[Config]) -> np.ndarray:
        """``log`` of the reference objective per config (zeros for a black-box search)."""
        if self.prior == "none":
            return np.zeros(len(cfgs))
        out = np.empty(len(cfgs))
        for i, c in enumerate(cfgs):
            v = self.prior_cache.get(c)
            if v is None:
                v = math.log(max(objective_value(self.instance, c, self.objective), 1e-300))
                self.prior_cache[c] = v
            out[i] = v
        return out

    def measure(self, cfg: Config) -> None:
        got = self.measure_fn(cfg)
        y, rel_sem = (float(got[0]), float(got[1])) if isinstance(got, tuple) else (float(got), 0.0)
        if not (y > 0 and math.isfinite(y)):
            raise InputError(
                f"bayes: the evaluator returned {y!r} for {[str(s) for s in cfg]}; need a finite value > 0"
            )
        self.meas.setdefault(cfg, []).append(y)
        self.sems.setdefault(cfg, []).append(
            rel_sem if rel_sem > 0 and math.isfinite(rel_sem) else 0.0
        )

    def data(self) -> tuple[list[Config], np.ndarray, np.ndarray]:
        """Measured configs, their mean log-values (minus the prior) and noise variances."""
        cfgs = list(self.meas)
        logs = [np.log(self.meas[c]) for c in cfgs]
        z = np.array([lv.mean() for lv in logs]) - self.prior_mean(cfgs)
        within = [_mean_square_positive(self.sems[c]) for c in cfgs]
        return cfgs, z, noise_variances(logs, self.noise_model, within)

    def log_row(
        self,
        cfg: Config,
        phase: str,
        incumbent: Config,
        gp: tuple[float, float, float] | None = None,
    ) -> None:
        """Record the measurement just taken of ``cfg``. ``gp`` = (posterior mean and standard
        deviation in log units, expected improvement) when the GP chose it; values in the
        objective's unit (seconds, or joules). ``incumbent`` is provisional until the next
        GP fit names the answer with this measurement included (:meth:`set_incumbent`)."""
        vals = self.meas[cfg]
        inc = self.meas[incumbent]
        self.log.append(
            {
                "index": len(self.log) + 1,
                "phase": phase,
                "stages": [str(st) for st in cfg],
                "measured": vals[-1],
                "rel_sem": self.sems[cfg][-1],
                "config_n": len(vals),
                "config_mean": float(np.mean(vals)),
                "config_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                "model": objective_value(self.instance, cfg, self.objective),
                "gp_mean": None if gp is None else math.exp(gp[0]),
                "gp_std_log": None if gp is None else gp[1],
                "ei": None if gp is None else gp[2],
                "incumbent": [str(st) for st in incumbent],
                "incumbent_mean": float(np.mean(inc)),
                "elapsed_s": time.perf_counter() - self.started,
            }
        )

    def set_incumbent(self, incumbent: Config) -> None:
        """The answer after the last logged measurement (the GP's, once it is refitted)."""
        if self.log:
            self.log[-1]["incumbent"] = [str(st) for st in incumbent]
            self.log[-1]["incumbent_mean"] = float(np.mean(self.meas[incumbent]))


def plan_bayes(
    instance: Instance, objective: Objective = "throughput", options: BayesOptions | None = None
) -> Plan:
    """Flexi-BOPI-style Bayesian optimisation (S8). Heuristic; latency, throughput, energy.

    Complexity: ``budget`` measurements (the evaluator's cost dominates in real use) and per
    step one GP fit ``O(n^3)`` on ``n <= budget`` measured configs plus a prediction over the
    candidate set (the whole space up to ``enumerate_limit``, else ``pool`` + neighbours).

    Returns
    -------
    Plan whose ``predicted`` is the noiseless reference evaluation of the chosen configuration;
    ``details`` has ``evaluations`` (measurements used), ``distinct`` (configurations
    measured), ``space`` (size of the configuration space), ``trace`` (noiseless value of the
    incumbent after each measurement), ``measured_mean`` and ``measured_std`` of the winner,
    ``stopped`` (``"budget"``, ``"ei"`` or ``"exhausted"``), ``max_ei`` (the largest expected
    improvement at the last acquisition step, ``None`` if there was none), ``noise_model``,
    ``prior`` and ``search_log`` (one row per measurement, see the module docstring).
    """
    started = time.perf_counter()
    objective = check_objective(objective)
    opts = options or BayesOptions()
    if opts.budget < 1 or opts.init < 1 or opts.repeats < 1 or opts.noise < 0:
        raise InputError(
            f"BayesOptions: budget={opts.budget}, init={opts.init}, repeats={opts.repeats} must be >= 1 "
            f"and noise={opts.noise} >= 0"
        )
    if not (opts.ei_stop >= 0 and math.isfinite(opts.ei_stop)):
        raise InputError(f"BayesOptions.ei_stop={opts.ei_stop!r}; need a number >= 0")
    if opts.noise_model not in NOISE_MODELS:
        raise InputError(
            f"BayesOptions.noise_model={opts.noise_model!r}; choose {' or '.join(NOISE_MODELS)}"
        )
    memory_bound_check(instance)
    rng = np.random.default_rng(opts.seed)
    evaluator = opts.evaluator or default_evaluator(instance, objective, opts.noise, rng)
    size = _count_configs(instance)
    space: list[Config] | None = None
    if opts.candidates is not None:
        space = [tuple(c) for c in opts.candidates if _reachable(instance, tuple(c))]
        if not space:
            raise InputError(
                "BayesOptions.candidates: none of them is a plan this instance can run"
            )
    elif size <= opts.enumerate_limit:
        space = [c for c in enumerate_configs(instance) if _reachable(instance, c)]
        space = distinct_up_to_cores(instance, space, objective)
        if not space:
            raise InfeasibleError(infeasible_message(instance, "bayes"))
    if opts.prior not in ("model", "none"):
        raise InputError(f"BayesOptions.prior={opts.prior!r}; choose 'model' or 'none'")
    search = _Search(instance, objective, evaluator, opts.prior, opts.noise_model)
    result, stopped, max_ei = _optimise(instance, search, space, rng, opts)
    vals = search.meas[result]
    details = {
        "evaluations": sum(len(v) for v in search.meas.values()),
        "distinct": len(search.meas),
        "space": len(space) if space is not None else size,
        "trace": search.trace,
        "measured_mean": float(np.mean(vals)),
        "measured_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
        "stopped": stopped,
        "max_ei": max_ei,
        "noise_model": opts.noise_model,
        "prior": opts.prior,
        "search_log": search.log,
    }
    return finish(
        instance, "bayes", objective, result, started=started, seed=opts.seed, details=details
    )


def _draw(
    instance: Instance, space: list[Config] | None, rng: np.random.Generator, n: int
) -> list[Config]:
    if space is not None:
        pick = rng.choice(len(space), size=min(n, len(space)), replace=False)
        return [space[int(i)] for i in pick]
    out: list[Config] = []
    for _ in range(20 * n):
        c = _random_config(instance, rng)
        if c is not None and c not in out and _reachable(instance, c):
            out.append(c)
        if len(out) >= n:
            break
    if not out:
        raise InfeasibleError(infeasible_message(instance, "bayes"))
    return out


def _mean_square_positive(values: Sequence[float]) -> float:
    """Mean square of the reported (positive) relative errors; 0 when none was reported."""
    known = [v * v for v in values if v > 0]
    return float(np.mean(known)) if known else 0.0


def config_class(instance: Instance, cfg: Config) -> tuple[Any, ...]:
    """``cfg`` up to renaming cores of one type: per stage its pieces and the core types of its
    devices (:func:`~coinfer.core.cores.core_signature`)."""
    return tuple(
        (st.first, st.last, *(core_signature(instance, d) for d in st.devices)) for st in cfg
    )


def distinct_up_to_cores(
    instance: Instance, space: Sequence[Config], objective: Objective = "throughput"
) -> list[Config]:
    """``space`` with one configuration per class of plans equal up to renaming cores of one
    type (same cuts, and each stage on the same number of cores of the same types): the one
    the cost model prices best, in first-seen order of the classes.

    Why: on a 2 big + 4 LITTLE SoC, 569 reachable plans over 3 pieces are 104 distinct ones;
    a measured search that spends its budget on twins of what it measured learns nothing new.
    A cluster without core groups is returned unchanged."""
    if not has_core_groups(instance):
        return list(space)
    best: dict[tuple[Any, ...], tuple[float, Config]] = {}
    for cfg in space:
        k = config_class(instance, cfg)
        v = objective_value(instance, cfg, objective)
        if k not in best or v < best[k][0]:
            best[k] = (v, cfg)
    return [c for _, c in best.values()]


def _reachable(instance: Instance, cfg: Config) -> bool:
    """Every hop of the plan has a route and no two stages share a core of a SoC (else no
    measurement can exist: not a candidate). Why the core check here: a measured search runs on
    the whole instance, where two core groups may overlap (``soc.little0-2`` and
    ``soc.little0``); the runtime rightly refuses such a plan, and the search must never ask."""
    if core_conflict(instance, (d for st in cfg for d in st.devices)) is not None:
        return False
    prev = instance.source
    for st in cfg:
        if math.isinf(instance.transfer_s(prev, st.devices[0], instance.cut_bytes(st.first))):
            return False
        prev = st.devices[0]
    return not math.isinf(instance.transfer_s(prev, instance.source, instance.output_bytes))


def _fits(instance: Instance, cfg: Config) -> bool:
    return all(
        instance.mem_bytes(s.first, s.last) <= instance.device_by_name[s.devices[0]].mem_bytes
        for s in cfg
    )


def _optimise(
    instance: Instance,
    search: _Search,
    space: list[Config] | None,
    rng: np.random.Generator,
    opts: BayesOptions,
) -> tuple[Config, str, float | None]:
    """The search loop; returns (answer, why it stopped, the last step's largest EI)."""
    budget = opts.budget
    used = 0
    incumbent: Config | None = None
    stopped = "budget"
    max_ei: float | None = None

    def note() -> None:
        search.trace.append(
            objective_value(instance, incumbent, search.objective) if incumbent else math.inf
        )

    for cfg in _draw(instance, space, rng, opts.init):
        for _ in range(opts.repeats):
            if used >= budget:
                break
            search.measure(cfg)
            used += 1
            incumbent = min(search.meas, key=lambda c: float(np.mean(search.meas[c])))
            search.log_row(cfg, "init", incumbent)
            note()
    step = 0
    space_X: np.ndarray | None = None
    space_prior: np.ndarray | None = None
    residual = search.prior == "model"
    while used < budget:
        cfgs, z, alpha = search.data()
        reuse = search.kernel if step % max(1, opts.refit_every) else None
        gp = fit_gp(search.features(cfgs), z, alpha, opts.seed, reuse, residual)
        search.kernel = gp.kernel_
        step += 1
        mu_seen = gp.predict(search.features(cfgs)) + search.prior_mean(cfgs)
        incumbent = cfgs[int(np.argmin(mu_seen))]
        best = float(mu_seen.min())
        search.set_incumbent(incumbent)  # the answer had the search stopped one step earlier
        if space is not None:
            cands = space
            if space_X is None:  # features and prior of the whole space, computed once
                space_X, space_prior = search.features(space), search.prior_mean(space)
            X, prior = space_X, space_prior
        else:
            cands = _draw(instance, None, rng, opts.pool)
            cands += [
                c
                for c in _neighbours(instance, incumbent)
                if _fits(instance, c) and _reachable(instance, c)
            ]
            cands += cfgs
            X, prior = search.features(cands), search.prior_mean(cands)
        mu, sd = gp.predict(X, return_std=True)
        ei = expected_improvement(mu + prior, sd, best)
        for i, c in enumerate(cands):  # enough repeats: further ones add little, explore instead
            if len(search.meas.get(c, ())) >= opts.max_repeats:
                ei[i] = -math.inf
        if not np.isfinite(ei).any():
            stopped = "exhausted"
            break
        pick = int(np.argmax(ei))
        max_ei = float(ei[pick])
        if max_ei < opts.ei_stop:
            stopped = "ei"
            break
        search.measure(cands[pick])
        used += 1
        search.log_row(
            cands[pick], "acquire", incumbent, (mu[pick] + prior[pick], sd[pick], max_ei)
        )
        note()
    cfgs, z, alpha = search.data()
    if len(cfgs) > 1:
        gp = fit_gp(search.features(cfgs), z, alpha, opts.seed, search.kernel, residual)
        mu_seen = gp.predict(search.features(cfgs)) + search.prior_mean(cfgs)
        incumbent = cfgs[int(np.argmin(mu_seen))]
    else:
        incumbent = cfgs[0]
    search.trace[-1] = objective_value(instance, incumbent, search.objective)
    search.set_incumbent(incumbent)
    return incumbent, stopped, max_ei


# ----- comparators for the benchmark and tests ---------------------------------------------------


def random_search_trace(
    instance: Instance, objective: Objective, budget: int, noise: float, seed: int
) -> list[float]:
    """Noiseless value of random search's incumbent (best measured mean) after each measurement."""
    rng = np.random.default_rng(seed)
    measure = default_evaluator(instance, objective, noise, rng)
    space = list(enumerate_configs(instance))
    meas: dict[Config, list[float]] = {}
    trace = []
    for _ in range(budget):
        cfg = space[int(rng.integers(len(space)))]
        meas.setdefault(cfg, []).append(measure(cfg))
        inc = min(meas, key=lambda c: float(np.mean(meas[c])))
        trace.append(objective_value(instance, inc, objective))
    return trace


def exhaustive_measured(
    instance: Instance, objective: Objective, noise: float, seed: int
) -> tuple[int, float]:
    """Measure every configuration once; returns (measurements, noiseless value of the pick)."""
    rng = np.random.default_rng(seed)
    measure = default_evaluator(instance, objective, noise, rng)
    space = list(enumerate_configs(instance))
    vals = [measure(c) for c in space]
    pick = space[int(np.argmin(vals))]
    return len(space), objective_value(instance, pick, objective)


def evals_to_within(trace: Sequence[float], optimum: float, rel: float = 0.01) -> int | None:
    """First measurement count after which the incumbent stays within ``rel`` of ``optimum``."""
    last_bad = -1
    for i, v in enumerate(trace):
        if v > optimum * (1 + rel):
            last_bad = i
    return None if last_bad == len(trace) - 1 else last_bad + 2
