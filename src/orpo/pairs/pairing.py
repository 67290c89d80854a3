"""From one prompt's scored samples to preference pairs: collapse, choose, reject, or drop with a reason.

Per prompt:
  1. identical completions are collapsed into one candidate (the first sample index stands for it);
  2. the chosen response: ``best`` the highest-scoring candidate (ties: the lowest sample index),
     ``reference`` the prompt's reference answer, ``best-or-reference`` the reference when no
     candidate scores at least as well as it, else the best candidate;
  3. the rejected ones: the candidates scoring below the chosen by more than 0 and at least
     ``min_margin``; ``worst`` takes the lowest first, ``random-lower`` a random order (seeded per
     prompt id); ``pairs_per_prompt`` of them, each paired with the same chosen response;
  4. no candidate qualifies: the prompt is dropped with its reason (``DROP_REASONS``). Prompts whose
     samples all match the reference are counted apart: in a later round of iterative training they
     are the learnt ones, and a round trained on its own pairs alone no longer sees them.
Candidates without a score (an LLM reply with no rating) take no part.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

CHOSEN = ("best", "reference", "best-or-reference")
REJECTED = ("worst", "random-lower")
DROP_REASONS = {
    "all_samples_tie": "every distinct sample scores the same, and no reference was taken as chosen",
    "samples_match_reference": "every distinct sample scores the same, at least as well as the reference "
    "(a prompt the model has learnt)",
    "below_min_margin": "samples score lower than the chosen one, but none by --min-margin",
    "none_below_reference": "no sample scores below the reference answer",
    "no_score": "no sample (nor the reference) has a score",
}


@dataclass(frozen=True)
class PairingSettings:
    """How pairs are chosen (see the module docstring); ``seed`` orders ``random-lower``."""

    chosen: str = "best"
    rejected: str = "worst"
    min_margin: float = 0.0
    pairs_per_prompt: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chosen not in CHOSEN:
            raise ValueError(f"--chosen {self.chosen!r}: use one of {', '.join(CHOSEN)}")
        if self.rejected not in REJECTED:
            raise ValueError(f"--rejected {self.rejected!r}: use one of {', '.join(REJECTED)}")
        if self.min_margin < 0:
            raise ValueError(f"--min-margin {self.min_margin} must be >= 0 (0: strictly better)")
        if self.pairs_per_prompt < 1:
            raise ValueError(f"--pairs-per-prompt {self.pairs_per_prompt} must be >= 1")

    @property
    def uses_reference(self) -> bool:
        return self.chosen != "best"


@dataclass(frozen=True)
class Candidate:
    """One distinct completion of a prompt: its text, score (None: unscored) and the sample indices
    that produced it (the first stands for it)."""

    text: str
    score: float | None
    samples: tuple[int, ...]


@dataclass(frozen=True)
class Pair:
    """One preference pair; ``chosen_sample`` is None when the chosen response is the reference."""

    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    chosen_sample: int | None
    rejected_sample: int


@dataclass
class PromptResult:
    """What pairing made of one prompt: its pairs, or the reason it was dropped."""

    pairs: list[Pair] = field(default_factory=list)
    dropped: str | None = None
    reference_used: bool = False


def collapse(completions: list[str], scores: list[float | None]) -> list[Candidate]:
    """Identical completions as one candidate, in order of first appearance."""
    by_text: dict[str, list[int]] = {}
    for k, text in enumerate(completions):
        by_text.setdefault(text, []).append(k)
    return [Candidate(text, scores[ks[0]], tuple(ks)) for text, ks in by_text.items()]


def pair_prompt(
    prompt_id: str,
    candidates: list[Candidate],
    reference: str | None,
    reference_score: float | None,
    settings: PairingSettings,
) -> PromptResult:
    """The pairs of one prompt (see the module docstring)."""
    scored = [c for c in candidates if c.score is not None]
    best = max(scored, key=lambda c: (c.score, -c.samples[0]), default=None)
    has_reference = reference is not None and reference_score is not None
    take_reference = settings.chosen == "reference" or (
        settings.chosen == "best-or-reference"
        and has_reference
        and (best is None or reference_score > best.score)
    )
    if take_reference and not has_reference:
        return PromptResult(dropped="no_score")  # the reference's LLM rating was malformed
    if not take_reference and best is None:
        return PromptResult(dropped="no_score")
    if take_reference:
        chosen_text, chosen_score, chosen_sample = reference, reference_score, None
    else:
        chosen_text, chosen_score, chosen_sample = best.text, best.score, best.samples[0]
    lower = [c for c in scored if c.score < chosen_score and c.text != chosen_text]
    eligible = [c for c in lower if chosen_score - c.score >= settings.min_margin]
    if not eligible:
        if take_reference:
            reason = "none_below_reference"
        elif has_reference and best.score >= reference_score:
            reason = "samples_match_reference"
        else:
            reason = "all_samples_tie"
        return PromptResult(dropped="below_min_margin" if lower else reason)
    if settings.rejected == "worst":
        eligible.sort(key=lambda c: (c.score, c.samples[0]))
    else:
        random.Random(f"{settings.seed}:{prompt_id}").shuffle(eligible)
    pairs = [
        Pair(chosen_text, c.text, chosen_score, c.score, chosen_sample, c.samples[0])
        for c in eligible[: settings.pairs_per_prompt]
    ]
    return PromptResult(pairs=pairs, reference_used=take_reference)
