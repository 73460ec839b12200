"""The task–device affinity predictor (AP²'s first module): node/piece time on a device.

Model: an analytic *baseline* times a learned *correction*. The baseline, per op family, is
``a + b·FLOPs + c·activation bytes + d·parameter bytes read`` (a roofline-style sum: per-call
overhead, compute, activation traffic, weight traffic; non-negative least squares on relative
error, seconds on one effective core); the correction is a scikit-learn
:class:`~sklearn.ensemble.HistGradientBoostingRegressor` on the features of
:mod:`coinfer.profile.features` with target ``log(time · c_eff) − log(baseline)``. Why both:
trees alone cannot extrapolate — GPT-2's 50k-wide LM head (1.2 GFLOPs) was predicted at 2 ms
against 64 ms measured in an earlier profile set, because no training node was that large —
whereas the baseline grows with the work and the trees only have to learn a bounded ratio.

The trees minimise the *absolute* error of the log ratio (``loss="absolute_error"``), i.e. they
predict the median ratio. Why: measurements under two threads have a heavy tail (OpenMP spin
time lands on whichever node runs next, 2-15x jumps), and a squared loss chases it; the median is
also what minimises a time-weighted absolute error (WAPE). Chosen by leave-one-model-out cross
validation on the training models (piece WAPE 46% squared vs 45% absolute — 33% vs 28% at one
thread — with the context features; see ``benchmarks/bench_predictor.py``), never on the
held-out models.

A piece's time is the sum of its nodes' predicted times times a learned per-piece factor (the
median ratio of a measured piece to the sum of its measured nodes at one thread; ~1 on this
host's data). At two or more threads the node *targets* are piece-calibrated instead: each
node's measured time is scaled by its piece's ``measured piece / sum of its measured nodes`` (and
divided by that factor), so a piece's training nodes sum to the piece as measured. Why: at two
threads a node's timing window holds OpenMP spin time that, inside a stage module, lands
elsewhere — pieces there are not the sums of their measured nodes (time-weighted error ~50%), so
fitting raw node times teaches the trees a decomposition no piece follows. Leave-one-model-out on
the training models (``benchmarks/bench_predictor.py --cv``), raw -> calibrated: two-thread piece
WAPE 53% -> 52% (within ±20%: 17% -> 19%), one thread 29% -> 28%; with 400 trees, 31 leaves or
>= 20 rows per leaf two threads go 54/52/52% -> 51/52/51%. A small gain, inside the folds' noise,
but not a loss at two threads in any setting tried. At one thread the nodes already sum to their
pieces within ~9% and rescaling them only moved small pieces' per-call overheads onto their
nodes (worse in cross validation), so one-thread targets stay raw.

Cross-hardware transfer: the training data come from this host's emulated devices, so the trees
only know CPU quota and thread count. For a device described with a clock (``freq_ghz``) the
prediction is scaled by ``host_clock / device_clock``, a first-order assumption (equal work per
cycle) that is stated wherever such numbers are shown; measured profiles beat it.

Why one module: training and prediction are the two halves of one transform — the target
normalisation, the baseline, the piece calibration and the stage factor fitted here are undone in
:meth:`AffinityPredictor.predict_records` / :meth:`~AffinityPredictor.predict_graph`, and the
evaluation helpers price pieces exactly as the predictor does; split apart they would drift.

Persistence: :meth:`AffinityPredictor.save` / :func:`load_predictor` use joblib, which unpickles —
load only files you produced (the packaged default was trained by ``benchmarks/bench_predictor.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..cluster.types import DeviceFeatures
from ..errors import InputError
from .features import (
    FEATURE_NAMES,
    effective_cores,
    feature_matrix,
    graph_node_records,
    op_family,
    touched_param_bytes,
)

# Bump when features or the saved layout change; a predictor of another version is refused.
PREDICTOR_VERSION = 3
DEFAULT_PREDICTOR_PATH = Path(__file__).parent / "data" / "predictor.joblib"
# Hyper-parameters: small trees with L2 and a floor on leaf size, because the training set is
# small (thousands of noisy rows) and we care about unseen models, not the training fit. In
# leave-one-model-out cross validation on the training models (`bench_predictor.py --cv`) the
# piece WAPE hardly moves with them: 45% with these, 44% for 100 or 400 trees, >= 20 rows per
# leaf or 31 leaves (one thread 27-30%) — within the folds' noise; 31 leaves doubles the file.
DEFAULT_PARAMS: dict[str, Any] = {
    "loss": "absolute_error",
    "max_iter": 200,
    "learning_rate": 0.06,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 8,
    "l2_regularization": 1.0,
}
# Times below this are timer noise (perf_counter + interpreter ~1 us); clip to keep logs sane.
MIN_TIME_S = 1e-7


def host_features(threads: int = 1, quota: float | None = None) -> DeviceFeatures:
    """Device features of this host under a quota (``None`` = all cores) and thread count."""
    cores = os.cpu_count() or 1
    return DeviceFeatures(
        cores=cores,
        threads=int(threads),
        freq_ghz=None,
        quota=float(quota) if quota is not None else float(cores),
    )


@cache
def host_clock_ghz() -> float | None:
    """This host's nominal clock from /proc/cpuinfo (``None`` if unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":")[1]) / 1000.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def _as_training_device(dev: DeviceFeatures) -> tuple[DeviceFeatures, float]:
    """Map a described device onto the training domain: (host-like features, time multiplier)."""
    scale = 1.0
    host = host_clock_ghz()
    if dev.freq_ghz is not None and host is not None:
        scale = host / dev.freq_ghz
    like = DeviceFeatures(cores=dev.cores, threads=dev.threads, freq_ghz=None, quota=dev.quota)
    return like, scale


# Baseline terms per node: constant (dispatch overhead), FLOPs, activation bytes, parameter bytes.
_N_TERMS = 4
# Families with fewer training rows than this share the global baseline fit.
_MIN_FAMILY_ROWS = 8


def _design(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    rows = [
        [1.0, float(r["flops"]), float(r["in_bytes"] + r["out_bytes"]), touched_param_bytes(r)]
        for r in records
    ]
    return np.array(rows, dtype=np.float64).reshape(len(records), _N_TERMS)


def _families(records: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for r in records:
        shape = r.get("shape") or []
        in_shape = r.get("in_shape") or []
        numel = float(math.prod(shape)) if shape else 0.0
        cin = float(in_shape[1]) if len(in_shape) >= 2 else 0.0
        out.append(op_family(str(r["op"]), float(r["flops"]), numel, cin))
    return out


def _fit_baseline(
    records: Sequence[Mapping[str, Any]], t_one_core: np.ndarray
) -> dict[str, tuple[float, ...]]:
    """Per-family non-negative coefficients minimising the *relative* squared error."""
    from scipy.optimize import nnls

    A = _design(records)
    fams = np.array(_families(records))

    def fit(mask: np.ndarray) -> tuple[float, ...]:
        coef, _ = nnls(A[mask] / t_one_core[mask, None], np.ones(int(mask.sum())))
        if coef[0] <= 0:  # keep a positive floor so the baseline is never 0
            coef[0] = float(np.median(t_one_core[mask])) * 1e-3
        return tuple(float(c) for c in coef)

    out = {"*": fit(np.ones(len(records), dtype=bool))}
    for f in sorted(set(fams)):
        mask = fams == f
        if mask.sum() >= _MIN_FAMILY_ROWS:
            out[f] = fit(mask)
    return out


def _baseline(
    records: Sequence[Mapping[str, Any]], coefs: Mapping[str, tuple[float, ...]]
) -> np.ndarray:
    A = _design(records)
    C = np.array([coefs.get(f, coefs["*"]) for f in _families(records)]).reshape(A.shape)
    return np.maximum((A * C).sum(axis=1), MIN_TIME_S)


@dataclass(frozen=True)
class GraphPrediction:
    """Predicted seconds per node (by name) and per piece (in order) on one device."""

    node_s: Mapping[str, float]
    piece_s: tuple[float, ...]

    @property
    def total_s(self) -> float:
        return float(sum(self.piece_s))


@dataclass(frozen=True)
class AffinityPredictor:
    """A fitted predictor; build with :func:`train_predictor`, persist with :meth:`save`."""

    estimator: Any = field(repr=False)
    piece_scale: float = 1.0
    info: Mapping[str, Any] = field(default_factory=dict)
    baseline: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: {"*": (1e-5, 0.0, 0.0, 0.0)}
    )

    def predict_records(
        self, records: Sequence[Mapping[str, Any]], device: DeviceFeatures
    ) -> np.ndarray:
        """Predicted seconds for one graph's node records, in execution order (see
        :func:`~coinfer.profile.features.node_record`; each node's context is the one before)."""
        if not records:
            return np.zeros(0)
        like, scale = _as_training_device(device)
        X = feature_matrix(records, [like] * len(records))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            y = self.estimator.predict(X)
        return np.exp(y) * _baseline(records, self.baseline) / effective_cores(like) * scale

    def covers(self, device: DeviceFeatures) -> tuple[bool, str]:
        """Whether ``device`` lies inside the settings the predictor was trained on, and why not.

        Trees do not extrapolate: a 4-thread device predicted by a model trained on 1-2 threads
        would silently be priced like a 2-thread one. The cost model then prefers the analytic
        figure. (Predictors saved without a recorded domain cover everything.)
        """
        dom = self.info.get("domain") if isinstance(self.info, Mapping) else None
        if not dom:
            return True, "no training domain recorded"
        lo_t, hi_t = dom["threads"]
        lo_q, hi_q = dom["quota"]
        # quotas a little outside the trained range are fine: the target is quota-normalised
        if not lo_t <= device.threads <= hi_t:
            return False, f"threads {device.threads} outside the trained range {lo_t}-{hi_t}"
        q = min(device.quota, float(device.threads))
        if not 0.5 * lo_q <= q <= 2.0 * hi_q:
            return (
                False,
                f"quota {device.quota:g} outside the trained range {lo_q:g}-{hi_q:g} (x/÷2)",
            )
        return True, "inside the training domain"

    def predict_graph(self, graph: Any, device: DeviceFeatures) -> GraphPrediction:
        """Per-node and per-piece predicted times of a captured graph on ``device``."""
        records = graph_node_records(graph)
        times = self.predict_records(records, device)
        node_s = {r["name"]: float(t) for r, t in zip(records, times, strict=True)}
        pieces = tuple(self.piece_scale * sum(node_s[n] for n in p.nodes) for p in graph.pieces)
        return GraphPrediction(node_s, pieces)

    def save(self, path: str | Path) -> None:
        import joblib

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "version": PREDICTOR_VERSION,
            "features": list(FEATURE_NAMES),
            "estimator": self.estimator,
            "piece_scale": self.piece_scale,
            "baseline": {k: list(v) for k, v in self.baseline.items()},
            "info": dict(self.info),
        }
        joblib.dump(payload, path, compress=3)


