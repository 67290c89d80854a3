"""Judges of two models' completions, one module per kind, and the registry the CLI reads.

``--judge`` takes ``KIND`` or ``KIND:ARG``:

  rules:FILE.py | rules:codereview   a Python rule function scores each completion (``rules``)
  reward:MODEL                       a local sequence-classification reward model scores them (``reward``)
  openai                             an LLM over an OpenAI-compatible chat-completions API, both orders (``llm``)
  human                              a blinded HTML page for people; its exported choices are imported (``human``)

Every judge has ``judge(items) -> list[Verdict]`` and ``settings() -> dict``; rule and reward judges
also have ``per_model()`` (each model's mean scores with intervals).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class JudgeKind:
    """One entry of the registry: how ``--judge NAME[:ARG]`` builds its judge from the CLI options."""

    name: str
    usage: str
    help: str
    needs_arg: bool
    build: Callable[[str | None, argparse.Namespace], object]


def _rules(arg, args):
    from orpo.evaluation.judges.rules import RulesJudge

    return RulesJudge(arg, metric=args.metric)


def _reward(arg, args):
    from orpo.evaluation.judges.reward import RewardJudge

    return RewardJudge(arg, batch_size=args.batch_size)


def _openai(arg, args):
    from orpo.evaluation.judges.llm import LLMJudge

    return LLMJudge.from_args(args)


def _human(arg, args):
    from orpo.evaluation.judges.human import HumanJudge

    return HumanJudge(args.out, seed=args.seed)


JUDGES: dict[str, JudgeKind] = {
    kind.name: kind
    for kind in (
        JudgeKind(
            "rules", "rules:FILE.py", "task metrics from judge(prompt, completion, reference)", True, _rules
        ),
        JudgeKind("reward", "reward:MODEL", "a sequence-classification reward model's scores", True, _reward),
        JudgeKind(
            "openai", "openai", "an LLM judge over an OpenAI-compatible API, both orders", False, _openai
        ),
        JudgeKind(
            "human", "human", "a blinded side-by-side HTML page, then --import its choices", False, _human
        ),
    )
}


def build_judge(spec: str, args: argparse.Namespace):
    """The judge named by ``spec`` (``KIND`` or ``KIND:ARG``)."""
    name, _, arg = spec.partition(":")
    kind = JUDGES.get(name)
    if kind is None:
        raise ValueError(
            f"--judge {spec}: unknown kind {name!r}; use one of {', '.join(k.usage for k in JUDGES.values())}"
        )
    if kind.needs_arg and not arg:
        raise ValueError(f"--judge {spec}: give {kind.usage}")
    if not kind.needs_arg and arg:
        raise ValueError(f"--judge {spec}: {name} takes no argument")
    return kind.build(arg or None, args)
