"""The noisy review corpus the demo's base is trained on: its stated miss and false-comment rates."""

import math

import pytest

from orpo.tasks.codereview.generator import (
    P_FALSE,
    P_MISS,
    generate_examples,
    noisy_reviews,
    noisy_rows,
)
from orpo.tasks.codereview.judge import NO_VIOLATIONS, format_review, score_review

N = 3000
REVIEWS = noisy_reviews(N, seed=0)


def _within(rate: float, p: float, n: int, z: float = 4.0) -> bool:
    """|rate - p| within z binomial standard errors of n draws."""
    return abs(rate - p) <= z * math.sqrt(p * (1 - p) / n)


def test_counted_miss_and_false_comment_rates_match_the_stated_ones():
    """Counted by the judge (not by the generator's own bookkeeping): misses are the judge's false
    negatives over all true violations, false comments its false positives over all reviews."""
    scores = [score_review(r.review, r.violations) for r in REVIEWS]
    n_violations = sum(len(r.violations) for r in REVIEWS)
    missed = sum(s.fn for s in scores)
    false = sum(s.fp for s in scores)
    assert n_violations > 3000
    assert _within(missed / n_violations, P_MISS, n_violations), missed / n_violations
    assert _within(false / N, P_FALSE, N), false / N
    # The generator's bookkeeping agrees with the judge's counts.
    assert missed == sum(r.missed for r in REVIEWS) and false == sum(r.false_comments for r in REVIEWS)


@pytest.mark.parametrize(("p_miss", "p_false"), [(0.1, 0.6), (0.6, 0.1)])
def test_other_rates_are_honoured_too(p_miss, p_false):
    reviews = noisy_reviews(2000, seed=3, p_miss=p_miss, p_false=p_false)
    n_violations = sum(len(r.violations) for r in reviews)
    assert _within(sum(r.missed for r in reviews) / n_violations, p_miss, n_violations)
    assert _within(sum(r.false_comments for r in reviews) / 2000, p_false, 2000)


def test_zero_noise_gives_the_correct_reviews_and_full_miss_approves_everything():
    exact = noisy_reviews(300, seed=1, p_miss=0.0, p_false=0.0)
    assert all(r.review == format_review(r.violations) for r in exact)
    blind = noisy_reviews(300, seed=1, p_miss=1.0, p_false=0.0)
    assert all(r.review == NO_VIOLATIONS for r in blind)


def test_deterministic_per_seed_and_excludes_the_given_snippets():
    assert noisy_reviews(100, seed=0) == REVIEWS[:100]
    assert noisy_reviews(100, seed=1) != REVIEWS[:100]
    held_out = frozenset(e.snippet for e in generate_examples(400, seed=0))
    kept = noisy_reviews(500, seed=0, exclude=held_out)
    assert not held_out & {r.snippet for r in kept}


def test_rows_train_on_the_noisy_review_and_never_repeat_it_as_rejected():
    rows = noisy_rows(REVIEWS[:500])
    assert [row["chosen"] for row in rows] == [r.review for r in REVIEWS[:500]]
    assert all(row["chosen"] != row["rejected"] for row in rows)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_a_rate_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match="probability in"):
        noisy_reviews(10, seed=0, p_miss=bad)
