"""The one "generate, judge, interval" routine against a case computed by hand: a stub model whose
answers are fixed, a rules file whose scores are known."""

import numpy as np
import pytest

import orpo.evaluation.judged as judged
from orpo.evaluation.judged import AnswerSettings, JudgedPrompt, judge_answers
from orpo.evaluation.judges import parse_judge
from orpo.evaluation.stats import bootstrap_interval

# The stub tokenizer's vocabulary: id 9 is the EOS marker.
WORDS = {1: "yes", 2: "no", 9: "<eos>"}


class StubTokenizer:
    def __init__(self):
        self.calls = []

    def decode(self, ids, skip_special_tokens=False):
        self.calls.append(skip_special_tokens)
        return " ".join(WORDS[i] for i in ids if not (skip_special_tokens and i == 9))


class StubModel:
    training = True

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode


@pytest.fixture
def answering(monkeypatch):
    """generate_ids answers prompt [k] with the fixed ids ANSWERS[k] (greedy: one sample each)."""
    answers = {0: [1, 9], 1: [2, 9], 2: [1, 9], 3: [1]}
    seen = {}

    def generate_ids(model, tokenizer, prompts, settings):
        seen["settings"] = settings
        seen["training"] = model.training
        return [[(answers[p[0]], True)] for p in prompts]

    monkeypatch.setattr(judged, "generate_ids", generate_ids)
    return seen


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "yes.py"
    path.write_text(
        "def judge(prompt, completion, reference):\n"
        "    return {'yes': float(completion.startswith('yes')), 'eos': float(completion.endswith('<eos>'))}\n"
    )
    return parse_judge(f"rules:{path}").scorer()


def _prompts():
    return [JudgedPrompt(str(k), "", [k], None) for k in range(4)]


def test_means_and_intervals_are_the_hand_computed_ones(answering, rules):
    model, tok = StubModel(), StubTokenizer()
    result = judge_answers(model, tok, _prompts(), rules, AnswerSettings(max_new_tokens=5, batch_size=2))
    assert result.texts == ["yes", "no", "yes", "yes"]  # special tokens dropped by default
    assert (
        result.scores == [{"yes": 1.0, "eos": 0.0}, {"yes": 0.0, "eos": 0.0}] + [{"yes": 1.0, "eos": 0.0}] * 2
    )
    assert result.metrics["yes"]["mean"] == 0.75
    low, high = bootstrap_interval(np.array([1.0, 0.0, 1.0, 1.0]))
    assert (result.metrics["yes"]["ci_low"], result.metrics["yes"]["ci_high"]) == (low, high)
    assert 0.0 <= low < 0.75 < high <= 1.0
    assert result.metrics["eos"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    # generated greedily with the given budget, in eval mode; the model's mode is given back
    settings = answering["settings"]
    assert (settings.max_new_tokens, settings.batch_size, settings.temperature) == (5, 2, 0.0)
    assert answering["training"] is False and model.training is True


def test_keeping_special_tokens_is_the_callers_choice(answering, rules):
    tok = StubTokenizer()
    kept = judge_answers(StubModel(), tok, _prompts(), rules, AnswerSettings(5, keep_special=True))
    assert kept.texts == ["yes <eos>", "no <eos>", "yes <eos>", "yes"]
    assert set(tok.calls) == {False}
    assert kept.metrics["eos"]["mean"] == 0.75 and kept.metrics["yes"]["mean"] == 0.75


def test_an_item_without_a_score_is_left_out_of_the_means(answering):
    class Scorer:
        def metrics(self, items):
            return [None if i.completion == "no" else {"score": 2.0} for i in items]

    result = judge_answers(StubModel(), StubTokenizer(), _prompts(), Scorer(), AnswerSettings(5))
    assert result.scores[1] is None
    assert result.metrics == {"score": {"mean": 2.0, "ci_low": 2.0, "ci_high": 2.0}}
