"""``rules:codereview``: the demo's code-review judge as a rules file (``orpo.tasks.codereview.judge``).

The reference is the chosen review (``orpo generate --prompts builtin:codereview`` carries it), whose
findings are the snippet's true violations. Per completion: ``f1`` of its findings against them (the
pairwise metric), ``recall``, ``precision``, misses of critical rules, false comments, and whether the
review is well formed.

Findings are counted as the demo counts them: every line that starts like a finding, even in a review
that is not well formed. What the counts leave open is the case with nothing to count (a clean
snippet and no finding): f1, precision and recall are then 0/0. Only a review that says so, exactly
``No violations.``, is a correct approval and scores 1.0 there; a reply with no finding that is not
that line is not a review at all and scores 0.0 on all three, on any snippet. Without this, text that
is not a review (an empty reply, prose, a repeated prompt) would score a perfect f1 on every clean
snippet, and a judge picking the better of two replies would prefer it to a real review with one
false comment. The demo's micro-averaged table needs no such rule: such a reply adds no tp, fp or
fn, and its clean-approval count already takes only the exact approval.
"""

from __future__ import annotations

from orpo.tasks.codereview.judge import parse_review, score_review
from orpo.tasks.codereview.rules import Violation

PAIRWISE_METRIC = "f1"
LOWER_IS_BETTER = ("false_negatives", "false_positives", "critical_misses")


def _ratio(numerator: int, denominator: int, if_empty: float) -> float:
    return numerator / denominator if denominator else if_empty


def judge(prompt: str, completion: str, reference: str | None) -> dict[str, float]:
    if reference is None:
        raise ValueError(
            "rules:codereview needs each line's reference (the chosen review); generate with "
            "--prompts builtin:codereview"
        )
    truth = [Violation(rule_id, line) for rule_id, line in parse_review(reference).findings]
    s = score_review(completion, truth)
    # The value of a 0/0 ratio: 1.0 for a review that approves, 0.0 for a reply that is no review
    # (see the module docstring). A review with findings never reaches it for precision.
    said = 1.0 if s.approved or s.tp + s.fp else 0.0
    return {
        "f1": _ratio(2 * s.tp, 2 * s.tp + s.fp + s.fn, said),
        "recall": _ratio(s.tp, s.tp + s.fn, said),
        "precision": _ratio(s.tp, s.tp + s.fp, said),
        "false_negatives": float(s.fn),
        "false_positives": float(s.fp),
        "critical_misses": float(s.critical_fn),
        "valid_format": float(s.valid_format),
    }
