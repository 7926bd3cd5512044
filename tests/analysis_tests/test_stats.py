"""The paired comparison, its interval, Holm's correction and the seeds needed, against values a
reader can check: scipy's own distributions, textbook numbers and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis._stats import binomial_se, compare_paired, holm, mean_ci, seeds_needed

BASE = {0: 50.0, 1: 52.0, 2: 51.0, 3: 49.5, 4: 50.5}


@pytest.mark.parametrize("diffs", [[1.5, -0.5], [2.0, 0.5, 3.5], [0.4, -1.2, 2.6, 1.1, 0.3]])
def test_ci_is_the_t_interval_of_the_mean_difference(diffs: list[float]) -> None:
    """n = 2, 3, 5 pairs: the CI is scipy's t interval (df = n − 1) around the mean difference."""
    row = {s: BASE[s] + d for s, d in zip(BASE, diffs)}
    got = compare_paired(row, BASE)
    n = len(diffs)
    want = sps.t.interval(0.95, n - 1, loc=np.mean(diffs), scale=np.std(diffs, ddof=1) / math.sqrt(n))
    assert got.n == n and got.interval == "t"
    assert (got.ci_low, got.ci_high) == pytest.approx(want, rel=1e-12)
    assert got.p == pytest.approx(sps.ttest_rel(list(row.values()), [BASE[s] for s in row]).pvalue, rel=1e-12)


def test_ci_with_two_pairs_checked_by_hand() -> None:
    """Differences +1 and +3: mean 2, sd √2, standard error √2/√2 = 1, t(0.975, df 1) = 12.706 (a
    t table's first row), so the CI is 2 ± 12.706 = [−10.706, +14.706]; t = 2/1 = 2 and the
    two-sided p of a Cauchy (t with 1 df) is 1 − 2·atan(2)/π = 0.2952. A percentile bootstrap would
    have said [+1, +3], "significant", beside p = 0.30."""
    got = compare_paired({0: 51.0, 1: 55.0}, {0: 50.0, 1: 52.0})
    assert got.delta == 2.0 and got.sd == pytest.approx(math.sqrt(2))
    assert got.ci_low == pytest.approx(-10.706, abs=5e-4) and got.ci_high == pytest.approx(14.706, abs=5e-4)
    assert got.t == pytest.approx(2.0) and got.p == pytest.approx(0.2952, abs=5e-5)


@pytest.mark.parametrize("diffs", [[1.9, 2.1], [0.2, 2.5, 1.1], [1.0, 2.0, 0.5, 1.6], [-0.4, 1.3, 0.2, 0.9, 0.1]])
def test_ci_excludes_zero_exactly_when_p_is_below_five_percent(diffs: list[float]) -> None:
    row = {s: BASE[s] + d for s, d in zip(BASE, diffs)}
    got = compare_paired(row, BASE)
    assert (got.ci_low > 0 or got.ci_high < 0) == (got.p < 0.05)


def test_identical_differences_give_no_p_and_no_ci() -> None:
    """Every seed +1 (sd = 0): nothing estimates the spread, so p and CI are missing, never p = 0."""
    same = compare_paired({0: 51.0, 1: 53.0, 2: 52.0}, {0: 50.0, 1: 52.0, 2: 51.0})
    assert same.delta == pytest.approx(1.0) and same.sd == 0.0
    assert math.isnan(same.p) and math.isnan(same.t) and math.isnan(same.ci_low) and math.isnan(same.ci_high)
    assert same.interval == ""
    assert math.isnan(seeds_needed(same.sd, 1.0))


def test_too_few_pairs_give_no_p_and_no_ci() -> None:
    one = compare_paired({0: 50.0, 1: 52.0}, {1: 49.0, 5: 40.0})  # seed 1 is the only pair
    assert (one.n, one.delta) == (1, 3.0) and math.isnan(one.p) and math.isnan(one.ci_low) and math.isnan(one.sd)
    none = compare_paired({0: 50.0}, {1: 49.0})
    assert none.n == 0 and math.isnan(none.delta)


def test_bootstrap_only_from_ten_pairs_and_labelled() -> None:
    rng = np.random.default_rng(3)
    nine, twelve = rng.normal(1.0, 2.0, 9), rng.normal(1.0, 2.0, 12)
    assert mean_ci(nine)[2] == "t"
    low, high, kind = mean_ci(twelve)
    assert kind == "BCa bootstrap" and low < twelve.mean() < high
    assert mean_ci(twelve) == (low, high, kind)  # a fixed seed: the same report twice


def test_holm_equals_a_hand_computation() -> None:
    """p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06,
    0.04·1 = 0.04 → raised to the running maximum 0.06. A NaN row is not part of the family."""
    got = holm([0.01, 0.04, float("nan"), 0.03, 0.005])
    assert got[:2] == pytest.approx([0.03, 0.06]) and math.isnan(got[2])
    assert got[3:] == pytest.approx([0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 0.5·2 = 1.0, then max(1.0, 0.6): capped at 1
    assert holm([]) == []


def test_seeds_needed_equals_a_hand_power_calculation() -> None:
    """sd of the differences 2 points, effect 1 point: standardized d = 0.5. The textbook answer for
    a two-sided one-sample (paired) t-test at α = 0.05 and 80 % power is 34 pairs (G*Power, actual
    power 0.808; 33 pairs give 0.795). By hand with Guenther's approximation:
    n = (z.975 + z.80)² / d² + z.975² / 2 = (1.960 + 0.842)² / 0.25 + 1.921 = 31.40 + 1.92 = 33.3 → 34.
    A simulation of 400,000 studies gave 0.796 for 33 pairs and 0.808 for 34."""
    assert seeds_needed(2.0, 1.0) == 34
    assert seeds_needed(2.0, -1.0) == 34  # the direction of the effect does not matter
    assert seeds_needed(1.0, 1.0) == 10  # d = 1: the textbook 10 pairs (power 0.803)
    assert seeds_needed(4.0, 1.0) > seeds_needed(2.0, 1.0)
    assert math.isnan(seeds_needed(float("nan"), 1.0))


def test_binomial_standard_error_in_points() -> None:
    """20 % top-1 on 400 images: sqrt(0.2 · 0.8 / 400) = 0.02, i.e. 2.0 points."""
    assert binomial_se(20.0, 400) == pytest.approx(2.0)
    assert binomial_se(50.0, 10_000) == pytest.approx(0.5)
    assert math.isnan(binomial_se(50.0, float("nan")))
