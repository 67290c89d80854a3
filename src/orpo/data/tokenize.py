"""Tokenise a rendered pair into the engine's columns, with truncation that never breaks a pair.

Output columns (``orpo.engine.types.PAIR_COLUMNS`` and ``PROMPT_TAIL_COLUMNS``): ``prompt_input_ids``
(the prompt tokens both sequences share), ``chosen_input_ids`` / ``rejected_input_ids`` (the rest of each
sequence), and ``chosen_prompt_tail_length`` / ``rejected_prompt_tail_length`` (how many of those are
still that sequence's prompt; 0 unless "trl" kept a merge across the boundary, see below).

Two rule sets, chosen by ``ORPOConfig.tokenization``:

"trl": exactly the input ids and labels of TRL 1.16's ``ORPOTrainer.tokenize_row`` (``trl_sequences``):
- each side is ``tokenize(prompt + response)`` split at ``len(tokenize(prompt))``, one token earlier
  when the tokenizer merged across the boundary (the merged token then belongs to the response);
- ``bos_token_id`` is prepended whenever the tokenizer has one and the prompt does not start with it,
  even when the tokenizer itself adds no BOS to plain text;
- ``eos_token_id`` is appended unless the response already ends with it;
- a response is cut to ``max_length`` minus its own sequence's prompt tokens (None is TRL's 512); TRL 1.16 has
  no prompt truncation, and ``max_prompt_length`` / ``max_completion_length`` apply only when set.
Where we depart, and why: a pair whose response is cut to nothing is dropped (TRL divides by zero).
The engine encodes the prompt once per pair, so ``prompt_input_ids`` is the longest common prefix of the
two sequences' prompts. When only one side merged across the boundary (or both merged differently), the
rest of each side's prompt, its tail, opens that side's ids and its length is recorded: the tail is
prompt (masked in the log-probs, in the NLL when it covers the prompt), exactly as TRL's labels have it,
and every input id stays TRL's.

"orpo" (our improvements):
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
DROP_EMPTY_PROMPT = "empty_prompt"
TRL_DEFAULT_MAX_LENGTH = 512  # what TRL 1.16's ORPOTrainer uses when max_length is None


def describe_tokenization(tokenization: str, chat_template_mode: str | None) -> str:
    """One line saying which tokenisation rules are in force (printed when training starts)."""
    if tokenization == "trl":
        return (
            "tokenization=trl: TRL 1.16's exact tokens (string rows raw, BOS prepended whenever the tokenizer "
            "has one, prompt+response tokenised together); tokenization='orpo' templates string rows and "
            "adds BOS only as the tokenizer does"
        )
    return (
        f"tokenization=orpo: string rows per chat_template_mode={chat_template_mode}, BOS as the tokenizer "
        "adds it, no token across the prompt/response boundary; tokenization='trl' gives TRL's exact tokens"
    )


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
    chosen_prompt_tail_length: int = 0
    rejected_prompt_tail_length: int = 0
    boundary_retokenised: bool = False
    drop_reason: str = ""

    def responses(self) -> tuple[list[int], list[int]]:
        """(chosen, rejected) response ids, without the prompt tails."""
        return (
            self.chosen_input_ids[self.chosen_prompt_tail_length :],
            self.rejected_input_ids[self.rejected_prompt_tail_length :],
        )


@dataclass(frozen=True)
class TrlSequences:
    """TRL 1.16's two training sequences of one pair, before truncation.

    ``chosen`` / ``rejected`` are the full input ids (prompt, response, EOS); the first
    ``chosen_prompt`` / ``rejected_prompt`` of them are prompt (label -100 in TRL). ``merged``: the
    tokenizer merged prompt and response across the boundary on at least one side.
    """

    chosen: list[int]
    chosen_prompt: int
    rejected: list[int]
    rejected_prompt: int
    merged: bool = False


def trl_sequences(tokenizer, pair: RenderedPair) -> TrlSequences:
    """The input ids TRL 1.16's ``tokenize_row`` builds for ``pair`` (module docstring, "trl")."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt_ids = encode(pair.prompt)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    sides = []
    merged = False
    for response in (pair.chosen, pair.rejected):
        full = encode(pair.prompt + response)
        split = len(prompt_ids) if full[: len(prompt_ids)] == prompt_ids else max(len(prompt_ids) - 1, 0)
        merged |= split != len(prompt_ids)
        prompt, answer = full[:split], full[split:]
        if bos is not None and prompt[:1] != [bos]:
            prompt = [bos, *prompt]
        if eos is not None and answer[-1:] != [eos]:
            answer = [*answer, eos]
        sides.append((prompt + answer, len(prompt)))
    return TrlSequences(sides[0][0], sides[0][1], sides[1][0], sides[1][1], merged)


