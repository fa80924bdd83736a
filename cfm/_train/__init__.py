"""Training: one epoch loop (loop.py) and the solvers that feed it.

Solvers take explicit inputs (a model state, validated data, resolved
hyper-parameters, a generator, a thread budget, a LoopConfig) and never
import an estimator.  ``SOLVERS`` is the table the estimators look solvers
up in: per solver, its family and the defaults of the parameters whose
meaning depends on it.
"""
from dataclasses import dataclass

import numpy as np

# The coordinate-wise solvers (als, gibbs and what they share) are imported
# when first used: most processes (scoring, per-sample training) never need
# them, and every fresh ``cfm`` process would pay for their import.


@dataclass(frozen=True)
class CoordinateParams:
    """Resolved inputs of the coordinate-wise solvers (als, mcmc)."""

    task: int
    fit_intercept: bool
    n_epochs: int
    l2_w0: float = 0.0
    l2_w: object = None          # None: ALS's default
    l2_v: object = None
    learning_rate: float = 0.0   # named in divergence errors only
    rng: object = None           # mcmc: seeds of the sampler are drawn from it
    n_burn_in: object = None
    n_kept_samples: object = None


def Data(X, normalize, sample_weight):
    """The training data of a coordinate-wise solver (cfm._train.coordinate.Data)."""
    from .coordinate import Data as _Data

    return _Data(X, normalize, sample_weight)


def check_groups(groups, n_features):
    """Validated prior groups (cfm._train.coordinate.check_groups)."""
    from .coordinate import check_groups as _check

    return _check(groups, n_features)


def _run_als(state, data, y, evals, groups, p, config):
    from . import als

    l2_w, l2_v = als.resolved_l2(p.l2_w, p.l2_v)
    res = als.fit(state, data, y, evals, task=p.task, l2_w0=p.l2_w0, l2_w=l2_w, l2_v=l2_v,
                  fit_intercept=p.fit_intercept, n_epochs=p.n_epochs, config=config,
                  lr=p.learning_rate)
    return state, res


def _run_gibbs(state, data, y, evals, groups, p, config):
    from . import gibbs
    from .coordinate import auto_groups

    if groups is None:
        # regression: one prior group per detected one-hot field (better on
        # ratings); classification: one group, as libFM and myFM (auto groups
        # cost up to 0.07 AUC on many-field one-hot data: issue 13,
        # benchmarks/studies/AUTOTUNE_FINDINGS.md section 6)
        groups = auto_groups(data) if p.task == 0 else \
            check_groups(np.zeros(data.n_features, dtype=np.int32), data.n_features)
    group, n_groups = groups
    return gibbs.fit(state, data, y, group, n_groups, evals, task=p.task, rng=p.rng,
                     n_epochs=p.n_epochs, n_burn_in=p.n_burn_in,
                     n_kept_samples=p.n_kept_samples, fit_intercept=p.fit_intercept,
                     config=config)


@dataclass(frozen=True)
class Solver:
    """A solver's family and defaults.  ``run`` (coordinate solvers):
    ``run(state, data, y, evals, groups, CoordinateParams, LoopConfig) -> (state,
    LoopResult)``."""

    name: str
    n_epochs: int                 # default n_epochs
    init_std: float               # default init_std
    normalize: bool               # default normalize
    run: object = None            # None: a per-sample solver (cfm._train.sgd)
    takes_groups: bool = False
    weighted_probit: bool = True  # sample_weight with a probit likelihood
    l1: bool = False              # has L1 regularisation (l1 > 0 allowed)

    @property
    def coordinate(self):
        return self.run is not None


SOLVERS = {
    "sgd": Solver("sgd", 10, 0.03, True),
    "adagrad": Solver("adagrad", 10, 0.03, True),
    "ftrl": Solver("ftrl", 10, 0.03, True, l1=True),
    # libFM's solvers use the raw feature values and init_stdev 0.1
    "als": Solver("als", 30, 0.1, False, run=_run_als),
    "mcmc": Solver("mcmc", 200, 0.1, False, run=_run_gibbs, takes_groups=True,
                   weighted_probit=False),
}

__all__ = ["SOLVERS", "CoordinateParams", "Data", "check_groups"]
