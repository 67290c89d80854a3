"""Greedy answers to prompts, each judged on its own, every metric with a bootstrap 95% interval.

    judge_answers(model, tok, prompts, scorer, settings)   the one routine: greedy answers through
                   ``orpo.evaluation.generate``, decoded as ``settings`` says, scored by a pointwise
                   judge (``parse_judge(spec).scorer()``); per item its text and metrics, per metric
                   the mean over items and its interval (``stats.bootstrap_interval``)
    eval_prompts(rows, tok, config, ...)   the first N rows of an eval set as training renders them
    judge_eval_set(model, tok, config, rows, ...)   what ``orpo compare`` records per run and
                   ``orpo tune`` chooses on: the eval prompts answered within the longest reference's
                   length + 8 tokens (capped), judged; a JSON-ready record

Decoding is the caller's choice, stated in ``AnswerSettings.keep_special``: compare and tune judge the
answer a user reads (special tokens dropped); the demo keeps them, since its code-review judge cuts a
review at the EOS marker and a review without one ran out of tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from orpo.evaluation.generate import GenerationSettings, Prompt, generate_ids, prompt_ids
from orpo.evaluation.judges import parse_judge
from orpo.evaluation.judges.pointwise import ScoreItem
from orpo.evaluation.stats import bootstrap_interval

# The cap on a judged eval answer's new tokens (``judge_eval_set``).
MAX_NEW_TOKENS = 512
# Tokens an eval answer may run past the longest reference (``judge_eval_set``).
MARGIN_TOKENS = 8


@dataclass(frozen=True)
class JudgedPrompt:
    """One prompt to answer and judge.

    Attributes:
        id: names the item in the judge's errors.
        text: the prompt as the judge reads it ("" for a judge that reads only the answer).
        ids: the prompt's token ids, as training tokenises it.
        reference: the reference answer the judge compares with, or None.
    """

    id: str
    text: str
    ids: list[int]
    reference: str | None


@dataclass(frozen=True)
class AnswerSettings:
    """How the answers are generated and decoded.

    Attributes:
        max_new_tokens: each answer's cap.
        batch_size: prompts per generation batch.
        bf16: generate under CPU bf16 autocast (as a bf16 run trains).
        keep_special: decode with special tokens kept (the EOS marker stays in the text).
    """

    max_new_tokens: int
    batch_size: int = 16
    bf16: bool = False
    keep_special: bool = False


@dataclass(frozen=True)
class Judged:
    """The answers and their scores.

    Attributes:
        texts: each prompt's decoded answer, in the prompts' order.
        scores: each answer's metrics (None where the judge gave none, e.g. an LLM without a rating).
        metrics: metric -> {"mean", "ci_low", "ci_high"} over the answers that have a score.
    """

    texts: list[str]
    scores: list[dict[str, float] | None]
    metrics: dict[str, dict[str, float]]


def answers(model, tokenizer, prompts: list[JudgedPrompt], settings: AnswerSettings) -> list[str]:
    """Greedy answers, decoded as ``settings.keep_special`` says; the model's train/eval mode is kept."""
    import torch

    generation = GenerationSettings(max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
            outputs = generate_ids(model, tokenizer, [p.ids for p in prompts], generation)
    finally:
        model.train(was_training)
    skip = not settings.keep_special
    return [tokenizer.decode(samples[0][0], skip_special_tokens=skip) for samples in outputs]


def summarise(scores: list[dict[str, float] | None]) -> dict[str, dict[str, float]]:
    """metric -> mean and bootstrap 95% interval over the items scored (the first scored item's metrics)."""
    scored = [s for s in scores if s is not None]
    metrics = {}
    for name in scored[0] if scored else []:
        values = np.array([s[name] for s in scored])
        low, high = bootstrap_interval(values)
        metrics[name] = {"mean": float(values.mean()), "ci_low": low, "ci_high": high}
    return metrics


def judge_answers(model, tokenizer, prompts: list[JudgedPrompt], scorer, settings: AnswerSettings) -> Judged:
    """Greedy answers to ``prompts`` scored one by one by ``scorer`` (a pointwise judge)."""
    texts = answers(model, tokenizer, prompts, settings)
    items = [ScoreItem(p.id, p.text, text, p.reference) for p, text in zip(prompts, texts)]
    scores = scorer.metrics(items)
    return Judged(texts=texts, scores=scores, metrics=summarise(scores))


def eval_prompts(rows, tokenizer, config, *, columns, fmt, n_prompts: int) -> list[JudgedPrompt]:
    """The first ``n_prompts`` rows of an eval set (the recipe's ``data.columns`` and ``data.format``)
    rendered and tokenised as training renders them (``config``: template, BOS, truncation); the
    reference is each row's chosen response."""
    from orpo.data.normalise import normalise
    from orpo.data.tokenize import Limits

    canon = normalise(rows, columns=columns, fmt=fmt, source_name="eval set")
    picked = canon.rows.select(range(min(n_prompts, len(canon.rows))))
    prompts = [
        Prompt(str(i), list(r["prompt"]), r.get("text_prompt"), r["chosen"]) for i, r in enumerate(picked)
    ]
    ids = prompt_ids(
        prompts, tokenizer, config.chat_template_mode, Limits.from_config(config), config.tokenization
    )
    return [JudgedPrompt(p.id, p.text, i, p.reference) for p, i in zip(prompts, ids)]


def judge_eval_set(model, tokenizer, config, rows, *, columns, fmt, judge: str, n_prompts: int) -> dict:
    """The eval set's first ``n_prompts`` prompts answered greedily and judged by ``judge`` (a spec).

    Each answer gets at most the longest reference's tokens + ``MARGIN_TOKENS``, capped at
    ``MAX_NEW_TOKENS``; generation runs under bf16 autocast when ``config.bf16`` on a CPU. Returns the
    judge, the prompts, the budget, the lower-is-better metrics, the seconds and metric -> mean and
    bootstrap 95% interval over the prompts.
    """
    import torch

    start = time.perf_counter()
    scorer = parse_judge(judge).scorer()
    prompts = eval_prompts(rows, tokenizer, config, columns=columns, fmt=fmt, n_prompts=n_prompts)
    longest = max(len(tokenizer(p.reference, add_special_tokens=False)["input_ids"]) for p in prompts)
    settings = AnswerSettings(
        max_new_tokens=min(longest + MARGIN_TOKENS, MAX_NEW_TOKENS),
        batch_size=16,
        bf16=bool(config.bf16) and not torch.cuda.is_available(),
    )
    judged = judge_answers(model, tokenizer, prompts, scorer, settings)
    return {
        "judge": judge,
        "prompts": len(prompts),
        "max_new_tokens": settings.max_new_tokens,
        "lower_is_better": sorted(scorer.lower_is_better),
        "seconds": time.perf_counter() - start,
        "metrics": judged.metrics,
    }
