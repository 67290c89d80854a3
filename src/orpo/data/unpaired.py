"""Unpaired examples for KTO: pairs split in two, each example tokenised, each given its KL sample.

KTO (``orpo.losses.kto``) trains on examples (x, y, label). Three steps turn canonical rows
(``orpo.data.formats``; an unpaired row is a half pair, its completion on the side its label names)
into the engine's pair columns:

1. ``unpair``: a pair (x, y_w, y_l) gives (x, y_w, desirable) and (x, y_l, undesirable), in TRL 1.16's
   order (``unpair_preference_dataset``: per block of 1000 rows, every chosen half, then every rejected
   half); unpaired rows pass through.
2. ``ExampleTokenizer``: prompt ids and completion ids. "trl" follows TRL 1.16's KTOTrainer: strings
   raw, EOS text appended to the completion unless it ends with it, ``tokenizer(prompt)`` and
   ``tokenizer(prompt + completion)`` with the tokenizer's own special tokens; conversations through
   the chat template (prompt with the generation prompt, prompt + assistant completion); the completion
   is what follows the two token lists' common prefix, which is the prompt (a prompt token merged with
   the completion's first characters thus belongs to the completion). A prompt of ``max_length`` tokens
   or more leaves no room and is dropped; a longer sequence is cut to ``max_length`` from the end.
   "orpo" tokenises the example as a pair whose two responses are the completion
   (``orpo.data.tokenize``), so every rule of that setting applies.
3. ``with_kl_samples``: the KL sample of example i is its prompt with the completion of the previous
   example in its block of ``per_device_train_batch_size`` (the block's first takes its last), cut to
   ``max_length``: TRL's rotation. Fixed here, in the data, rather than at batch time: the reference
   log-probs of the KL samples can then be precomputed and cached like any pair's, and with sequential
   sampling each batch's KL samples are exactly its own completions, as in TRL. Under random sampling
   each KL sample is still a mismatched prompt and completion, which is what the estimate needs.

The result is the engine's pair layout: ``prompt_input_ids`` x_i, ``chosen_input_ids`` y_i,
``rejected_input_ids`` the KL completion y'_i, plus ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset

from orpo.data.formats import IMPLICIT_STRING_LAYOUTS, PROMPT_STRINGS, trl_extract_prompt
from orpo.data.template import _template, render_pair
from orpo.data.tokenize import DROP_NO_ROOM, DROP_TOO_SHORT, PairTokenizer, TokenisedPair

LABEL_COLUMN = "label"
TRL_UNPAIR_BLOCK = 1000  # rows per block of TRL's unpair_preference_dataset (datasets' map batch size)


def _half(row: dict, label: bool, tokenization: str) -> dict:
    """The example of ``row`` with this label: the other response emptied."""
    half = {**row, "label": label, ("rejected" if label else "chosen"): ""}
    if tokenization == "trl" and row["text_prompt"] is not None and row["layout"] in IMPLICIT_STRING_LAYOUTS:
        # TRL extracts the prompt from the pair before splitting it; a half alone has no pair to split.
        prompt, chosen, rejected = trl_extract_prompt(
            row["text_prompt"] + row["chosen"], row["text_prompt"] + row["rejected"]
        )
        half.update(
            text_prompt=prompt,
            layout=PROMPT_STRINGS,
            chosen=chosen if label else "",
            rejected="" if label else rejected,
        )
    return half


def unpair(rows: Dataset, tokenization: str, source_index: list[int]) -> tuple[Dataset, list[int], int]:
    """(examples, the source row of each, pairs split) from canonical rows; see the module docstring."""
    out: list[dict] = []
    sources: list[int] = []
    split = 0
    for start in range(0, len(rows), TRL_UNPAIR_BLOCK):
        block = rows.select(range(start, min(start + TRL_UNPAIR_BLOCK, len(rows))))
        firsts, seconds = [], []
        for offset, row in enumerate(block):
            source = source_index[start + offset]
            if row["label"] is not None:
                firsts.append((row, source))
                continue
            split += 1
            firsts.append((_half(row, True, tokenization), source))
            seconds.append((_half(row, False, tokenization), source))
        for row, source in firsts + seconds:
            out.append(row)
            sources.append(source)
    return Dataset.from_list(out, features=rows.features), sources, split


def completion_text(row: dict) -> str:
    """An example's one completion (a half pair's non-empty side)."""
    return row["chosen"] if row["label"] else row["rejected"]


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass
class ExampleTokenizer:
    """Tokenises one example (a half pair) to (prompt ids, completion ids); see the module docstring."""

    tokenizer: object
    pair_tokenizer: PairTokenizer
    tokenization: str
    wrap: bool = False
    markers: tuple[str, ...] = ()

    def __call__(self, row: dict) -> TokenisedPair:
        completion = completion_text(row)
        if self.tokenization != "trl":
            whole = render_pair(
                {**row, "chosen": completion, "rejected": completion}, self.tokenizer, self.wrap, self.markers
            )
            return self.pair_tokenizer(whole)
        tok = self.tokenizer
        if row["text_prompt"] is not None:
            system = next((m["content"] for m in row["prompt"] if m["role"] == "system"), None)
            keep_system = system and row["layout"] != PROMPT_STRINGS  # TRL ignores a system column
            prompt = f"{system}\n\n{row['text_prompt']}" if keep_system else row["text_prompt"]
            eos = tok.eos_token
            if eos and not completion.endswith(eos):
                completion += eos
            prompt_ids = tok(prompt)["input_ids"]
            full = tok(prompt + completion)["input_ids"]
        else:
            messages = list(row["prompt"])
            encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
            prompt_ids = encode(_template(tok, messages, True))
            full = encode(_template(tok, [*messages, {"role": "assistant", "content": completion}], False))
        n = _common_prefix_length(prompt_ids, full)
        prompt_ids, completion_ids = full[:n], full[n:]
        max_length = self.pair_tokenizer.limits.max_length
        drop, cut = "", False
        if max_length is not None:
            if n >= max_length:
                drop = DROP_NO_ROOM
            cut = len(full) > max_length
            completion_ids = completion_ids[: max(max_length - n, 0)]
        if not drop and not completion_ids:
            drop = DROP_TOO_SHORT
        return TokenisedPair(
            prompt_input_ids=prompt_ids,
            chosen_input_ids=completion_ids,
            rejected_input_ids=completion_ids,
            chosen_truncated=cut,
            rejected_truncated=cut,
            drop_reason=drop,
        )


def _rotate(batch: dict, max_length: int | None) -> dict:
    """``Dataset.map`` body over one block: each example's KL completion is the previous one's."""
    completions = batch["chosen_input_ids"]
    rotated = completions[-1:] + completions[:-1]
    kl = []
    for prompt, completion in zip(batch["prompt_input_ids"], rotated):
        room = len(completion) if max_length is None else max(max_length - len(prompt), 1)
        kl.append(completion[:room])
    return {"rejected_input_ids": kl}


def with_kl_samples(examples: Dataset, block: int, max_length: int | None) -> Dataset:
    """``examples`` with ``rejected_input_ids`` = each example's KL completion (module docstring)."""
    return examples.map(
        _rotate,
        batched=True,
        batch_size=block,
        fn_kwargs={"max_length": max_length},
        desc="Pairing KL samples",
    )
