"""The review format and the judge's metrics, on hand-written reviews."""

import pytest

from orpo.tasks.codereview.judge import NO_VIOLATIONS, aggregate, format_review, parse_review, score_review
from orpo.tasks.codereview.rules import RULES, RULES_BY_ID, Violation, severity_rank

V = Violation


def test_rulebook_ids_are_unique_and_severities_ordered():
    assert len(RULES_BY_ID) == len(RULES)
    assert severity_rank("R2") < severity_rank("R5") < severity_rank("R1")


def test_format_review_sorts_by_line_and_writes_rule_names():
    assert format_review([V("R5", 7), V("R2", 3)]) == "L3 R2 eval on input\nL7 R5 bare except"
    assert format_review([]) == NO_VIOLATIONS


def test_parse_tolerates_trailing_whitespace_and_eos_text():
    parsed = parse_review("L3 R2 eval on input  \nL7 R5 bare except\n</s> L1 R1 junk after eos")
    assert parsed.findings == [("R2", 3), ("R5", 7)]
    assert parsed.valid_format and not parsed.approved
    approved = parse_review("No violations.<|endoftext|>")
    assert approved.valid_format and approved.approved and approved.findings == []


@pytest.mark.parametrize(
    ("text", "findings"),
    [
        ("L3 R2 hard-coded secret", [("R2", 3)]),  # right id, wrong rule name
        ("L3 R9 unknown rule", [("R9", 3)]),  # no such rule
        ("L3 R2", [("R2", 3)]),  # name missing
        ("L3 R2 eval on input\nnice code otherwise", [("R2", 3)]),  # stray prose
        ("No violations.\nL2 R1 function name not snake_case", [("R1", 2)]),  # approves and flags
        ("Looks good to me", []),
        ("", []),
    ],
)
def test_parse_marks_off_format_reviews_invalid_but_keeps_findings(text, findings):
    parsed = parse_review(text)
    assert not parsed.valid_format
    assert not parsed.approved
    assert parsed.findings == findings


def test_score_counts_a_repeated_finding_as_a_false_positive():
    """{R2@3}, review flags R2@3 twice: tp = 1, fp = 1, so precision = 1 / 2 and recall = 1 / 1."""
    score = score_review("L3 R2 eval on input\nL3 R2 eval on input", [V("R2", 3)])
    assert (score.tp, score.fp, score.fn) == (1, 1, 0)
    assert score.precision == 0.5 and score.recall == 1.0


def test_aggregate_on_hand_written_reviews():
    """Six reviews; (tp, fp, fn, critical missed / critical, valid, clean approved):

    A {R2@3 crit, R5@5}: both found                          -> (2, 0, 0, 0/1, yes, -)
    B {R1@1, R4@2 crit}: R1@1 found, R4 flagged on line 3     -> (1, 1, 1, 1/1, yes, -)
    C {R3@4 crit}: R3@4 found plus a false R5@6               -> (1, 1, 0, 0/1, yes, -)
    D clean: "No violations." then EOS                        -> (0, 0, 0, 0/0, yes, yes)
    E clean: false R4@2 plus prose                            -> (0, 1, 0, 0/0, no,  no)
    F {R6@1}: "No violations."                                -> (0, 0, 1, 0/0, yes, -)

    Sums: tp = 4, fp = 3, fn = 2, critical missed 1 of 3.
    recall = 4 / (4 + 2) = 2/3; precision = 4 / (4 + 3) = 4/7; false_negative_rate = 1/3;
    critical_fn_rate = 1/3; format_validity = 5/6; clean_approval = 1/2 (D yes, E no).
    """
    cases = [
        ("L3 R2 eval on input\nL5 R5 bare except", [V("R2", 3), V("R5", 5)]),
        ("L1 R1 function name not snake_case\nL3 R4 hard-coded secret", [V("R1", 1), V("R4", 2)]),
        ("L4 R3 shell=True\nL6 R5 bare except", [V("R3", 4)]),
        ("No violations.</s>", []),
        ("L2 R4 hard-coded secret\nlooks fine otherwise", []),
        ("No violations.", [V("R6", 1)]),
    ]
    scores = [score_review(text, violations) for text, violations in cases]
    assert [(s.tp, s.fp, s.fn, s.critical_fn, s.n_critical) for s in scores] == [
        (2, 0, 0, 0, 1),
        (1, 1, 1, 1, 1),
        (1, 1, 0, 0, 1),
        (0, 0, 0, 0, 0),
        (0, 1, 0, 0, 0),
        (0, 0, 1, 0, 0),
    ]
    assert (scores[1].recall, scores[1].precision) == (0.5, 0.5)
    metrics = aggregate(scores)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["precision"] == pytest.approx(4 / 7)
    assert metrics["false_negative_rate"] == pytest.approx(1 / 3)
    assert metrics["critical_fn_rate"] == pytest.approx(1 / 3)
    assert metrics["format_validity"] == pytest.approx(5 / 6)
    assert metrics["clean_approval"] == pytest.approx(1 / 2)
    assert (metrics["n_reviews"], metrics["n_clean"], metrics["tp"], metrics["fp"], metrics["fn"]) == (
        6,
        2,
        4,
        3,
        2,
    )


def test_aggregate_conventions_when_there_is_nothing_to_count():
    """One clean snippet, approved: no violation (recall 1), no finding (precision 1), no critical."""
    metrics = aggregate([score_review(NO_VIOLATIONS, [])])
    assert (metrics["recall"], metrics["precision"], metrics["critical_fn_rate"]) == (1.0, 1.0, 0.0)
    assert metrics["clean_approval"] == 1.0
    silent = aggregate([score_review(NO_VIOLATIONS, [V("R4", 2)])])
    assert (silent["recall"], silent["precision"], silent["critical_fn_rate"]) == (0.0, 1.0, 1.0)


def test_aggregate_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no review scores"):
        aggregate([])
