"""The Gaussian-process surrogate of the Bayesian plan search: noise model, fit, acquisition.

Split from :mod:`.bayes` (which owns the plan encoding and the search loop) because these are
the statistics alone: given measured configurations as feature rows and their logged
measurements, how noisy is each mean (:func:`noise_variances`), what does the GP believe
(:func:`fit_gp`), and how much is a candidate expected to improve on the incumbent
(:func:`expected_improvement`). Everything is in ``log`` units of the measured value, so a
noise or an improvement of 0.01 means about 1 %.

Noise models (:data:`NoiseModel`):

- ``"heteroscedastic"`` (Flexi-BOPI): each configuration's noise variance is its own sample
  variance of the logs, shrunk toward the pooled estimate with weight ``n - 1`` vs
  :data:`PRIOR_WEIGHT` — measurements differ in how noisy they are from one configuration to
  the next (a plan on a throttled board jitters more), and the GP should trust quiet
  configurations more;
- ``"homoscedastic"``: one pooled variance for every configuration — the textbook GP, for a
  fair comparison: the only difference is whether the noise may vary by configuration.

Both divide by the configuration's number of measurements (the GP sees the mean of ``n``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

NoiseModel = Literal["heteroscedastic", "homoscedastic"]
NOISE_MODELS: tuple[str, ...] = ("heteroscedastic", "homoscedastic")

# Pseudo-count of the pooled noise estimate when shrinking a configuration's own estimate:
# with 2 measurements (1 degree of freedom) the pooled value still weighs 2/3.
PRIOR_WEIGHT = 2.0
# Noise floor on log-values (0.1 % relative): keeps the GP well conditioned when a custom
# evaluator is noiseless.
MIN_LOG_VAR = 1e-6
# Exploration offset of expected improvement, in log units (0.1 %): a tiny bias to explore.
EI_XI = 1e-3
# Pooled log-variance assumed until some configuration was measured twice: a guess of 5 %
# relative noise (the default evaluator's), replaced by the data as soon as repeats exist.
DEFAULT_LOG_VAR = 0.05**2
# A configuration's within-measurement noise may scale the pooled variance by at most this
# factor either way: a handful of timed results can make one batch-means estimate wild.
MAX_NOISE_SHAPE = 10.0


def noise_variances(
    logs: Sequence[np.ndarray], model: NoiseModel, within: Sequence[float] | None = None
) -> np.ndarray:
    """Per configuration, the noise variance of its mean log-measurement (the GP's ``alpha``).

    ``logs[i]`` are configuration ``i``'s measurements, in log units; ``within[i]`` (optional)
    the mean squared relative standard error its measurer reported from inside each
    measurement (``0`` = none reported).

    Heteroscedastic: the shrinkage target of configuration ``i`` is the pooled variance scaled
    by its *noise shape* — its ``within`` over the median ``within`` of the configurations
    that have one (1 without). Why scale rather than use ``within`` directly: repeats on a
    shared host also drift between measurements, which no single measurement sees, so the
    level comes from the repeats and only the ratio between configurations from inside them —
    which a search that measures most configurations once can still learn."""
    pooled_num = sum(float(((lv - lv.mean()) ** 2).sum()) for lv in logs)
    pooled_df = sum(len(lv) - 1 for lv in logs)
    pooled = pooled_num / pooled_df if pooled_df > 0 else DEFAULT_LOG_VAR
    shapes = _noise_shapes(within, len(logs))
    alpha = []
    for lv, shape in zip(logs, shapes, strict=True):
        n = len(lv)
        if model == "homoscedastic":
            var = pooled
        else:
            own = float(lv.var(ddof=1)) if n > 1 else 0.0
            var = ((n - 1) * own + PRIOR_WEIGHT * pooled * shape) / (n - 1 + PRIOR_WEIGHT)
        alpha.append(max(var, MIN_LOG_VAR) / n)
    return np.array(alpha)


def _noise_shapes(within: Sequence[float] | None, n: int) -> list[float]:
    """``within`` over its median among the positive entries, clipped to
    [1 / MAX_NOISE_SHAPE, MAX_NOISE_SHAPE]; 1 where unknown."""
    if within is None:
        return [1.0] * n
    known = [w for w in within if w > 0]
    if not known:
        return [1.0] * n
    mid = float(np.median(known))
    return [
        min(MAX_NOISE_SHAPE, max(1 / MAX_NOISE_SHAPE, w / mid)) if w > 0 else 1.0 for w in within
    ]


def fit_gp(
    X: np.ndarray, z: np.ndarray, alpha: np.ndarray, seed: int, kernel: Any, residual: bool
) -> Any:
    """Fit the GP on feature rows ``X``; ``kernel`` = previous fitted kernel to reuse (no
    optimisation) or None.

    ``residual``: ``z`` are log-residuals against the model prior (zero-mean GP, log units);
    otherwise ``z`` are raw log-values (normalised by sklearn)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern

    if kernel is None:
        # Length scales in feature units (see bayes.encode): moving a few pieces changes the
        # value a lot, moving the whole plan makes it unrelated; the bounds keep the fit there.
        matern = Matern(length_scale=0.5, length_scale_bounds=(0.05, 10.0), nu=2.5)
        if residual:
            # Residuals are log-ratios measured/model with prior mean 0 (the model is right
            # until measurements say otherwise); amplitude 0.3 = "the model may be off by
            # ~35 %", allowed from 0.03 (3 %) to 3 (20x), so unexplored plans stay uncertain
            # and EI keeps exploring them even when every measured one shares one bias.
            kernel = ConstantKernel(0.3**2, (0.03**2, 3.0**2)) * matern
        else:
            # y is normalised to unit variance, so the amplitude stays within (0.05, 20): lower
            # and the GP claims certainty it cannot have after a handful of points (EI then
            # collapses onto re-measuring).
            kernel = ConstantKernel(1.0, (0.05, 20.0)) * matern
        optimizer: Any = "fmin_l_bfgs_b"
    else:
        optimizer = None
    scale = 1.0 if residual else max(float(z.var()), 1e-12)
    gp = GaussianProcessRegressor(
        kernel=kernel,
        alpha=alpha / scale,
        normalize_y=not residual,
        optimizer=optimizer,
        random_state=seed,
    )
    with warnings.catch_warnings():
        # Hyper-parameters at a bound are expected early (few points); not worth a warning.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(X, z)
    return gp


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """Expected improvement (log units: ~ the relative gain) of minimising below ``best``."""
    from scipy.special import ndtr  # the normal CDF; scipy.stats costs ~1 s to import

    sd = np.maximum(sd, 1e-12)
    imp = best - mu - EI_XI
    u = imp / sd
    pdf = np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    return imp * ndtr(u) + sd * pdf
