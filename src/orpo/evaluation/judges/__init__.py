"""Judges of two models' completions, one module per kind, and the registry the CLI reads.

``--judge`` takes ``KIND`` or ``KIND:ARG``:

  rules:FILE.py | rules:codereview   a Python rule function scores each completion (``rules``)
  reward:MODEL                       a local sequence-classification reward model scores them (``reward``)
  openai                             an LLM over an OpenAI-compatible chat-completions API, both orders (``llm``)
  human                              a blinded HTML page for people; its exported choices are imported (``human``)

Every judge has ``judge(items) -> list[Verdict]`` and ``settings() -> dict``; rule and reward judges
also have ``per_model()`` (each model's mean scores with intervals); a rules judge also scores one
completion on its own (``pointwise(prompt, completion, reference) -> float``, higher is better).
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
            "rules",
            "rules:FILE.py",
            "FILE defines judge(prompt, completion, reference) -> {metric: value}; per-model means with "
            "intervals, and B wins an item when its --metric is better. rules:codereview is the builtin "
            "code-review judge (generate from builtin:codereview).",
            True,
            _rules,
        ),
        JudgeKind(
            "reward",
            "reward:MODEL",
            "a local sequence-classification reward model scores each completion; the higher reward wins.",
            True,
            _reward,
        ),
        JudgeKind(
            "openai",
            "openai",
            "an LLM over any OpenAI-compatible chat-completions API (--base-url, --model; key from "
            "OPENAI_API_KEY or --api-key-env NAME, never written anywhere). Each item is asked in both "
            "orders; B wins only when both orders say so, else tie (MT-Bench's rule). Replies are cached "
            "in DIR/cache/ by request content: a rerun costs nothing and a killed run resumes.",
            False,
            _openai,
        ),
        JudgeKind(
            "human",
            "human",
            "--export-html page.html writes a blinded side-by-side page (order randomised per item, keys "
            "1/2/3, progress, choices kept in the browser, exported as JSON); --import choices.json turns "
            "the exported choices into verdicts and the summary.",
            False,
            _human,
        ),
    )
}


def describe() -> str:
    """The judge kinds for ``--help``, from the registry."""
    import textwrap

    lines = []
    for kind in JUDGES.values():
        body = textwrap.wrap(kind.help, 82)
        lines.append(f"  {kind.usage:<16} {body[0]}")
        lines.extend(f"  {'':<16} {line}" for line in body[1:])
    return "\n".join(lines)


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
