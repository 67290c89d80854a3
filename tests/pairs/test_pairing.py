"""Pairing on hand-made scores: collapse, chosen/rejected policies, margins, drops and their reasons."""

import pytest

from orpo.pairs.pairing import Candidate, PairingSettings, collapse, pair_prompt


def _cands(*scored):
    """Candidates from (text, score) in sample order, one sample each."""
    return [Candidate(text, score, (k,)) for k, (text, score) in enumerate(scored)]


def test_identical_completions_collapse_to_the_first_sample():
    cands = collapse(["a", "b", "a", "c", "b"], [None] * 5)
    assert [(c.text, c.samples) for c in cands] == [("a", (0, 2)), ("b", (1, 4)), ("c", (3,))]


def test_best_against_worst_and_tie_breaking_by_sample_index():
    cands = _cands(("x", 0.5), ("y", 0.9), ("z", 0.1), ("w", 0.9))
    (pair,) = pair_prompt("0", cands, None, None, PairingSettings()).pairs
    # best: 0.9 first reached at sample 1 (not 3); worst: 0.1 at sample 2
    assert (pair.chosen, pair.rejected, pair.chosen_sample, pair.rejected_sample) == ("y", "z", 1, 2)
    assert (pair.chosen_score, pair.rejected_score) == (0.9, 0.1)


def test_all_tie_is_dropped_unless_a_better_reference_may_be_taken():
    cands = _cands(("x", 0.0), ("y", 0.0))
    assert pair_prompt("0", cands, "ref", 1.0, PairingSettings()).dropped == "all_samples_tie"
    result = pair_prompt("0", cands, "ref", 1.0, PairingSettings(chosen="best-or-reference"))
    assert result.reference_used and [(p.chosen, p.chosen_sample, p.rejected) for p in result.pairs] == [
        ("ref", None, "x")
    ]
    # A reference that only ties the best sample is not taken; the samples all match it.
    assert pair_prompt("0", cands, "ref", 0.0, PairingSettings(chosen="best-or-reference")).dropped == (
        "samples_match_reference"
    )
    solved = _cands(("x", 1.0), ("x2", 1.0))
    assert pair_prompt("0", solved, "ref", 1.0, PairingSettings(chosen="best-or-reference")).dropped == (
        "samples_match_reference"
    )
    assert pair_prompt("0", _cands(("x", 0.3)), None, None, PairingSettings()).dropped == "all_samples_tie"


def test_best_or_reference_keeps_a_sample_that_scores_as_well_as_the_reference():
    cands = _cands(("x", 1.0), ("y", 0.2))
    result = pair_prompt("0", cands, "ref", 1.0, PairingSettings(chosen="best-or-reference"))
    assert not result.reference_used and result.pairs[0].chosen == "x"


def test_chosen_reference_and_its_drop_reason():
    cands = _cands(("x", 0.4), ("y", 0.7))
    result = pair_prompt("0", cands, "ref", 0.5, PairingSettings(chosen="reference"))
    assert [(p.chosen, p.rejected, p.chosen_score) for p in result.pairs] == [("ref", "x", 0.5)]
    assert pair_prompt("0", cands, "ref", 0.4, PairingSettings(chosen="reference")).dropped == (
        "none_below_reference"
    )


def test_min_margin_and_pairs_per_prompt():
    cands = _cands(("a", 1.0), ("b", 0.8), ("c", 0.4), ("d", 0.0))
    settings = PairingSettings(min_margin=0.5, pairs_per_prompt=3)
    # gaps 0.2 (b), 0.6 (c), 1.0 (d): only c and d qualify, worst first
    assert [p.rejected for p in pair_prompt("0", cands, None, None, settings).pairs] == ["d", "c"]
    assert pair_prompt("0", cands, None, None, PairingSettings(min_margin=1.5)).dropped == "below_min_margin"


def test_random_lower_is_seeded_per_prompt():
    cands = _cands(*[(f"t{k}", float(k)) for k in range(8)])
    pick = lambda seed, pid: [  # noqa: E731
        p.rejected
        for p in pair_prompt(
            pid, cands, None, None, PairingSettings(rejected="random-lower", pairs_per_prompt=3, seed=seed)
        ).pairs
    ]
    assert pick(0, "a") == pick(0, "a")
    assert len(set(pick(0, "a"))) == 3 and "t7" not in pick(0, "a")
    assert {tuple(pick(s, "a")) for s in range(5)} != {tuple(pick(0, "a"))}


def test_unscored_candidates_take_no_part():
    cands = [Candidate("a", None, (0,)), Candidate("b", 0.2, (1,)), Candidate("c", None, (2,))]
    assert pair_prompt("0", cands, None, None, PairingSettings()).dropped == "all_samples_tie"
    assert pair_prompt("0", [Candidate("a", None, (0,))], None, None, PairingSettings()).dropped == "no_score"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("chosen", "top", "--chosen 'top'"),
        ("rejected", "best", "--rejected 'best'"),
        ("min_margin", -1.0, "--min-margin -1.0 must be >= 0"),
        ("pairs_per_prompt", 0, "--pairs-per-prompt 0 must be >= 1"),
    ],
)
def test_bad_pairing_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        PairingSettings(**{field: value})


class _BlindScorer:
    """A judge that scores nothing (an LLM whose replies never match the score pattern)."""

    def score(self, items):
        return [None] * len(items)

    def settings(self):
        return {"kind": "blind"}

    def counters(self):
        return {}


def test_no_pairs_because_the_judge_scored_nothing_is_an_error_and_writes_no_file(tmp_path, monkeypatch):
    from orpo.evaluation.generate import Prompt
    from orpo.pairs import make

    prompts = [Prompt(id=str(i), messages=[{"role": "user", "content": f"q{i}"}]) for i in range(3)]
    records = [{"id": p.id, "completion": f"answer {k}", "sample": k} for p in prompts for k in range(4)]
    monkeypatch.setattr(make, "build_scorer", lambda *a, **k: _BlindScorer())
    monkeypatch.setattr(make, "_sample", lambda *a, **k: (records, len(records), 0))
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(ValueError) as err:
        make.make_pairs("no-model", prompts, "openai", out)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{out}: no pairs from 3 prompts")
    assert "the judge scored none of the 12 samples" in message and "no_score 3" in message
    assert not out.exists() and not out.with_suffix(".summary.json").exists()
