"""The rules judge: ``rules:codereview``'s per-item metrics by hand, the pairwise verdicts built on them,
and the pointwise score a single completion gets."""

import json

import pytest

from orpo.cli.main import main
from orpo.evaluation.judges.base import Item
from orpo.evaluation.judges.codereview import judge as codereview
from orpo.evaluation.judges.rules import RulesJudge

CLEAN = "No violations."
DIRTY = "L2 R2 eval on input\nL4 R5 bare except"  # two true violations
NOT_A_REVIEW = ["", "Sure! The code looks fine to me.", "No violations.\nAnything else?", "def f(x):"]


def _f1_recall_precision(completion: str, reference: str) -> tuple[float, float, float]:
    m = codereview("prompt", completion, reference)
    return m["f1"], m["recall"], m["precision"]


@pytest.mark.parametrize("reply", NOT_A_REVIEW)
@pytest.mark.parametrize("reference", [CLEAN, DIRTY])
def test_a_reply_that_is_not_a_review_scores_zero(reply, reference):
    """Nothing in the reply starts like a finding and it is not exactly the approval: tp = fp = 0, so on
    a clean snippet every ratio is 0/0. That is not an approval of the clean code: 0 on f1, recall and
    precision (it was 1.0 on all three), as on a snippet with violations (fn = 2, so f1 = recall = 0;
    precision 0/0 is 0 too, where an approval would keep 1.0)."""
    assert _f1_recall_precision(reply, reference) == (0.0, 0.0, 0.0)
    assert codereview("prompt", reply, reference)["valid_format"] == 0.0


def test_the_metrics_of_reviews_by_hand():
    """f1 = 2tp / (2tp + fp + fn), recall = tp / (tp + fn), precision = tp / (tp + fp)."""
    # Clean snippet approved: 0/0 everywhere, a correct approval -> 1.0.
    assert _f1_recall_precision(CLEAN, CLEAN) == (1.0, 1.0, 1.0)
    # Clean snippet, one false comment: tp 0, fp 1, fn 0 -> f1 0/1, recall 0/0 = 1 (nothing missed), precision 0/1.
    assert _f1_recall_precision("L2 R2 eval on input", CLEAN) == (0.0, 1.0, 0.0)
    # Two violations approved: tp 0, fn 2 -> f1 0, recall 0; no false comment made -> precision 1.0.
    assert _f1_recall_precision(CLEAN, DIRTY) == (0.0, 0.0, 1.0)
    # One of two found: tp 1, fn 1 -> f1 2/3, recall 1/2, precision 1/1.
    assert _f1_recall_precision("L2 R2 eval on input", DIRTY) == pytest.approx((2 / 3, 0.5, 1.0))
    # Both found, the second line cut short (not well formed): findings still count, tp 2 -> 1.0.
    m = codereview("prompt", "L2 R2 eval on input\nL4 R5 bare exc", DIRTY)
    assert (m["f1"], m["recall"], m["precision"], m["valid_format"]) == (1.0, 1.0, 1.0, 0.0)


def test_an_approval_beats_a_non_review_and_the_pointwise_score_agrees():
    """On a clean snippet the exact approval wins over prose (it used to tie at f1 1.0); the pointwise
    score is the pairwise metric of one completion, the same number the verdict compares."""
    rules = RulesJudge("codereview")
    items = [
        Item("0", "p", "Looks good to me.", CLEAN, CLEAN),  # B approves, A is no review -> B
        Item("1", "p", "L2 R2 eval on input", "", DIRTY),  # A finds one of two, B says nothing -> A
        Item("2", "p", "", "Fine.", CLEAN),  # neither is a review -> tie
    ]
    assert [v.winner for v in rules.judge(items)] == ["B", "A", "tie"]
    assert rules.pointwise("p", CLEAN, CLEAN) == 1.0
    assert rules.pointwise("p", "Looks good to me.", CLEAN) == 0.0
    assert rules.pointwise("p", "L2 R2 eval on input", DIRTY) == pytest.approx(2 / 3)


def test_pointwise_negates_a_lower_is_better_metric():
    """With --metric false_positives (lower is better) a higher pointwise score is still the better
    completion: one false comment scores -1, none 0."""
    rules = RulesJudge("codereview", metric="false_positives")
    assert rules.pointwise("p", "L9 R1 mutable default argument", CLEAN) == -1.0
    assert str(rules.pointwise("p", CLEAN, CLEAN)) == "0.0"  # not -0.0 in a written file


def test_orpo_judge_on_generations_that_are_not_reviews(tmp_path):
    """`orpo judge` end to end: A answers prose on two clean snippets, B approves them. Every A item
    scores f1 0 (it scored 1.000 with valid_format 0.000), so B wins both."""
    out = tmp_path / "judged"
    paths = []
    for name, reply in (("a", "I think this code is fine."), ("b", CLEAN)):
        path = tmp_path / f"{name}.jsonl"
        rows = [
            {"id": str(i), "sample": 0, "prompt": f"p{i}", "completion": reply, "reference": CLEAN}
            for i in range(2)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    assert main(["judge", *paths, "--judge", "rules:codereview", "--out", str(out), "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["wins"], summary["ties"], summary["losses"]) == (2, 0, 0)
    assert summary["per_model"]["A"]["f1"]["mean"] == 0.0
    assert summary["per_model"]["A"]["valid_format"]["mean"] == 0.0
    assert summary["per_model"]["B"]["f1"]["mean"] == 1.0


def test_orpo_judge_with_a_rule_that_raises_is_one_line_and_exit_2(tmp_path, capsys):
    """A user's rule that fails on one item: one line naming the file, judge() and the item id, exit 2."""
    rules = tmp_path / "picky.py"
    rules.write_text(
        "def judge(prompt, completion, reference):\n"
        "    if prompt == 'p1':\n"
        "        raise KeyError('verdict')\n"
        "    return {'score': 1.0}\n"
    )
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jsonl"
        rows = [{"id": str(i), "prompt": f"p{i}", "completion": name} for i in range(2)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    assert main(["judge", *paths, "--judge", f"rules:{rules}", "--out", str(tmp_path / "j")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"orpo: error: rules:{rules}: judge() raised KeyError: 'verdict' on id 1 ({rules}, line 3); "
        "fix the rule or the row"
    )