class PairTokenizer:
    """Callable that tokenises ``RenderedPair``s for one tokenizer and one set of limits."""

    def __init__(self, tokenizer, limits: Limits, tokenization: str = "orpo"):
        if tokenization not in ("trl", "orpo"):
            raise ValueError(f"tokenization={tokenization!r} is not 'trl' or 'orpo'")
        self.tokenizer = tokenizer
        self.limits = limits
        self.tokenization = tokenization
        self.eos_id = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        # "orpo": BOS as the tokenizer adds it to plain text; "trl": whenever the tokenizer has one.
        adds_bos = probe[:1] == [bos] or tokenization == "trl"
        self.bos_id = bos if bos is not None and adds_bos else None

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
        max_length = self.limits.max_length
        if max_length is None and self.tokenization == "trl":
            max_length = TRL_DEFAULT_MAX_LENGTH
        if max_length is not None:
            room = min(room, max_length - prompt_len)
        room = max(room, 0)
        return ids[:room], room < len(ids)

    def _trl_pair(self, pair: RenderedPair) -> TokenisedPair:
        """TRL's two sequences, each truncated on its own as TRL does, then split at their common prefix."""
        seqs = trl_sequences(self.tokenizer, pair)
        prompts, responses, cuts = [], [], []
        for ids, split in ((seqs.chosen, seqs.chosen_prompt), (seqs.rejected, seqs.rejected_prompt)):
            prompt, prompt_cut = self._truncate_prompt(ids[:split])
            response, response_cut = self._truncate_response(ids[split:], len(prompt))
            prompts.append(prompt)
            responses.append(response)
            cuts.append((prompt_cut, response_cut))
        shared = 0
        while shared < min(map(len, prompts)) and prompts[0][shared] == prompts[1][shared]:
            shared += 1
        return self._finish(
            prompts[0][:shared],
            (prompts[0][shared:], prompts[1][shared:]),
            (responses[0], responses[1]),
            (cuts[0][0] or cuts[1][0], cuts[0][1], cuts[1][1]),
            seqs.merged,
        )

    def __call__(self, pair: RenderedPair) -> TokenisedPair:
        if self.tokenization == "trl":
            return self._trl_pair(pair)
        raw_prompt = self._encode(pair.prompt)
        chosen, merged_c = self._response_ids(pair.prompt, raw_prompt, pair.chosen)
        rejected, merged_r = self._response_ids(pair.prompt, raw_prompt, pair.rejected)
        prompt = raw_prompt
        if self.bos_id is not None and prompt[:1] != [self.bos_id]:
            prompt = [self.bos_id, *prompt]
        prompt, prompt_cut = self._truncate_prompt(prompt)
        chosen, chosen_cut = self._truncate_response(self._end_with_eos(chosen), len(prompt))
        rejected, rejected_cut = self._truncate_response(self._end_with_eos(rejected), len(prompt))
        return self._finish(
            prompt, ([], []), (chosen, rejected), (prompt_cut, chosen_cut, rejected_cut), merged_c or merged_r
        )

    def _finish(
        self,
        prompt: list[int],
        tails: tuple[list[int], list[int]],
        responses: tuple[list[int], list[int]],
        cut: tuple[bool, bool, bool],
        merged: bool,
    ) -> TokenisedPair:
        """The pair with each side's prompt tail before its response, or its drop reason."""
        drop = ""
        if not prompt:
            # Only without a BOS: the prompt's first word merged into a response, so the two sequences
            # share no prompt token, and the engine needs one to predict the responses from.
            drop = DROP_EMPTY_PROMPT
        elif min(map(len, responses)) < self.limits.min_response_tokens:
            drop = DROP_NO_ROOM if (cut[1] or cut[2]) else DROP_TOO_SHORT
        return TokenisedPair(
            prompt_input_ids=prompt,
            chosen_input_ids=tails[0] + responses[0],
            rejected_input_ids=tails[1] + responses[1],
            chosen_prompt_tail_length=len(tails[0]),
            rejected_prompt_tail_length=len(tails[1]),
            prompt_truncated=cut[0],
            chosen_truncated=cut[1],
            rejected_truncated=cut[2],
            boundary_retokenised=merged,
            drop_reason=drop,
        )
