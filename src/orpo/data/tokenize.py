"""Tokenise a rendered pair into the engine's columns, with truncation that never breaks a pair.

Output columns (``orpo.engine.types.PAIR_COLUMNS``): ``prompt_input_ids``, ``chosen_input_ids``,
``rejected_input_ids``.

Guarantees:
- The prompt ids are computed once and shared by chosen and rejected.
- No token straddles the prompt/response boundary: a response is the tail of
  ``tokenize(prompt + response)`` when that starts with ``tokenize(prompt)`` (this keeps
  SentencePiece's word-initial spaces right); otherwise (the tokenizer merged across the
  boundary) the response is tokenised on its own.
- BOS exactly once, first, when the tokenizer itself adds BOS to plain text (templates that render
  BOS as text are not doubled). Tokenizers that add no BOS (Qwen, GPT-2) get none. TRL prepends
  ``bos_token_id`` whenever it exists; we follow the tokenizer, which is how the model was trained.
- EOS exactly once, last, in each complete response: whitespace the template puts after the final
  EOS is cut, and EOS is appended when absent.
- Truncation: ``max_prompt_length`` trims the prompt (keeping its end by default, and BOS), then
  ``max_completion_length`` and ``max_length`` trim each response from the end. A response cut
  short loses its EOS (the model must not learn to stop there). A pair where either response keeps
  fewer than ``min_response_tokens`` is dropped, with reason ``no_room_for_response`` when truncation
  did it and ``response_too_short`` otherwise; TRL's rule can cut both responses to nothing and then
  divides by zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from orpo.data.template import RenderedPair

DROP_NO_ROOM = "no_room_for_response"
DROP_TOO_SHORT = "response_too_short"


@dataclass(frozen=True)
class Limits:
    """Length limits in tokens; None means no limit."""

    max_length: int | None = None
    max_prompt_length: int | None = None
    max_completion_length: int | None = None
    prompt_truncation_side: str = "left"
    min_response_tokens: int = 1

    @classmethod
    def from_config(cls, config) -> Limits:
        return cls(
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
            max_completion_length=config.max_completion_length,
            prompt_truncation_side=config.prompt_truncation_side,
            min_response_tokens=config.min_response_tokens,
        )


@dataclass
class TokenisedPair:
    """One pair's token ids plus what tokenisation did to it (for ``orpo data inspect``)."""

    prompt_input_ids: list[int]
    chosen_input_ids: list[int]
    rejected_input_ids: list[int]
    prompt_truncated: bool = False
    chosen_truncated: bool = False
    rejected_truncated: bool = False
    boundary_retokenised: bool = False
    drop_reason: str = ""


class PairTokenizer:
    """Callable that tokenises ``RenderedPair``s for one tokenizer and one set of limits."""

    def __init__(self, tokenizer, limits: Limits):
        self.tokenizer = tokenizer
        self.limits = limits
        self.eos_id = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.bos_id = bos if bos is not None and probe[:1] == [bos] else None

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _response_ids(self, prompt_text: str, prompt_ids: list[int], response: str) -> tuple[list[int], bool]:
        full = self._encode(prompt_text + response)
        if full[: len(prompt_ids)] == prompt_ids:
            return full[len(prompt_ids) :], False
        # The tokenizer merged across the boundary. Encoded on its own, a SentencePiece-style tokenizer
        # would give the response a word-initial "▁" (decode: "ab c", not "abc"); after a special
        # token, which is never merged, the response is tokenised as a continuation instead.
        if self.eos_id is not None:
            anchored = self._encode(self.tokenizer.eos_token + response)
            if anchored[:1] == [self.eos_id]:
                return anchored[1:], True
        return self._encode(response), True

    def _end_with_eos(self, ids: list[int]) -> list[int]:
        if self.eos_id is None:
            return ids
        if self.eos_id in ids:
            last = len(ids) - 1 - ids[::-1].index(self.eos_id)
            tail = ids[last + 1 :]
            if not tail or not self.tokenizer.decode(tail).strip():
                return ids[: last + 1]
        return [*ids, self.eos_id]

    def _truncate_prompt(self, ids: list[int]) -> tuple[list[int], bool]:
        limit = self.limits.max_prompt_length
        if limit is None or len(ids) <= limit:
            return ids, False
        keep_bos = self.bos_id is not None and ids[:1] == [self.bos_id]
        body = ids[1:] if keep_bos else ids
        room = limit - int(keep_bos)
        body = body[len(body) - room :] if self.limits.prompt_truncation_side == "left" else body[:room]
        return ([self.bos_id] if keep_bos else []) + body, True

    def _truncate_response(self, ids: list[int], prompt_len: int) -> tuple[list[int], bool]:
        room = len(ids)
        if self.limits.max_completion_length is not None:
            room = min(room, self.limits.max_completion_length)
        if self.limits.max_length is not None:
            room = min(room, self.limits.max_length - prompt_len)
        room = max(room, 0)
        return ids[:room], room < len(ids)

    def __call__(self, pair: RenderedPair) -> TokenisedPair:
        raw_prompt = self._encode(pair.prompt)
        chosen, merged_c = self._response_ids(pair.prompt, raw_prompt, pair.chosen)
        rejected, merged_r = self._response_ids(pair.prompt, raw_prompt, pair.rejected)
        prompt = raw_prompt
        if self.bos_id is not None and prompt[:1] != [self.bos_id]:
            prompt = [self.bos_id, *prompt]
        prompt, prompt_cut = self._truncate_prompt(prompt)
        chosen, chosen_cut = self._truncate_response(self._end_with_eos(chosen), len(prompt))
        rejected, rejected_cut = self._truncate_response(self._end_with_eos(rejected), len(prompt))
        drop = ""
        if min(len(chosen), len(rejected)) < self.limits.min_response_tokens:
            drop = DROP_NO_ROOM if (chosen_cut or rejected_cut) else DROP_TOO_SHORT
        return TokenisedPair(
            prompt_input_ids=prompt,
            chosen_input_ids=chosen,
            rejected_input_ids=rejected,
            prompt_truncated=prompt_cut,
            chosen_truncated=chosen_cut,
            rejected_truncated=rejected_cut,
            boundary_retokenised=merged_c or merged_r,
            drop_reason=drop,
        )
