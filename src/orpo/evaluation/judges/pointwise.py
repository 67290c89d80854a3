"""Pointwise judges: one score per completion (higher is better), from the judges ``orpo judge`` uses
pairwise. The registry (``orpo.evaluation.judges``) builds them from ``--judge``.

  rules:FILE.py | rules:codereview   the rules' pairwise metric of the completion (``--metric`` picks
                                     another; a ``LOWER_IS_BETTER`` metric is negated):
                                     ``RulesJudge.pointwise``
  reward:MODEL                       the reward model's scalar on the prompt and completion
  openai                             an LLM's 1-10 rating over an OpenAI-compatible chat-completions API,
                                     parsed from its reply with a pattern (last match), through the
                                     pairwise judge's client: same retries, key handling and reply cache
  human                              cannot score one completion on its own (no pointwise judge)

Every scorer has ``score(items) -> list[float | None]`` (the one value pairing ranks on),
``metrics(items) -> list[dict | None]`` (every metric of each completion: a rules file's own, else
``{"score": value}``), ``lower_is_better`` (metric names), ``settings()`` and ``counters()``.
A completion whose LLM reply holds no rating (after one more ask) has no score (None): it is counted
as malformed and left out of pairing, never fatal.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from orpo.evaluation.judges.base import Item
from orpo.evaluation.judges.llm import LLMJudge, compile_pattern, last_capture, read_template, substitute
from orpo.evaluation.judges.rules import RulesJudge

DEFAULT_SYSTEM = (
    "You are an impartial judge. Rate how well the AI assistant's answer serves the user's question, on a "
    "scale of 1 (useless) to 10 (perfect): consider correctness, helpfulness, relevance, depth and clarity; "
    "length alone must not sway you. Explain briefly, then give the rating on the last line exactly as "
    '"Rating: [[N]]" with N an integer from 1 to 10.'
)
DEFAULT_TEMPLATE = (
    "[User question]\n{question}\n\n[Assistant's answer - start]\n{answer}\n[Assistant's answer - end]"
)
DEFAULT_SCORE_PATTERN = r"\[\[(\d+(?:\.\d+)?)\]\]"


@dataclass(frozen=True)
class ScoreItem:
    """One completion to score: its prompt's id and text, and the prompt's reference answer or None."""

    id: str
    prompt: str
    completion: str
    reference: str | None


def _item(i: ScoreItem) -> Item:
    return Item(i.id, i.prompt, i.completion, i.completion, i.reference)


def _one_metric(scores: list[float | None]) -> list[dict[str, float] | None]:
    return [None if s is None else {"score": float(s)} for s in scores]


class RulesScorer:
    """``RulesJudge.pointwise`` per completion; ``metrics`` gives every metric the rules return."""

    def __init__(self, spec: str, metric: str | None = None):
        self.judge = RulesJudge(spec, metric=metric)
        self.lower_is_better = set(self.judge.lower_is_better)

    def score(self, items: list[ScoreItem]) -> list[float | None]:
        return [self.judge.pointwise(i.prompt, i.completion, i.reference, item_id=i.id) for i in items]

    def metrics(self, items: list[ScoreItem]) -> list[dict[str, float] | None]:
        return [self.judge.score(_item(i), i.completion) for i in items]

    def settings(self) -> dict:
        return self.judge.settings()

    def counters(self) -> dict:
        return {}


class RewardScorer:
    """The reward model's scalar per completion (``RewardJudge``'s rendering and batching)."""

    lower_is_better: set[str] = set()

    def __init__(self, model: str, batch_size: int = 8):
        from orpo.evaluation.judges.reward import RewardJudge  # deferred: loads torch and the model

        self.judge = RewardJudge(model, batch_size=batch_size)

    def score(self, items: list[ScoreItem]) -> list[float | None]:
        return self.judge.score([self.judge.text(i.prompt, i.completion) for i in items])

    def metrics(self, items: list[ScoreItem]) -> list[dict[str, float] | None]:
        return _one_metric(self.score(items))

    def settings(self) -> dict:
        return self.judge.settings()

    def counters(self) -> dict:
        return {}


class LLMScorer:
    """A 1-10 rating per completion from an LLM; requests go through ``LLMJudge.request`` (cache,
    retries, malformed replies asked once more, the key only in the Authorization header)."""

    lower_is_better: set[str] = set()

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        cache_dir: str | Path,
        api_key_env: str | None = None,
        template: str | None = None,
        score_pattern: str | None = None,
        concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 120.0,
        max_tokens: int = 1024,
    ):

        if not base_url or not model:
            raise ValueError(
                "--judge openai needs --base-url (e.g. http://localhost:8000/v1) and --judge-model NAME"
            )
        self.client = LLMJudge(
            base_url,
            model,
            cache_dir,
            api_key_env=api_key_env,
            concurrency=concurrency,
            max_retries=max_retries,
            timeout=timeout,
            max_tokens=max_tokens,
        )
        self.template_name = template or "default"
        self.template, self.system = read_template(template, DEFAULT_TEMPLATE, DEFAULT_SYSTEM)
        self.pattern_text = score_pattern or DEFAULT_SCORE_PATTERN
        self.pattern = compile_pattern(self.pattern_text, "--score-pattern", "the number")

    def parse(self, reply: str) -> float | None:
        """The number in the last match of the pattern, or None."""
        last = last_capture(self.pattern, reply)
        try:
            return None if last is None else float(last)
        except ValueError:
            return None

    def _messages(self, item: ScoreItem) -> list[dict]:
        values = {"question": item.prompt, "answer": item.completion, "reference": item.reference or ""}
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": substitute(self.template, values)}]

    def score(self, items: list[ScoreItem]) -> list[float | None]:
        pool = ThreadPoolExecutor(max_workers=self.client.concurrency)
        futures = [pool.submit(self.client.request, self._messages(i), self.parse) for i in items]
        try:
            return [f.result()["value"] for f in futures]
        finally:
            # On a fatal error send nothing more; the replies received are cached, so a rerun resumes.
            pool.shutdown(wait=True, cancel_futures=True)

    def metrics(self, items: list[ScoreItem]) -> list[dict[str, float] | None]:
        return _one_metric(self.score(items))

    def settings(self) -> dict:
        return {
            "kind": "openai",
            "base_url": self.client.base_url,
            "model": self.client.model,
            "api_key_env": self.client.key_env,
            "template": self.template_name,
            "score_pattern": self.pattern_text,
            "temperature": 0.0,
            "max_tokens": self.client.max_tokens,
        }

    def counters(self) -> dict:
        return dict(self.client.counters)
