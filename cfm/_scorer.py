"""Scorer: what batch scoring needs of a fitted model, bound to one state.

Made by ``BaseFM._scorer()``; the scoring pipeline knows no estimator class.
(r-data's scoring layer defines the same dataclass; the two are unified at
merge.)
"""
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Scorer:
    n_features: int
    zero_based: Optional[bool]      # id base of the training input (None: unknown)
    logistic: bool                  # predictions go through the sigmoid (classifier)
    decision: Callable              # (Xc, n_threads) -> float64 raw scores, one state
    encode_y: Optional[Callable]    # y -> labels for --eval metrics (classifier), else None
    n_jobs: Optional[int]           # the estimator's n_jobs
