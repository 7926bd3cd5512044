"""Statistics for ablation tables: the paired comparison of a row with the baseline, over seeds.

A row and its baseline are paired by seed. With ``n`` pairs and differences ``d_i``:

- ``p`` is the two-sided paired t-test (``scipy.stats.ttest_rel``, df = n − 1);
- the CI of the mean difference is the Student t interval ``mean ± t(0.975, n − 1) · sd / √n``,
  the interval that belongs to that test (it excludes 0 exactly when p < 0.05). From
  :data:`BOOTSTRAP_MIN_PAIRS` pairs on, a BCa bootstrap (``scipy.stats.bootstrap``) is used
  instead. A percentile bootstrap is never used for few pairs: with 2 pairs it always lies
  between the two observed differences, and its coverage is at most 50 %, not 95 %;
- with fewer than 2 pairs, or differences that are all equal (sd = 0), there is no estimate of
  the spread: p and the CI are NaN (shown as ``–``), never 0;
- :func:`holm` adjusts the p-values of a table's rows against one baseline (Holm 1979);
- :func:`seeds_needed` is the number of pairs a paired t-test needs to detect an effect with
  80 % power, from the observed sd of the differences (noncentral t, ``scipy.stats.nct``);
- :func:`binomial_se` is the measurement error of one top-1 on a finite validation set.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "ALPHA",
    "BOOTSTRAP_MIN_PAIRS",
    "BOOTSTRAP_SAMPLES",
    "CI_LEVEL",
    "Comparison",
    "POWER",
    "binomial_se",
    "compare_paired",
    "holm",
    "mean_ci",
    "paired_power",
    "seeds_needed",
]

CI_LEVEL = 0.95
ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_MIN_PAIRS = 10
BOOTSTRAP_SAMPLES = 9_999
BOOTSTRAP_SEED = 0
MAX_SEEDS = 100_000  # seeds_needed gives inf above this
T_INTERVAL = "t"
BCA_INTERVAL = "BCa bootstrap"


@dataclass(frozen=True)
class Comparison:
    """A row against the baseline over the seeds both have finished.

    Attributes:
        n: number of matching seeds (pairs).
        delta: mean paired difference (row minus baseline); NaN without pairs.
        sd: sample sd of the paired differences (ddof = 1); NaN when n < 2.
        t: paired t statistic; NaN when n < 2 or sd = 0.
        p: two-sided p-value of the paired t-test; NaN when n < 2 or sd = 0.
        ci_low: lower end of the 95 % CI of ``delta``; NaN when n < 2 or sd = 0.
        ci_high: upper end.
        interval: which CI: ``t`` (n < :data:`BOOTSTRAP_MIN_PAIRS`), ``BCa bootstrap``, or ``""``
            when there is none.
    """

    n: int
    delta: float
    sd: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    interval: str


def mean_ci(diffs: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, str]:
    """CI of the mean of paired differences: Student t below 10 pairs, BCa bootstrap from 10.

    Args:
        diffs: paired differences.
        level: coverage, 0.95 by default.

    Returns:
        ``(low, high, interval)``; NaNs and ``""`` with fewer than 2 values or zero spread.

    Example:
        >>> low, high, kind = mean_ci([1.0, 3.0])  # mean 2, sd/√n = 1, t(0.975, 1) = 12.706
        >>> round(low, 3), round(high, 3), kind
        (-10.706, 14.706, 't')
    """
    values = np.asarray(diffs, dtype=float)
    n = len(values)
    if n < 2 or not np.all(np.isfinite(values)) or float(values.std(ddof=1)) == 0.0:
        return math.nan, math.nan, ""
    if n >= BOOTSTRAP_MIN_PAIRS:
        seed = np.random.default_rng(BOOTSTRAP_SEED)
        # scipy >= 1.15 names the generator ``rng``; older releases ``random_state``
        key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
        res = stats.bootstrap((values,), np.mean, n_resamples=BOOTSTRAP_SAMPLES, confidence_level=level,
                              method="BCa", **{key: seed})
        return float(res.confidence_interval.low), float(res.confidence_interval.high), BCA_INTERVAL
    low, high = stats.t.interval(level, n - 1, loc=float(values.mean()), scale=float(stats.sem(values)))
    return float(low), float(high), T_INTERVAL


def compare_paired(row: dict[int, float], baseline: dict[int, float]) -> Comparison:
    """Paired comparison of two conditions over their common seeds.

    Args:
        row: seed -> metric of the compared condition (finished runs only).
        baseline: seed -> metric of the baseline condition.

    Returns:
        The :class:`Comparison`.

    Example:
        >>> c = compare_paired({0: 51.0, 1: 53.0, 2: 52.0}, {0: 50.0, 1: 50.0, 2: 50.0})
        >>> c.n, c.delta, round(c.p, 4), c.interval
        (3, 2.0, 0.0742, 't')
    """
    seeds = sorted(set(row) & set(baseline))
    a = np.array([row[s] for s in seeds], dtype=float)
    b = np.array([baseline[s] for s in seeds], dtype=float)
    diffs = a - b
    n = len(diffs)
    nan = math.nan
    if n == 0:
        return Comparison(0, nan, nan, nan, nan, nan, nan, "")
    delta = float(diffs.mean())
    if n < 2:
        return Comparison(1, delta, nan, nan, nan, nan, nan, "")
    sd = float(diffs.std(ddof=1))
    if sd == 0.0 or not math.isfinite(sd):  # no spread to estimate: no test, no interval
        return Comparison(n, delta, sd, nan, nan, nan, nan, "")
    test = stats.ttest_rel(a, b)
    low, high, interval = mean_ci(diffs)
    return Comparison(n, delta, sd, float(test.statistic), float(test.pvalue), low, high, interval)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family = the non-NaN entries); NaN stays NaN.

    The i-th smallest of m p-values becomes ``max over j <= i of min(1, (m - j + 1) p_(j))``,
    so a row is significant at α after adjustment exactly when Holm's procedure rejects it.

    Example:
        >>> [round(p, 6) for p in holm([0.01, 0.04, 0.03, float("nan")])]
        [0.03, 0.06, 0.06, nan]
    """
    values = [float(p) for p in pvalues]
    finite = sorted((p, i) for i, p in enumerate(values) if not math.isnan(p))
    m = len(finite)
    out = [math.nan] * len(values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def paired_power(n: int, sd: float, effect: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t-test with ``n`` pairs against a true mean difference ``effect``.

    ``P(|T| > t(1 − α/2, n − 1))`` with ``T`` noncentral t, df = n − 1, noncentrality
    ``effect / (sd / √n)``.
    """
    if n < 2:
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    nc = abs(effect) / (sd / math.sqrt(n))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(sd: float, effect: float, *, power: float = POWER, alpha: float = ALPHA) -> float:
    """Smallest number of seeds (pairs) whose paired t-test has ``power`` to detect ``effect``.

    Args:
        sd: sd of the paired differences (observed).
        effect: the true mean difference to detect, in the metric's units (e.g. 1 point of top-1).
        power: wanted power, 0.8 by default.
        alpha: two-sided significance level, 0.05 by default.

    Returns:
        The number (at least 2), ``inf`` above 100,000, NaN when ``sd`` is NaN or 0 (no estimate
        of the spread) or ``effect`` is 0.

    Example:
        >>> seeds_needed(2.0, 1.0)  # d = 0.5: the classic 34 of G*Power's one-sample t-test
        34
    """
    if not (math.isfinite(sd) and sd > 0) or not math.isfinite(effect) or effect == 0:
        return math.nan
    if paired_power(2, sd, effect, alpha) >= power:
        return 2
    low, high = 2, 4  # power(low) < power <= power(high); power grows with n
    while paired_power(high, sd, effect, alpha) < power:
        low, high = high, high * 2
        if low > MAX_SEEDS:
            return math.inf
    while high - low > 1:
        mid = (low + high) // 2
        if paired_power(mid, sd, effect, alpha) >= power:
            high = mid
        else:
            low = mid
    return high if high <= MAX_SEEDS else math.inf


def binomial_se(top1: float, n_val: float) -> float:
    """Binomial standard error (points) of a top-1 (%) measured on ``n_val`` images.

    ``100 · sqrt(p (1 − p) / n_val)`` with ``p = top1 / 100``: how much one run's top-1 would
    move from the finite validation set alone, apart from seed-to-seed spread.

    Example:
        >>> round(binomial_se(20.0, 400), 6)  # sqrt(0.2 * 0.8 / 400) = 0.02
        2.0
    """
    if not (math.isfinite(top1) and math.isfinite(n_val)) or n_val <= 0:
        return math.nan
    p = min(1.0, max(0.0, top1 / 100.0))
    return 100.0 * math.sqrt(p * (1.0 - p) / n_val)
