"""``rules:codereview``: the demo's code-review judge as a rules file (``orpo.tasks.codereview.judge``).

The reference is the chosen review (``orpo generate --prompts builtin:codereview`` carries it), whose
findings are the snippet's true violations. Per completion: ``f1`` of its findings against them (1.0
for a clean snippet correctly approved; the pairwise metric), ``recall``, ``precision``, misses of
critical rules, false comments, and whether the review is well formed.
"""

from __future__ import annotations

from orpo.tasks.codereview.judge import parse_review, score_review
from orpo.tasks.codereview.rules import Violation

PAIRWISE_METRIC = "f1"
LOWER_IS_BETTER = ("false_negatives", "false_positives", "critical_misses")


def judge(prompt: str, completion: str, reference: str | None) -> dict[str, float]:
    if reference is None:
        raise ValueError(
            "rules:codereview needs each line's reference (the chosen review); generate with "
            "--prompts builtin:codereview"
        )
    truth = [Violation(rule_id, line) for rule_id, line in parse_review(reference).findings]
    s = score_review(completion, truth)
    errors = s.fp + s.fn
    return {
        "f1": 1.0 if errors == 0 else 2 * s.tp / (2 * s.tp + errors),
        "recall": s.recall,
        "precision": s.precision,
        "false_negatives": float(s.fn),
        "false_positives": float(s.fp),
        "critical_misses": float(s.critical_fn),
        "valid_format": float(s.valid_format),
    }
