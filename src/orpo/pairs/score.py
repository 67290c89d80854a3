"""The pointwise judge ``orpo pairs`` ranks samples with: the registry's (``orpo.evaluation.judges``)
for ``--judge``, built with the command's options. The scorers themselves are judges and live with
them (``orpo.evaluation.judges.pointwise``); a kind without one (human) is refused before sampling.
"""

from __future__ import annotations

from pathlib import Path

from orpo.evaluation.judges import ScorerOptions, parse_judge
from orpo.evaluation.judges.pointwise import ScoreItem

__all__ = ["ScoreItem", "build_scorer"]


def build_scorer(
    spec: str,
    *,
    metric: str | None = None,
    reward_batch_size: int = 8,
    llm: dict | None = None,
    cache_dir: str | Path | None = None,
):
    """The scorer named by ``--judge spec``; ``llm`` holds the openai options (``LLMScorer``'s
    keyword arguments except ``cache_dir``)."""
    options = ScorerOptions(metric=metric, batch_size=reward_batch_size, llm=llm or {}, cache_dir=cache_dir)
    return parse_judge(spec, pointwise=True).scorer(options)
