"""Render a canonical pair to the exact text the model sees: prompt text, chosen text, rejected text.

Input is a canonical row (``orpo.data.formats``): ``prompt`` messages, ``chosen``/``rejected``
strings, ``text_prompt`` (the raw prompt string of string-format sources, else None).

Rules:
- Conversational rows are rendered with the tokenizer's chat template. The prompt is the template
  applied to the prompt messages with ``add_generation_prompt=True``; each response is the suffix of
  the template applied to prompt + that assistant message (so whatever the template puts after the
  generation prompt, e.g. end-of-turn tokens, belongs to the response).
- String rows follow ``chat_template_mode``: 'auto' wraps them as a user turn (plus system) when the
  tokenizer has a template and uses the raw text otherwise; 'always' requires a template; 'never'
  uses the raw text: ``[system + "\\n\\n"] + text_prompt`` then the response appended directly
  (TRL's behaviour for string rows). In 'auto', a string prompt that already contains the
  template's special markers (the tutorials' ``apply_chat_template(..., tokenize=False)`` rows) is
  used raw, never templated twice.
- A tokenizer with no template that meets conversational rows gets ``DEFAULT_CHAT_TEMPLATE`` (ChatML),
  unless the user gives a template string or file (``resolve_chat_template``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def resolve_chat_template(tokenizer, template: str | None = None, mode: str = "auto") -> bool:
    """Install the chat template to use on ``tokenizer``; return whether string rows get wrapped.

    ``template`` is a Jinja string or a path to a file holding one; None keeps the tokenizer's own.
    """
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


def render_pair(row: dict, tokenizer, wrap_strings: bool, markers: tuple[str, ...] = ()) -> RenderedPair:
    """Render one canonical row; ``wrap_strings`` comes from ``resolve_chat_template`` and
    ``markers`` from ``template_markers`` (string prompts containing one are already templated)."""
    messages: list[dict] = row["prompt"]
    text_prompt = row.get("text_prompt")
    pre_templated = text_prompt is not None and any(m in text_prompt for m in markers)
    if text_prompt is not None and (not wrap_strings or pre_templated):
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        prompt = f"{system}\n\n{row['text_prompt']}" if system else row["text_prompt"]
        return RenderedPair(prompt, row["chosen"], row["rejected"])
    prompt = _template(tokenizer, messages, True)
    return RenderedPair(
        prompt,
        _response_suffix(tokenizer, messages, prompt, row["chosen"]),
        _response_suffix(tokenizer, messages, prompt, row["rejected"]),
    )
