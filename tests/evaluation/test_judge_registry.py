"""The one judge spec parser: every kind, the one-line errors, pointwise refused for human."""

import argparse

import pytest

from orpo.evaluation.judges import JUDGES, ScorerOptions, describe, parse_judge
from orpo.evaluation.judges.pointwise import RulesScorer, ScoreItem


@pytest.mark.parametrize(
    ("spec", "kind", "arg"),
    [
        ("rules:codereview", "rules", "codereview"),
        ("rules:my_rules.py", "rules", "my_rules.py"),
        ("reward:org/model", "reward", "org/model"),
        ("openai", "openai", None),
        ("human", "human", None),
    ],
)
def test_each_kind_parses_to_its_registry_entry_and_argument(spec, kind, arg):
    parsed = parse_judge(spec)
    assert parsed.kind is JUDGES[kind] and parsed.arg == arg and parsed.text == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "--judge nope: unknown kind 'nope'; use one of rules:FILE.py, reward:MODEL, openai, human"),
        ("rules", "--judge rules: give rules:FILE.py"),
        ("reward:", "--judge reward:: give reward:MODEL"),
        ("openai:gpt", "--judge openai:gpt: openai takes no argument"),
        ("human:x", "--judge human:x: human takes no argument"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_flag(spec, message):
    with pytest.raises(ValueError) as err:
        parse_judge(spec)
    assert str(err.value) == message


def test_the_flag_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"^--tune-judge x: unknown kind 'x'"):
        parse_judge("x", flag="--tune-judge")


def test_human_has_no_pointwise_judge_and_is_refused_before_any_work():
    message = (
        "--judge human cannot score one completion on its own (people compare two); "
        "use rules:FILE.py, reward:MODEL, openai"
    )
    with pytest.raises(ValueError) as err:
        parse_judge("human", pointwise=True)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        parse_judge("human").scorer()
    assert str(err.value) == message
    assert parse_judge("rules:codereview", pointwise=True).kind.name == "rules"


def test_metric_goes_with_rules_only_and_openai_needs_a_cache():
    with pytest.raises(ValueError, match=r"^--metric f1 goes with --judge rules:FILE.py; --judge openai has"):
        parse_judge("openai").scorer(ScorerOptions(metric="f1"))
    with pytest.raises(ValueError, match=r"^--judge openai needs a reply cache folder \(--cache-dir\)$"):
        parse_judge("openai").scorer()


def test_the_rules_scorer_scores_one_completion_and_gives_every_metric(tmp_path):
    rules = tmp_path / "length.py"
    rules.write_text(
        "LOWER_IS_BETTER = ('chars',)\n"
        "def judge(prompt, completion, reference):\n"
        "    return {'chars': len(completion), 'exact': float(completion == reference)}\n"
    )
    scorer = parse_judge(f"rules:{rules}").scorer()
    assert isinstance(scorer, RulesScorer) and scorer.lower_is_better == {"chars"}
    items = [ScoreItem("0", "p", "abc", "abc"), ScoreItem("1", "p", "ab", "x")]
    assert scorer.score(items) == [-3.0, -2.0]  # the first metric, lower is better: negated
    assert scorer.metrics(items) == [{"chars": 3.0, "exact": 1.0}, {"chars": 2.0, "exact": 0.0}]
    assert parse_judge(f"rules:{rules}").scorer(ScorerOptions(metric="exact")).score(items) == [1.0, 0.0]


def test_a_missing_rules_file_is_one_line_when_the_judge_is_built():
    with pytest.raises(ValueError, match=r"^rules:/nope/j.py: no such file"):
        parse_judge("rules:/nope/j.py").scorer()
    with pytest.raises(ValueError, match=r"^rules:/nope/j.py: no such file"):
        parse_judge("rules:/nope/j.py").judge(argparse.Namespace(metric=None))


def test_describe_lists_every_kind_of_the_registry():
    text = describe()
    for kind in JUDGES.values():
        assert kind.usage in text


def test_a_rules_file_whose_judge_raises_is_one_line_naming_the_file_function_and_item(tmp_path):
    """Every command scores through the registry's scorer (pairs, judge, compare, tune): a user's rule
    that raises is the user's bug, named where it is, not a traceback from inside orpo."""
    rules = tmp_path / "broken.py"
    rules.write_text(
        "def judge(prompt, completion, reference):\n    return {'ratio': len(completion) / len(reference)}\n"
    )
    scorer = parse_judge(f"rules:{rules}").scorer()
    items = [ScoreItem("a", "p", "abc", "xyz"), ScoreItem("b-7", "p", "abc", "")]
    with pytest.raises(ValueError) as err:
        scorer.metrics(items)
    assert str(err.value) == (
        f"rules:{rules}: judge() raised ZeroDivisionError: division by zero on id b-7 "
        f"({rules}, line 2); fix the rule or the row"
    )
    with pytest.raises(ValueError, match=r"judge\(\) raised ZeroDivisionError: division by zero on id b-7"):
        scorer.score(items)
    pairwise = parse_judge(f"rules:{rules}").judge(argparse.Namespace(metric=None))
    from orpo.evaluation.judges.base import Item

    with pytest.raises(ValueError, match=r"on id q1 \("):
        pairwise.judge([Item("q1", "p", "a", "b", "")])


def test_a_reward_model_path_that_does_not_exist_says_so(tmp_path):
    missing = tmp_path / "nosuch"
    with pytest.raises(ValueError) as err:
        parse_judge(f"reward:{missing}").scorer()
    assert str(err.value) == f"reward:{missing}: no such local path {missing}"
    with pytest.raises(ValueError, match=r"^reward:\./nosuch: no such local path \./nosuch$"):
        parse_judge("reward:./nosuch").scorer()
