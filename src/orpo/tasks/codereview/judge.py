"""The review format (write and parse) and the rule-based judge that scores reviews.

Review format, one finding per line, sorted by line number::

    L3 R2 eval on input
    L5 R5 bare except

i.e. ``L<line> <rule id> <rule name>`` with the rule's exact name from `rules.RULES`, or the
single line ``No violations.`` for clean code. Writing (`format_review`) and reading
(`parse_review`) live together so the format is defined in one place.

Scoring: a finding matches a violation when both the rule id and the line match. Per review
we count true positives (findings that match a violation), false positives (findings that
match none, including repeats of an already matched finding) and false negatives (violations
no finding matches). `aggregate` micro-averages these counts over all reviews, which is how
the case study's recall / precision / false-negative rate are read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orpo.tasks.codereview.rules import RULES_BY_ID, Violation

NO_VIOLATIONS = "No violations."
"""The whole review for a clean snippet."""

# A finding line: "L<int> R<int>" then the rule name. Matched at line start only, so stray
# text elsewhere is never mistaken for a finding.
_FINDING = re.compile(r"^L(\d+) (R\d+)\b(.*)$")
# Generation may run past the review into an end-of-sequence marker (and beyond); everything
# from the first such marker on is not part of the review.
_EOS = re.compile(r"</s>|<\|[^|\s]*\|>|<eos>|<pad>|\[EOS\]", re.IGNORECASE)


def format_review(violations: Iterable[Violation]) -> str:
    """The reference review of a snippet with these violations (sorted by line, then rule)."""
    ordered = sorted(violations, key=lambda v: (v.line, v.rule_id))
    if not ordered:
        return NO_VIOLATIONS
    return "\n".join(f"L{v.line} {v.rule_id} {RULES_BY_ID[v.rule_id].name}" for v in ordered)


@dataclass(frozen=True)
class ParsedReview:
    """What a review says.

    Attributes:
        findings: (rule_id, line) for every line that starts like a finding, in text order,
            even when the rest of the line is wrong (wrong rule name, unknown rule id).
        valid_format: True when the review is exactly ``No violations.`` or a non-empty list of
            well-formed finding lines (known rule id followed by that rule's exact name).
        approved: True when the review is exactly ``No violations.`` (valid, no findings).
    """

    findings: list[tuple[str, int]]
    valid_format: bool
    approved: bool


def parse_review(text: str) -> ParsedReview:
    """Parse a generated review.

    Tolerated (still valid): anything from the first end-of-sequence marker on (``</s>``,
    ``<|...|>``, ``<eos>``, ``<pad>``, ``[EOS]``), surrounding whitespace, and blank lines.
    Invalid but still mined for findings: any other line, a finding with a wrong or missing
    rule name or an unknown rule id, ``No violations.`` mixed with findings, an empty review.
    """
    eos = _EOS.search(text)
    if eos is not None:
        text = text[: eos.start()]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    findings: list[tuple[str, int]] = []
    valid = bool(lines)
    for line in lines:
        match = _FINDING.match(line)
        if match is None:
            valid = valid and line == NO_VIOLATIONS and len(lines) == 1
            continue
        rule_id, rest = match.group(2), match.group(3)
        findings.append((rule_id, int(match.group(1))))
        rule = RULES_BY_ID.get(rule_id)
        valid = valid and rule is not None and rest == f" {rule.name}"
    approved = lines == [NO_VIOLATIONS]
    return ParsedReview(findings=findings, valid_format=valid, approved=approved)


def _ratio(numerator: int, denominator: int, if_empty: float) -> float:
    """numerator / denominator, or `if_empty` when there is nothing to count."""
    return numerator / denominator if denominator else if_empty


@dataclass(frozen=True)
class ReviewScore:
    """The judge's counts for one review of one snippet.

    Attributes:
        tp: findings matching a violation (rule id and line).
        fp: findings matching no violation (false comments, duplicates included).
        fn: violations no finding matches (misses).
        critical_fn: misses of critical-severity rules.
        n_critical: critical violations in the snippet.
        valid_format: see `ParsedReview.valid_format`.
        clean: the snippet has no violations.
        approved: the review is exactly ``No violations.`` (see `ParsedReview.approved`).
    """

    tp: int
    fp: int
    fn: int
    critical_fn: int
    n_critical: int
    valid_format: bool
    clean: bool
    approved: bool

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 1.0 for a clean snippet (nothing to miss)."""
        return _ratio(self.tp, self.tp + self.fn, 1.0)

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when the review makes no finding (no false comment made)."""
        return _ratio(self.tp, self.tp + self.fp, 1.0)


def _n_critical(keys: Iterable[tuple[str, int]]) -> int:
    """How many (rule_id, line) keys name a critical rule."""
    return sum(1 for rule_id, _ in keys if RULES_BY_ID[rule_id].severity == "critical")


def score_review(text: str, violations: Sequence[Violation]) -> ReviewScore:
    """Score a review `text` of a snippet whose true violations are `violations`.

    Each violation can be matched by at most one finding; findings are taken in text order.
    """
    parsed = parse_review(text)
    unmatched = {(v.rule_id, v.line) for v in violations}
    tp = fp = 0
    for finding in parsed.findings:
        if finding in unmatched:
            unmatched.remove(finding)
            tp += 1
        else:
            fp += 1
    return ReviewScore(
        tp=tp,
        fp=fp,
        fn=len(unmatched),
        critical_fn=_n_critical(unmatched),
        n_critical=_n_critical({(v.rule_id, v.line) for v in violations}),
        valid_format=parsed.valid_format,
        clean=not violations,
        approved=parsed.approved,
    )


def aggregate(scores: Sequence[ReviewScore]) -> dict[str, float]:
    """Micro-averaged metrics over reviews (counts are summed first, then divided).

    - ``recall`` = sum(tp) / (sum(tp) + sum(fn)): share of all violations found;
      1.0 when no snippet has a violation.
    - ``precision`` = sum(tp) / (sum(tp) + sum(fp)): share of all findings that are real;
      defined as 1.0 when no review makes any finding (a reviewer that says nothing makes no
      false comment; recall exposes it).
    - ``false_negative_rate`` = 1 - recall (the case study's "FN rate").
    - ``critical_fn_rate`` = sum(critical_fn) / sum(n_critical): share of critical violations
      missed; 0.0 when there are none.
    - ``format_validity`` = share of reviews with a valid format.
    - ``clean_approval`` = share of clean snippets whose review is exactly ``No violations.``;
      1.0 when there is no clean snippet.
    Raw counts are included too: ``n_reviews``, ``n_clean``, ``tp``, ``fp``, ``fn``.
    """
    if not scores:
        raise ValueError("aggregate() got no review scores; score at least one review")
    tp = sum(s.tp for s in scores)
    fp = sum(s.fp for s in scores)
    fn = sum(s.fn for s in scores)
    clean = [s for s in scores if s.clean]
    recall = _ratio(tp, tp + fn, 1.0)
    return {
        "recall": recall,
        "precision": _ratio(tp, tp + fp, 1.0),
        "false_negative_rate": 1.0 - recall,
        "critical_fn_rate": _ratio(
            sum(s.critical_fn for s in scores), sum(s.n_critical for s in scores), 0.0
        ),
        "format_validity": sum(s.valid_format for s in scores) / len(scores),
        "clean_approval": _ratio(sum(s.approved for s in clean), len(clean), 1.0),
        "n_reviews": len(scores),
        "n_clean": len(clean),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }
