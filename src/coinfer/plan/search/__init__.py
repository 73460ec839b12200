"""Search-based planners over single-device stages: particle swarms (``pso``: S2's PSOMW and
S4's evolutionary placement) and Bayesian optimisation (``bayes``: Flexi-BOPI, S8)."""

from .bayes import BayesOptions, plan_bayes
from .pso import PSOOptions, plan_pso

__all__ = ["BayesOptions", "PSOOptions", "plan_bayes", "plan_pso"]
