"""The code-review pair generator: determinism, shape, splits, and chosen vs rejected quality."""

import re

import pytest

from orpo.tasks.codereview.generator import (
    MAX_CHARS,
    MAX_LINES,
    generate_examples,
    make_splits,
    prompt_for,
    to_rows,
)
from orpo.tasks.codereview.judge import NO_VIOLATIONS, parse_review, score_review
from orpo.tasks.codereview.rules import Violation, severity_rank

EXAMPLES = generate_examples(500, seed=0)


def _oracle(snippet: str) -> list[Violation]:
    """Violations found by line patterns written independently of the generator's templates."""
    found = []
    for number, line in enumerate(snippet.splitlines(), start=1):
        code = line.strip()
        checks = {
            "R1": code.startswith("def ") and re.search(r"def \w*[A-Z]", code) is not None,
            "R2": re.search(r"(?<![\w.])(eval|exec)\(", code) is not None,
            "R3": "shell=True" in code,
            "R4": re.match(r"(token|api_key|password|secret) = [\"']", code) is not None,
            "R5": code == "except:",
            "R6": code.startswith("def ") and re.search(r"=\s*(\[\]|\{\})", code) is not None,
        }
        found += [Violation(rule_id, number) for rule_id, hit in checks.items() if hit]
    return found


def test_same_seed_same_examples_other_seed_other_examples():
    assert generate_examples(50, seed=0) == EXAMPLES[:50]
    assert generate_examples(50, seed=1) != EXAMPLES[:50]


def test_snippets_are_short_valid_python_with_at_most_three_violations_on_distinct_lines():
    for example in EXAMPLES:
        lines = example.snippet.splitlines()
        assert 4 <= len(lines) <= MAX_LINES and len(example.snippet) < MAX_CHARS
        compile(example.snippet, "<snippet>", "exec")
        numbers = [v.line for v in example.violations]
        assert len(numbers) <= 3 and numbers == sorted(set(numbers))
        assert all(1 <= n <= len(lines) for n in numbers)
    # Expected share 0.25; with 500 draws the standard deviation is about 0.02.
    clean_share = sum(not e.violations for e in EXAMPLES) / len(EXAMPLES)
    assert 0.18 <= clean_share <= 0.32


def test_labelled_violations_match_an_independent_line_oracle():
    for example in EXAMPLES:
        assert example.violations == _oracle(example.snippet), example.snippet


def test_splits_have_the_asked_sizes_and_share_no_snippet():
    splits = make_splits(300, 50, 80, seed=3)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 300, "val": 50, "test": 80}
    snippets = {name: {e.snippet for e in rows} for name, rows in splits.items()}
    assert sum(len(s) for s in snippets.values()) == 430  # also no duplicate inside a split
    assert not snippets["train"] & snippets["test"]
    assert not snippets["train"] & snippets["val"]
    assert not snippets["val"] & snippets["test"]


def test_chosen_reviews_are_perfect_under_the_judge():
    for example in EXAMPLES:
        score = score_review(example.chosen, example.violations)
        assert (score.recall, score.precision, score.valid_format) == (1.0, 1.0, True), example.chosen
        assert score.approved == (not example.violations)


def test_rejected_reviews_are_strictly_worse_than_chosen():
    """Never better on recall, precision or clean approval, and strictly worse on one of them."""
    for example in EXAMPLES:
        chosen = score_review(example.chosen, example.violations)
        rejected = score_review(example.rejected, example.violations)
        good = (chosen.recall, chosen.precision, chosen.approved or not chosen.clean)
        bad = (rejected.recall, rejected.precision, rejected.approved or not rejected.clean)
        assert all(b <= g for b, g in zip(bad, good)) and bad != good, (example.chosen, example.rejected)
        assert parse_review(example.rejected).valid_format  # failures are in content, not format


def test_each_failure_kind_is_the_failure_it_names():
    kinds = {e.failure_kind for e in EXAMPLES}
    assert kinds == {"missed_severe", "false_comment", "approved_violations", "flagged_clean"}
    for example in EXAMPLES:
        score = score_review(example.rejected, example.violations)
        kind = example.failure_kind
        if kind == "approved_violations":
            assert example.violations and example.rejected == NO_VIOLATIONS
        elif kind == "missed_severe":
            assert len(example.violations) >= 2 and (score.fn, score.fp) == (1, 0)
            found = set(parse_review(example.rejected).findings)
            (missed,) = [v for v in example.violations if (v.rule_id, v.line) not in found]
            assert severity_rank(missed.rule_id) == min(severity_rank(v.rule_id) for v in example.violations)
        else:
            assert (score.fn, score.fp) == (0, 1)
            bad_lines = {v.line for v in example.violations}
            (false_finding,) = set(parse_review(example.rejected).findings) - {
                (v.rule_id, v.line) for v in example.violations
            }
            assert false_finding[1] not in bad_lines  # the false comment sits on a clean line
            assert (kind == "flagged_clean") == (not example.violations)


def test_prompt_numbers_the_lines_and_rows_carry_the_pair():
    assert (
        prompt_for("def f(x):\n    return x")
        == "Review this code:\nL1 def f(x):\nL2     return x\nFindings:\n"
    )
    (row,) = to_rows(EXAMPLES[:1])
    assert row == {
        "prompt": prompt_for(EXAMPLES[0].snippet),
        "chosen": EXAMPLES[0].chosen,
        "rejected": EXAMPLES[0].rejected,
    }


def test_negative_sizes_are_rejected():
    with pytest.raises(ValueError, match="n_val must be >= 0, got -1"):
        make_splits(10, -1, 10, seed=0)
