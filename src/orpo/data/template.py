"""Render a canonical pair to the exact text the model sees: prompt text, chosen text, rejected text.

Input is a canonical row (``orpo.data.formats``): ``prompt`` messages, ``chosen``/``rejected``
strings, ``text_prompt`` (the raw prompt string of string-format sources, else None).

Two rule sets, chosen by ``ORPOConfig.tokenization`` (``TOKENIZATIONS``):

"trl" (TRL 1.16's ``maybe_extract_prompt`` + ``maybe_apply_chat_template``, the drop-in default):
- ``prompt``/``chosen``/``rejected`` strings are used raw; a ``system`` column is ignored, as TRL ignores it.
- Implicit-prompt strings (transcripts included) are split by TRL's ``extract_prompt`` rule on the
  source strings (``orpo.data.formats.trl_extract_prompt``): for hh-rlhf rows whose responses share
  their first words, TRL's prompt ends inside the response, and so does ours in this mode.
- Conversations: prompt = template(prompt messages, generation prompt), each side = template(prompt +
  that response); the prompt is cut back to the text all three share and each response is the rest.
- Layouts TRL has no reading of (instruction/input columns, ShareGPT) render as in "orpo" with
  ``chat_template_mode: never``.

"orpo" (our improvements; the YAML recipes' default):
- Conversational rows are rendered with the tokenizer's chat template. The prompt is the template
  applied to the prompt messages with ``add_generation_prompt=True``; each response is the suffix of
  the template applied to prompt + that assistant message (so whatever the template puts after the
  generation prompt, e.g. end-of-turn tokens, belongs to the response).
- String rows follow ``chat_template_mode``: 'auto' wraps them as a user turn (plus system) when the
  tokenizer has a template and uses the raw text otherwise; 'always' requires a template; 'never'
  uses the raw text: ``[system + "\\n\\n"] + text_prompt`` then the response appended directly
  (TRL's behaviour for string rows). In 'auto', a string prompt that already contains the
  template's special markers (the tutorials' ``apply_chat_template(..., tokenize=False)`` rows) is
  used raw, never templated twice. A string row wrapped in a template loses the whitespace that
  starts its responses (the space after ``Assistant:`` of a transcript, or before a completion):
  inside a chat turn it is noise the model would learn to emit.
- A tokenizer with no template that meets conversational rows gets ``DEFAULT_CHAT_TEMPLATE`` (ChatML),
  unless the user gives a template string or file (``resolve_chat_template``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

from orpo.data.formats import IMPLICIT_STRING_LAYOUTS, PROMPT_STRINGS, trl_extract_prompt

TRL, ORPO = "trl", "orpo"
TOKENIZATIONS = (TRL, ORPO)

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class RenderedPair:
    """The three texts of one pair, exactly as they will be tokenised."""

    prompt: str
    chosen: str
    rejected: str


def resolve_chat_template(tokenizer, template: str | None = None, mode: str | None = "auto") -> bool:
    """Install the chat template to use on ``tokenizer``; return whether string rows get wrapped.

    ``template`` is a Jinja string or a path to a file holding one; None keeps the tokenizer's own.
    ``mode`` None is 'never' (string rows raw, as ``tokenization: trl`` renders them).
    """
    mode = mode or "never"
    if template:
        path = Path(template)
        tokenizer.chat_template = path.read_text() if len(template) < 4096 and path.is_file() else template
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode == "always" and not has_template:
        raise ValueError(
            "chat_template_mode='always' but the tokenizer has no chat template; set `chat_template` "
            "(a Jinja string or file) or use chat_template_mode='auto'"
        )
    return has_template and mode != "never"


def _template(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    template = tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=template
    )


def _response_suffix(tokenizer, messages: list[dict], prompt_text: str, response: str) -> str:
    full = _template(tokenizer, [*messages, {"role": "assistant", "content": response}], False)
    if not full.startswith(prompt_text):
        # Some templates render earlier turns differently once a reply follows (e.g. they strip
        # reasoning); the pair cannot share one prompt then.
        raise ValueError(
            "the chat template renders the prompt differently when a response follows, so the prompt "
            "cannot be shared by chosen and rejected; pass a template that does not (chat_template)"
        )
    return full[len(prompt_text) :]


def template_markers(tokenizer) -> tuple[str, ...]:
    """Special tokens the chat template writes into a rendered prompt (e.g. ``<|im_start|>``)."""
    if not getattr(tokenizer, "chat_template", None):
        return ()
    rendered = _template(tokenizer, [{"role": "user", "content": "x"}], True)
    return tuple(t for t in tokenizer.all_special_tokens if t and t in rendered)


def _common_prefix(*texts: str) -> str:
    return "".join(chars[0] for chars in takewhile(lambda chars: len(set(chars)) == 1, zip(*texts)))


def _raw_pair(row: dict) -> RenderedPair:
    """A string row as raw text: ``[system + "\\n\\n"] + text_prompt``, the responses appended directly."""
    system = next((m["content"] for m in row["prompt"] if m["role"] == "system"), None)
    prompt = f"{system}\n\n{row['text_prompt']}" if system else row["text_prompt"]
    return RenderedPair(prompt, row["chosen"], row["rejected"])


# (render_pair -> render_pair_trl, never back: datasets' fingerprint hasher recurses forever on two
# module functions that call each other.)
def render_pair_trl(row: dict, tokenizer) -> RenderedPair:
    """The texts TRL 1.16's ORPOTrainer tokenises for this row (module docstring, "trl")."""
    text_prompt = row.get("text_prompt")
    layout = row.get("layout")
    if text_prompt is not None and layout in IMPLICIT_STRING_LAYOUTS:
        return RenderedPair(*trl_extract_prompt(text_prompt + row["chosen"], text_prompt + row["rejected"]))
    if text_prompt is not None and layout == PROMPT_STRINGS:
        return RenderedPair(text_prompt, row["chosen"], row["rejected"])
    if text_prompt is not None:
        return _raw_pair(row)
    messages: list[dict] = row["prompt"]
    prompt = _template(tokenizer, messages, True)
    chosen, rejected = (
        _template(tokenizer, [*messages, {"role": "assistant", "content": row[side]}], False)
        for side in ("chosen", "rejected")
    )
    # TRL keeps the text the three renderings share (templates that add tokens with the generation
    # prompt, e.g. DeepSeek-R1's, render it differently once a response follows).
    prompt = _common_prefix(prompt, chosen, rejected)
    return RenderedPair(prompt, chosen[len(prompt) :], rejected[len(prompt) :])


def render_pair(
    row: dict,
    tokenizer,
    wrap_strings: bool,
    markers: tuple[str, ...] = (),
    tokenization: str = ORPO,
) -> RenderedPair:
    """Render one canonical row; ``wrap_strings`` comes from ``resolve_chat_template`` and
    ``markers`` from ``template_markers`` (string prompts containing one are already templated).
    ``tokenization`` "trl" ignores both and renders as TRL (``render_pair_trl``)."""
    if tokenization == TRL:
        return render_pair_trl(row, tokenizer)
    messages: list[dict] = row["prompt"]
    text_prompt = row.get("text_prompt")
    pre_templated = text_prompt is not None and any(m in text_prompt for m in markers)
    if text_prompt is not None and (not wrap_strings or pre_templated):
        return _raw_pair(row)
    prompt = _template(tokenizer, messages, True)
    # A string row's responses may start with the whitespace that joined them to the raw prompt.
    chosen, rejected = (
        row[s].lstrip() if text_prompt is not None else row[s] for s in ("chosen", "rejected")
    )
    return RenderedPair(
        prompt,
        _response_suffix(tokenizer, messages, prompt, chosen),
        _response_suffix(tokenizer, messages, prompt, rejected),
    )
