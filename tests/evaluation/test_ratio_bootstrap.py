"""`bootstrap_ratio_interval`: the two-level (runs x items) bootstrap of a ratio of sums."""

import numpy as np
import pytest

from orpo.evaluation.stats import bootstrap_ratio_interval


def test_a_constant_ratio_has_a_zero_width_interval():
    den = np.array([[1, 2, 3], [2, 2, 1]], dtype=float)
    assert bootstrap_ratio_interval(0.25 * den, den) == pytest.approx((0.25, 0.25))


def test_the_interval_holds_the_pooled_ratio_and_is_deterministic():
    rng = np.random.default_rng(0)
    num = rng.integers(0, 2, size=(3, 200)).astype(float)
    den = np.ones_like(num)
    low, high = bootstrap_ratio_interval(num, den, seed=5)
    assert low < num.sum() / den.sum() < high
    assert bootstrap_ratio_interval(num, den, seed=5) == (low, high)


def test_variation_between_runs_widens_the_interval():
    """Same items, but runs that disagree: resampling runs must show it. Each run alone is a constant
    (0.2 or 0.8 of every item), so the items add no spread: the width comes from the runs only."""
    den = np.ones((2, 100))
    agree = np.full((2, 100), 0.5)
    disagree = np.stack([np.full(100, 0.2), np.full(100, 0.8)])
    low_a, high_a = bootstrap_ratio_interval(agree, den)
    low_d, high_d = bootstrap_ratio_interval(disagree, den)
    assert high_a - low_a == pytest.approx(0.0)
    assert low_d == pytest.approx(0.2) and high_d == pytest.approx(0.8)


def test_a_single_run_reduces_to_the_item_bootstrap_of_a_mean():
    from orpo.evaluation.stats import bootstrap_interval

    values = np.random.default_rng(1).random(50)
    single = bootstrap_ratio_interval(values[None, :], np.ones((1, 50)), seed=2)
    plain = bootstrap_interval(values, seed=2)
    assert abs(single[0] - plain[0]) < 0.05 and abs(single[1] - plain[1]) < 0.05


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="grids"):
        bootstrap_ratio_interval(np.ones((2, 3)), np.ones((3, 2)))
