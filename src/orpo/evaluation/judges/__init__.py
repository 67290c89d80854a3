"""Judges of two models' completions, one module per kind, and the registry the CLI reads.

``--judge`` takes ``KIND`` or ``KIND:ARG``:

  rules:FILE.py | rules:codereview   a Python rule function scores each completion (``rules``)
  reward:MODEL                       a local sequence-classification reward model scores them (``reward``)
  openai                             an LLM over an OpenAI-compatible chat-completions API, both orders (``llm``)
  human                              a blinded HTML page for people; its exported choices are imported (``human``)

Every judge has ``judge(items) -> list[Verdict]`` and ``settings() -> dict``; rule and reward judges
also have ``per_model()`` (each model's mean scores with intervals). Every kind but human also has a
pointwise judge that scores one completion on its own (``pointwise.py``: ``orpo pairs`` ranks samples
with it; ``orpo compare`` and ``orpo tune`` score greedy answers with a rules one).

``parse_judge(spec)`` is the one parser of a ``--judge`` value: every command reads its judge through
it, so a bad spec is the same one-line error everywhere; the ``JudgeSpec`` it returns builds the
pairwise judge (``judge(args)``) or the pointwise one (``scorer(options)``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ScorerOptions:
    """What a pointwise judge may need besides its spec.

    Attributes:
        metric: the rules metric a completion is ranked on (``--metric``; rules only).
        batch_size: completions per forward of a reward model.
        llm: the openai options (``LLMScorer``'s keyword arguments except ``cache_dir``).
        cache_dir: the LLM's reply cache folder.
    """

    metric: str | None = None
    batch_size: int = 8
    llm: dict = field(default_factory=dict)
    cache_dir: str | Path | None = None


@dataclass(frozen=True)
class JudgeKind:
    """One entry of the registry: how ``--judge NAME[:ARG]`` builds its pairwise judge from the CLI
    options (``build``) and its pointwise one (``pointwise``; None: it cannot score one completion)."""

    name: str
    usage: str
    help: str
    needs_arg: bool
    build: Callable[[str | None, argparse.Namespace], object]
    pointwise: Callable[[str | None, ScorerOptions], object] | None


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


def _rules_scorer(arg, options: ScorerOptions):
    from orpo.evaluation.judges.pointwise import RulesScorer

    return RulesScorer(arg, metric=options.metric)


def _reward_scorer(arg, options: ScorerOptions):
    from orpo.evaluation.judges.pointwise import RewardScorer

    return RewardScorer(arg, batch_size=options.batch_size)


def _openai_scorer(arg, options: ScorerOptions):
    from orpo.evaluation.judges.pointwise import LLMScorer

    if options.cache_dir is None:
        raise ValueError("--judge openai needs a reply cache folder (--cache-dir)")
    return LLMScorer(cache_dir=options.cache_dir, **options.llm)


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
            _rules_scorer,
        ),
        JudgeKind(
            "reward",
            "reward:MODEL",
            "a local sequence-classification reward model scores each completion; the higher reward wins.",
            True,
            _reward,
            _reward_scorer,
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
            _openai_scorer,
        ),
        JudgeKind(
            "human",
            "human",
            "--export-html page.html writes a blinded side-by-side page (order randomised per item, keys "
            "1/2/3, progress, choices kept in the browser, exported as JSON); --import choices.json turns "
            "the exported choices into verdicts and the summary.",
            False,
            _human,
            None,
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


@dataclass(frozen=True)
class JudgeSpec:
    """A parsed ``--judge`` value: its kind in the registry and its argument (None when it takes none).

    ``text`` is the spec as given and ``flag`` the option it came from (both for error messages).
    """

    text: str
    kind: JudgeKind
    arg: str | None
    flag: str = "--judge"

    def judge(self, args: argparse.Namespace):
        """The pairwise judge, built from the CLI options ``args``."""
        return self.kind.build(self.arg, args)

    def scorer(self, options: ScorerOptions | None = None):
        """The pointwise judge (one score per completion)."""
        options = options or ScorerOptions()
        if self.kind.pointwise is None:
            raise ValueError(_no_pointwise(self.flag, self.kind.name))
        if options.metric and self.kind.name != "rules":
            raise ValueError(
                f"--metric {options.metric} goes with {self.flag} rules:FILE.py; {self.flag} {self.text} "
                "has one score"
            )
        return self.kind.pointwise(self.arg, options)


def _no_pointwise(flag: str, name: str) -> str:
    usable = ", ".join(k.usage for k in JUDGES.values() if k.pointwise is not None)
    return f"{flag} {name} cannot score one completion on its own (people compare two); use {usable}"


def parse_judge(spec: str, flag: str = "--judge", *, pointwise: bool = False) -> JudgeSpec:
    """``KIND`` or ``KIND:ARG`` -> its ``JudgeSpec``; one-line errors naming ``flag`` and the fix.
    ``pointwise``: the caller scores completions one by one, so a kind without a pointwise judge
    (human) is refused here, before any work."""
    name, _, arg = spec.partition(":")
    kind = JUDGES.get(name)
    if kind is None:
        raise ValueError(
            f"{flag} {spec}: unknown kind {name!r}; use one of {', '.join(k.usage for k in JUDGES.values())}"
        )
    if kind.needs_arg and not arg:
        raise ValueError(f"{flag} {spec}: give {kind.usage}")
    if not kind.needs_arg and arg:
        raise ValueError(f"{flag} {spec}: {name} takes no argument")
    if pointwise and kind.pointwise is None:
        raise ValueError(_no_pointwise(flag, name))
    return JudgeSpec(spec, kind, arg or None, flag)