def load_predictor(path: str | Path | None = None) -> AffinityPredictor:
    """Load a saved predictor (default: the one shipped in the package).

    Raises
    ------
    InputError
        Missing file, not a predictor, or trained with another feature set / version.
    """
    import joblib

    p = Path(path) if path is not None else DEFAULT_PREDICTOR_PATH
    if not p.exists():
        raise InputError(
            f"{p}: predictor file not found (train one with benchmarks/bench_predictor.py)"
        )
    try:
        payload = joblib.load(p)
    except Exception as exc:  # joblib raises many kinds for a corrupt file
        raise InputError(f"{p}: not a coinfer predictor file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("version") != PREDICTOR_VERSION:
        raise InputError(
            f"{p}: predictor version {payload.get('version') if isinstance(payload, dict) else '?'} "
            f"is not the supported version {PREDICTOR_VERSION}"
        )
    if tuple(payload.get("features", ())) != FEATURE_NAMES:
        raise InputError(f"{p}: predictor was trained on a different feature set; retrain it")
    baseline = {k: tuple(float(c) for c in v) for k, v in payload.get("baseline", {}).items()}
    if "*" not in baseline:
        raise InputError(f"{p}: predictor file has no baseline; retrain it")
    return AffinityPredictor(
        payload["estimator"], float(payload["piece_scale"]), payload.get("info", {}), baseline
    )


@cache
def default_predictor() -> AffinityPredictor:
    """The packaged predictor (loaded once per process)."""
    return load_predictor(DEFAULT_PREDICTOR_PATH)


# ----- training ------------------------------------------------------------------------------------


def profile_device(profile: Mapping[str, Any]) -> DeviceFeatures:
    """The device features a profile was measured on (this host under its quota/threads)."""
    return host_features(int(profile["threads"]), profile.get("quota"))


def profile_rows(
    profile: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[DeviceFeatures], np.ndarray]:
    """Training rows of one profile: node records, their device, measured seconds."""
    dev = profile_device(profile)
    recs = [dict(r) for r in profile["nodes"]]
    y = np.array([max(float(r["time_s"]), MIN_TIME_S) for r in recs])
    return recs, [dev] * len(recs), y


# Profiles with at least this many threads get piece-calibrated node targets (module docstring).
PIECE_CALIBRATED_THREADS = 2


def piece_calibrated(profile: Mapping[str, Any], y: np.ndarray, piece_scale: float) -> np.ndarray:
    """Node times ``y`` (in ``profile["nodes"]`` order) rescaled so that, per piece, ``piece_scale``
    times the sum of its nodes equals the piece's measured time (nodes in no piece keep theirs)."""
    index = {str(r["name"]): i for i, r in enumerate(profile["nodes"])}
    out = np.array(y, dtype=np.float64)
    for pc in profile["pieces"]:
        idx = [index[n] for n in pc["nodes"] if n in index]
        total = float(y[idx].sum()) if idx else 0.0
        if total > 0 and pc["time_s"] > 0:
            out[idx] = y[idx] * (float(pc["time_s"]) / total / piece_scale)
    return np.maximum(out, MIN_TIME_S)


def train_predictor(
    profiles: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    calibrate_pieces: bool = True,
) -> AffinityPredictor:
    """Fit a predictor on measured profiles (same data + seed -> same model).

    ``calibrate_pieces=False`` keeps the raw node times at every thread count (the model before
    piece calibration; ``bench_predictor.py --cv`` compares the two).
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    # the stage factor, from the profiles whose node targets stay raw (one thread)
    ratios = [
        pc["time_s"] / pc["nodes_sum_s"]
        for prof in profiles
        if not (calibrate_pieces and int(prof["threads"]) >= PIECE_CALIBRATED_THREADS)
        for pc in prof["pieces"]
        if pc["nodes_sum_s"] > 0
    ]
    piece_scale = float(np.median(ratios)) if ratios else 1.0
    recs: list[dict[str, Any]] = []
    devs: list[DeviceFeatures] = []
    ys: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    for prof in profiles:
        r, d, y = profile_rows(prof)
        if calibrate_pieces and int(prof["threads"]) >= PIECE_CALIBRATED_THREADS:
            y = piece_calibrated(prof, y, piece_scale)
        recs += r
        devs += d
        ys.append(y)
        xs.append(feature_matrix(r, d))  # per profile: a node's context is its own graph's
    if not recs:
        raise InputError("no training rows: give at least one profile with nodes")
    X = np.vstack(xs)
    y = np.concatenate(ys)
    t_one_core = y * np.array([effective_cores(d) for d in devs])
    baseline = _fit_baseline(recs, t_one_core)
    target = np.log(t_one_core) - np.log(_baseline(recs, baseline))
    est = HistGradientBoostingRegressor(random_state=seed, **{**DEFAULT_PARAMS, **(params or {})})
    from threadpoolctl import threadpool_limits

    # One OpenMP thread: on a small, shared machine the default pool spins on barriers and a
    # sub-second fit took ~40 s when the other cores were busy (measured here).
    with threadpool_limits(limits=1):
        est.fit(X, target)
    threads = [d.threads for d in devs]
    quotas = [d.quota for d in devs]
    info = {
        # the device settings the trees have seen; see AffinityPredictor.covers
        "domain": {"threads": [min(threads), max(threads)], "quota": [min(quotas), max(quotas)]},
        "rows": len(recs),
        "models": sorted({str(p["model"]) for p in profiles}),
        "settings": sorted({f"q={p.get('quota')},t={p['threads']}" for p in profiles}),
        "seed": seed,
    }
    return AffinityPredictor(est, piece_scale, info, baseline)


# ----- evaluation ----------------------------------------------------------------------------------


def error_summary(true_s: Sequence[float], pred_s: Sequence[float]) -> dict[str, float]:
    """MAPE (%) and the share (%) of predictions within ±10% and ±20% of the measurement."""
    t = np.asarray(true_s, dtype=float)
    p = np.asarray(pred_s, dtype=float)
    if t.size == 0:
        return {
            "n": 0,
            "mape": math.nan,
            "wape": math.nan,
            "within10": math.nan,
            "within20": math.nan,
        }
    rel = np.abs(p - t) / np.maximum(t, MIN_TIME_S)
    return {
        "n": int(t.size),
        "mape": float(100 * rel.mean()),
        # time-weighted: sum |error| / sum time — what a planner summing pieces feels
        "wape": float(100 * np.abs(p - t).sum() / max(t.sum(), MIN_TIME_S)),
        "within10": float(100 * (rel <= 0.10).mean()),
        "within20": float(100 * (rel <= 0.20).mean()),
    }


def evaluate_on_profiles(
    predictor: AffinityPredictor, profiles: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Errors on measured profiles: per node (overall and per op family) and per piece."""
    node_true: list[float] = []
    node_pred: list[float] = []
    fam: list[str] = []
    piece_true: list[float] = []
    piece_pred: list[float] = []
    for prof in profiles:
        recs, _, y = profile_rows(prof)
        pred = predictor.predict_records(recs, profile_device(prof))
        node_true += list(y)
        node_pred += list(pred)
        fam += _families(recs)
        by_name = {r["name"]: float(t) for r, t in zip(recs, pred, strict=True)}
        for pc in prof["pieces"]:
            piece_true.append(float(pc["time_s"]))
            piece_pred.append(predictor.piece_scale * sum(by_name.get(n, 0.0) for n in pc["nodes"]))
    per_family = {}
    fam_arr = np.array(fam)
    for f in sorted(set(fam)):
        mask = fam_arr == f
        per_family[f] = error_summary(np.array(node_true)[mask], np.array(node_pred)[mask])
    return {
        "nodes": error_summary(node_true, node_pred),
        "per_family": per_family,
        "pieces": error_summary(piece_true, piece_pred),
    }


__all__ = [
    "DEFAULT_PREDICTOR_PATH",
    "PREDICTOR_VERSION",
    "AffinityPredictor",
    "GraphPrediction",
    "default_predictor",
    "error_summary",
    "evaluate_on_profiles",
    "host_features",
    "load_predictor",
    "piece_calibrated",
    "profile_rows",
    "train_predictor",
]
