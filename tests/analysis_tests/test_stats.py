"""The paired t-test and bootstrap CI against independent computations (scipy, brute force)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis._stats import bootstrap_ci, compare_paired, t_two_sided_p


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 8, 13, 30])
@pytest.mark.parametrize("t", [0.05, 0.8, 1.96, 3.5, 12.0])
def test_t_p_value_matches_scipy(t: float, df: int) -> None:
    assert t_two_sided_p(t, df) == pytest.approx(2 * sps.t.sf(t, df), abs=1e-12)
    assert t_two_sided_p(-t, df) == t_two_sided_p(t, df)


def test_t_p_value_rejects_fractional_df() -> None:
    with pytest.raises(ValueError, match="df must be a positive integer"):
        t_two_sided_p(1.0, 2.5)


def test_paired_comparison_matches_scipy_ttest_rel() -> None:
    row = {0: 61.2, 1: 58.9, 2: 63.4, 3: 60.0}
    base = {0: 57.0, 1: 58.1, 2: 59.9, 3: 55.2, 9: 99.0}  # seed 9 has no partner: left out
    got = compare_paired(row, base)
    a = np.array([row[s] for s in range(4)])
    b = np.array([base[s] for s in range(4)])
    want = sps.ttest_rel(a, b)
    assert got.n == 4
    assert got.delta == pytest.approx(float(np.mean(a - b)))
    assert got.t == pytest.approx(want.statistic)
    assert got.p == pytest.approx(want.pvalue, rel=1e-9)


def test_bootstrap_ci_is_the_exact_percentile_interval() -> None:
    diffs = [0.5, 2.0, -1.0, 3.5]
    means = sorted(sum(diffs[i] for i in idx) / 4 for idx in itertools.product(range(4), repeat=4))
    assert len(means) == 256
    low, high = bootstrap_ci(diffs)
    assert low == pytest.approx(float(np.percentile(means, 2.5)))
    assert high == pytest.approx(float(np.percentile(means, 97.5)))
    assert min(diffs) <= low < high <= max(diffs)


def test_comparison_with_too_few_pairs() -> None:
    one = compare_paired({0: 50.0, 1: 52.0}, {1: 49.0})
    assert (one.n, one.delta) == (1, 3.0) and math.isnan(one.p) and math.isnan(one.ci_low)
    none = compare_paired({0: 50.0}, {1: 49.0})
    assert none.n == 0 and math.isnan(none.delta)
    same = compare_paired({0: 51.0, 1: 52.0}, {0: 50.0, 1: 51.0})  # identical differences
    assert same.delta == 1.0 and same.p == 0.0 and same.t == math.inf
