"""Statistics for ablation tables: mean/std over seeds and the paired comparison with a baseline.

The paired t-test uses the exact Student t distribution for an integer number of degrees of
freedom (Abramowitz & Stegun 26.7.3-4, finite sums in the angle ``atan(t / sqrt(df))``), so no
statistics library is needed. The bootstrap CI is the percentile interval of the mean paired
difference; for up to :data:`EXACT_BOOTSTRAP_MAX` pairs every one of the ``n**n`` resamples is
enumerated (exact and deterministic), above that 4,000 resamples are drawn with a fixed seed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "bootstrap_ci", "compare_paired", "t_two_sided_p"]

EXACT_BOOTSTRAP_MAX = 6
BOOTSTRAP_SAMPLES = 4_000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom.

    Args:
        t: the t statistic (``inf`` gives 0).
        df: degrees of freedom, a positive integer.

    Returns:
        The p-value in [0, 1].

    Example:
        >>> round(t_two_sided_p(2.0, 1), 6)  # Cauchy: 1 - 2 atan(2) / pi
        0.295167
        >>> round(t_two_sided_p(2.776445, 4), 4)
        0.05
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, but got {df!r}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        term, total = 1.0, 0.0
        if df > 1:
            total = term = 1.0
            for k in range(1, (df - 3) // 2 + 1):
                term *= c2 * (2 * k) / (2 * k + 1)
                total += term
            total *= s * math.cos(theta)
        inside = 2.0 / math.pi * (theta + total)
    else:
        term = total = 1.0
        for k in range(1, (df - 2) // 2 + 1):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        inside = s * total
    return min(1.0, max(0.0, 1.0 - inside))


def bootstrap_ci(diffs: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs``.

    Args:
        diffs: paired differences (at least 2).
        level: coverage, 0.95 by default.

    Returns:
        ``(low, high)``; exact over all ``n**n`` resamples when ``n <= 6``.

    Example:
        >>> [round(v, 3) for v in bootstrap_ci([1.0, 2.0, 3.0])]  # 27 resamples, interpolated percentiles
        [1.217, 2.783]
    """
    values = np.asarray(diffs, dtype=float)
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    if n <= EXACT_BOOTSTRAP_MAX:
        index = np.array(list(itertools.product(range(n), repeat=n)))
    else:
        index = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    means = values[index].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return (float(low), float(high))


@dataclass(frozen=True)
class Comparison:
    """A row against the baseline over the seeds both have finished.

    Attributes:
        n: number of matching seeds (pairs).
        delta: mean paired difference (row minus baseline); NaN without pairs.
        t: paired t statistic (NaN when n < 2; ±inf when all differences are equal and non-zero).
        p: two-sided p-value of the paired t-test (NaN when n < 2).
        ci_low: lower end of the 95 % bootstrap CI of ``delta`` (NaN when n < 2).
        ci_high: upper end.
    """

    n: int
    delta: float
    t: float
    p: float
    ci_low: float
    ci_high: float


def compare_paired(row: dict[int, float], baseline: dict[int, float]) -> Comparison:
    """Paired comparison of two conditions over their common seeds.

    Args:
        row: seed -> metric of the compared condition (finished runs only).
        baseline: seed -> metric of the baseline condition.

    Returns:
        The :class:`Comparison`.

    Example:
        >>> c = compare_paired({0: 51.0, 1: 53.0, 2: 52.0}, {0: 50.0, 1: 50.0, 2: 50.0})
        >>> c.n, c.delta, round(c.p, 4)
        (3, 2.0, 0.0742)
    """
    seeds = sorted(set(row) & set(baseline))
    diffs = np.array([row[s] - baseline[s] for s in seeds], dtype=float)
    n = len(diffs)
    if n == 0:
        return Comparison(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    delta = float(diffs.mean())
    if n < 2:
        return Comparison(1, delta, math.nan, math.nan, math.nan, math.nan)
    sd = float(diffs.std(ddof=1))
    if sd == 0.0:
        t = 0.0 if delta == 0.0 else math.copysign(math.inf, delta)
        p = 1.0 if delta == 0.0 else 0.0
    else:
        t = delta / (sd / math.sqrt(n))
        p = t_two_sided_p(t, n - 1)
    low, high = bootstrap_ci(diffs)
    return Comparison(n, delta, t, p, low, high)
