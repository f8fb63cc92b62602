"""Mean and Student-t confidence interval of one metric over the seeds of a cell."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """Mean over n seeds with a two-sided t-interval whose `low` and `high` are None when n = 1."""

    mean: float
    low: float | None
    high: float | None
    n: int


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Estimate the mean of `values` (one per seed) with the t-interval mean +- t_{n-1} * s / sqrt(n).

    `s` is the sample standard deviation (ddof=1). With one value there is no spread to measure, so the
    interval is None. Raises ValueError for an empty sequence.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(data.mean())
    if data.size == 1:
        return Estimate(mean=mean, low=None, high=None, n=1)
    critical = float(stats.t.ppf(0.5 + confidence / 2, df=data.size - 1))
    half_width = critical * float(data.std(ddof=1)) / math.sqrt(data.size)
    return Estimate(mean=mean, low=mean - half_width, high=mean + half_width, n=int(data.size))
