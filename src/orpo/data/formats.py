"""Detect which preference-data layout each row of a dataset is in and normalise it to one canonical pair.

The accepted layouts (format names in quotes), each with a public dataset that uses it:

1-2. "prompt_strings": ``prompt``, ``chosen``, ``rejected`` strings, optional ``system``
     (TRL's standard layout; jondurbin/truthy-dpo-v0.1). ``chosen``/``rejected`` may also be one
     assistant message (a dict, or a list holding one).
3.   "instruction": optional ``system``, then ``instruction`` (+ optional ``input``, joined by a blank
     line, Alpaca-style), or ``input``, or ``question``; ``chosen``, ``rejected`` strings
     (argilla/distilabel-intel-orca-dpo-pairs).
4.   "chat_explicit": ``prompt`` is a list of messages, ``chosen``/``rejected`` one assistant message.
5.   "chat_implicit": ``chosen``/``rejected`` are whole conversations; the prompt is their longest
     shared run of messages (HuggingFaceH4/ultrafeedback_binarized).
6.   "transcript": ``chosen``/``rejected`` are ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` strings; the
     prompt is their shared text cut back to just after the last shared ``"\\n\\nAssistant:"``
     (Anthropic/hh-rlhf).
7.   "sharegpt": ``conversations`` (``from``/``value`` or ``role``/``content`` messages) plus
     ``chosen``/``rejected`` assistant messages.
8.   "implicit_strings": only ``chosen``/``rejected`` strings that share a prompt prefix (TRL's "standard
     implicit prompt" layout). The prompt is extracted as TRL 1.16's ``extract_prompt`` does: the longest
     common prefix of the two strings, moved back by one character when that character is a space (so
     the space starts the responses); when one string is a prefix of the other, TRL's loop stops one
     character short and so do we.
9.   "unpaired": ``prompt``, ``completion``, ``label`` (bool: true = desirable), no pair (TRL's unpaired
     preference layout, trl-lib/kto-mix-14k); ``prompt`` a string or a list of messages, ``completion`` a
     string or one assistant message. Only ``method: kto`` trains on it; a bad label is an error, not a
     drop (a thumbs-up read as a thumbs-down would train the wrong way).

Canonical row (the contract ``orpo.data.template`` consumes), one per pair::

    prompt:      list[{"role", "content"}]  optional system first, then user/assistant turns, ending with user
    chosen:      str                        the chosen response
    rejected:    str                        the rejected response
    text_prompt: str | None                 the raw prompt string of string layouts (1-3, 6, 8), without the
                                            system text, so a no-template mode reproduces the original
                                            text; None for conversational layouts (4, 5, 7)
    layout:      str                        the source layout (one of ``FORMATS``): TRL-exact rendering
                                            (``orpo.data.template``) depends on it
    label:       bool | None                None for a pair. An unpaired example is a half pair: true puts
                                            its completion in ``chosen`` (``rejected`` empty), false in
                                            ``rejected`` (``chosen`` empty)

For the implicit string layouts (6, 8) ``text_prompt + chosen`` is the source's ``chosen`` string exactly
(the transcript's response keeps the space after ``Assistant:``), so the raw text is never altered.

Detection (``detect_layouts``) reads every row: the columns tell layouts with different fields apart,
each row's values tell a message list from a string. So a file may mix, say, prompt/chosen/rejected
strings with whole conversations: every row is normalised in its own layout, the source's format is
``"mixed"`` and ``describe_layouts`` says how many rows are in each. A kept row's layout depends on that
row alone (transcript vs implicit strings aside, see ``detect_layouts``), so a file split into train
and eval sets gives each row the same layout in either.

Rows that cannot train are dropped, never fixed silently, and counted by reason (``DROP_REASONS``).

This module holds one row's parsing and detection; ``orpo.data.normalise`` runs them over a whole
dataset.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from datasets import Dataset, Features, List, Value

PROMPT_STRINGS = "prompt_strings"
INSTRUCTION = "instruction"
CHAT_EXPLICIT = "chat_explicit"
CHAT_IMPLICIT = "chat_implicit"
TRANSCRIPT = "transcript"
SHAREGPT = "sharegpt"
IMPLICIT_STRINGS = "implicit_strings"
UNPAIRED = "unpaired"
FORMATS = (
    PROMPT_STRINGS,
    INSTRUCTION,
    CHAT_EXPLICIT,
    CHAT_IMPLICIT,
    TRANSCRIPT,
    SHAREGPT,
    IMPLICIT_STRINGS,
    UNPAIRED,
)
UNPAIRED_FIELDS = frozenset({"prompt", "completion", "label"})  # the columns of the unpaired layout
# Layouts whose prompt is extracted from chosen/rejected rather than given.
IMPLICIT_STRING_LAYOUTS = (TRANSCRIPT, IMPLICIT_STRINGS)
MIXED = "mixed"  # the format of a source whose rows are in more than one layout

# Drop reasons: user-visible names in counts, keep them stable.
MISSING_FIELD = "missing_field"  # the field is absent or null (Arrow cannot tell the two apart)
NOT_TEXT = "not_text"  # a number, a list, a message without string content ...
EMPTY_PROMPT = "empty_prompt"
EMPTY_RESPONSE = "empty_response"
IDENTICAL_RESPONSES = "identical_responses"  # equal after stripping whitespace: no preference signal
NO_SHARED_PREFIX = "no_shared_prefix"  # implicit layouts (5, 6) whose chosen/rejected share no prompt
MULTI_TURN_RESPONSE = "multi_turn_response"  # a response that is more than one assistant message
BAD_TURN_ORDER = "bad_turn_order"  # unknown role, or turns not [system] user (assistant user)*
DROP_REASONS = (
    MISSING_FIELD,
    NOT_TEXT,
    EMPTY_PROMPT,
    EMPTY_RESPONSE,
    IDENTICAL_RESPONSES,
    NO_SHARED_PREFIX,
    MULTI_TURN_RESPONSE,
    BAD_TURN_ORDER,
)

MAX_REPORTED_ROWS = 5  # row numbers kept per drop reason for messages
_STRING_FEATURES = (Value("string"), Value("large_string"))

CANONICAL_FEATURES = Features(
    {
        "prompt": List({"role": Value("string"), "content": Value("string")}),
        "chosen": Value("string"),
        "rejected": Value("string"),
        "text_prompt": Value("string"),
        "layout": Value("string"),
        "label": Value("bool"),
    }
)
_INSTRUCTION_FIELDS = ("instruction", "input", "question")
_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
}
_HUMAN_MARK = "\n\nHuman:"
_ASSISTANT_MARK = "\n\nAssistant:"
# Turn markers of a transcript; the first turn may open without the blank line.
_TRANSCRIPT_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")

LAYOUTS_HELP = (
    "prompt/chosen/rejected strings (+system); system + instruction|input|question + chosen/rejected; "
    "prompt messages + chosen/rejected; chosen/rejected conversations; chosen/rejected "
    "'\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts; conversations + chosen/rejected messages; "
    "chosen/rejected strings sharing a prompt prefix; unpaired prompt + completion + label (method kto)"
)


@dataclass(frozen=True)
class ColumnMap:
    """Which source column holds each canonical field; None means the field's own name.

    Given to ``normalise``, the mapped columns are read under the canonical names before the format is
    detected, so ``ColumnMap(prompt="input")`` makes an instruction dataset a prompt-strings one.
    """

    prompt: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    system: str | None = None
    conversations: str | None = None
    completion: str | None = None
    label: str | None = None

    @classmethod
    def from_dict(cls, mapping: dict[str, str]) -> ColumnMap:
        """Build from a config mapping such as ``{"prompt": "input", "system": "system"}``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(
                f"columns: unknown key(s) {unknown}; the keys are the canonical fields {sorted(known)} "
                "and the values are your dataset's column names"
            )
        return cls(**mapping)

    def as_dict(self) -> dict[str, str]:
        """Canonical field -> source column, for the mapped fields only."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Drop:
    """A row that cannot train: ``reason`` is one of ``DROP_REASONS``, ``detail`` says which field and why."""

    reason: str
    detail: str


@dataclass
class NormaliseResult:
    """The canonical rows of one source and what normalisation dropped.

    ``rows`` has exactly the ``CANONICAL_FEATURES`` columns (after ``load_mixture``'s limit/fraction it
    is the selected subset, so ``len(rows) <= kept``). Row numbers are 0-based positions in the source.
    ``format`` is the layout of every row, or ``MIXED`` when the rows are in several (``layouts`` counts
    them; each row is normalised in its own and says which in its ``layout`` column).
    """

    rows: Dataset
    format: str
    total: int
    kept: int
    dropped: dict[str, int]
    first_dropped: dict[str, list[int]]  # reason -> first MAX_REPORTED_ROWS source row numbers
    duplicates: int  # kept rows that repeat an earlier kept row exactly (reported, not removed)
    source_name: str = "<data>"
    drop_examples: dict[str, str] = field(default_factory=dict)  # reason -> "row N: <detail>"
    source_index: list[int] = field(default_factory=list)  # source row number of each kept row
    layouts: dict[str, int] = field(default_factory=dict)  # layout -> source rows in it (most first)


class BadValue(Exception):
    """A value that must not be dropped silently (an unpaired row's label); ``orpo.data.normalise`` turns
    it into a one-line error naming the source and row."""


class _Dropped(Exception):
    """Raised by the field readers below; ``normalise_row`` turns it into a ``Drop``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.drop = Drop(reason, detail)


class _Fields:
    """A source row read under canonical field names, with the user's column names for messages."""

    def __init__(self, row: dict, names: dict[str, str]):
        self.row = row
        self.names = names

    def name(self, key: str) -> str:
        return self.names.get(key, key)

    def has(self, key: str) -> bool:
        return self.name(key) in self.row

    def get(self, key: str):
        return self.row.get(self.name(key))


# ---------------------------------------------------------------------------------------------
# Reading single fields


def _show(value) -> str:
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({type(value).__name__})"


def _required(fields_: _Fields, key: str):
    value = fields_.get(key)
    if value is None:
        raise _Dropped(MISSING_FIELD, f"`{fields_.name(key)}` is missing or null")
    return value


def _required_text(fields_: _Fields, key: str) -> str:
    value = _required(fields_, key)
    if not isinstance(value, str):
        raise _Dropped(NOT_TEXT, f"`{fields_.name(key)}` is {_show(value)}, not text")
    return value


def _optional_text(fields_: _Fields, key: str) -> str:
    # Optional columns (system, input) are often null in CSV/Arrow when empty.
    value = fields_.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Dropped(NOT_TEXT, f"`{fields_.name(key)}` is {_show(value)}, not text")
    return value


def _message(value, where: str) -> dict[str, str]:
    """One message as {"role", "content"}; accepts ``role``/``content`` and ShareGPT ``from``/``value``."""
    if not isinstance(value, dict):
        raise _Dropped(NOT_TEXT, f"{where} is {_show(value)}, not a message")
    # Arrow structs carry every key of the column, absent ones as None, so fall back on None.
    role = value.get("role") if value.get("role") is not None else value.get("from")
    content = value.get("content") if value.get("content") is not None else value.get("value")
    if not isinstance(content, str):
        raise _Dropped(NOT_TEXT, f"{where} has content {_show(content)}, not text")
    canonical = _ROLES.get(role.lower()) if isinstance(role, str) else None
    if canonical is None:
        raise _Dropped(BAD_TURN_ORDER, f"{where} has role {role!r}; known roles are {sorted(_ROLES)}")
    return {"role": canonical, "content": content}


def _messages(fields_: _Fields, key: str) -> list[dict[str, str]]:
    value = _required(fields_, key)
    if not isinstance(value, list):
        raise _Dropped(NOT_TEXT, f"`{fields_.name(key)}` is {_show(value)}, not a list of messages")
    return [_message(m, f"`{fields_.name(key)}` message {i}") for i, m in enumerate(value)]


def _response(fields_: _Fields, key: str) -> str:
    """A response given as a string, a message, or a list of exactly one message."""
    value = _required(fields_, key)
    if isinstance(value, str):
        return value
    name = fields_.name(key)
    if not isinstance(value, (list, dict)):
        raise _Dropped(NOT_TEXT, f"`{name}` is {_show(value)}, not text")
    if isinstance(value, list):
        if not value:
            raise _Dropped(EMPTY_RESPONSE, f"`{name}` is an empty list")
        if len(value) > 1:
            raise _Dropped(MULTI_TURN_RESPONSE, f"`{name}` holds {len(value)} messages, not one response")
        value = value[0]
    return _response_message(_message(value, f"`{name}`"), name)


def _response_message(message: dict[str, str], name: str) -> str:
    if message["role"] != "assistant":
        raise _Dropped(BAD_TURN_ORDER, f"`{name}` is a {message['role']} message, not an assistant one")
    return message["content"]


def _with_system(messages: list[dict[str, str]], fields_: _Fields) -> list[dict[str, str]]:
    """Prepend the ``system`` column's text unless the conversation already opens with a system turn."""
    system = _optional_text(fields_, "system")
    if not system.strip() or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]


# ---------------------------------------------------------------------------------------------
# One parser per layout: source fields -> (prompt messages, chosen, rejected, text_prompt)

Parsed = tuple[list[dict[str, str]], str, str, str | None]


def _parse_prompt_strings(f: _Fields) -> Parsed:
    prompt = _required_text(f, "prompt")
    messages = _with_system([{"role": "user", "content": prompt}], f)
    return messages, _response(f, "chosen"), _response(f, "rejected"), prompt


def _instruction_text(f: _Fields) -> str:
    # A mapped `prompt` column is the user's explicit choice; otherwise Alpaca's instruction + input,
    # then orca's `input`, then `question`.
    if f.has("prompt"):
        return _required_text(f, "prompt")
    if f.has("instruction"):
        parts = [_required_text(f, "instruction"), _optional_text(f, "input")]
        return "\n\n".join(p for p in parts if p.strip())
    if f.has("input"):
        return _required_text(f, "input")
    return _required_text(f, "question")


def _parse_instruction(f: _Fields) -> Parsed:
    prompt = _instruction_text(f)
    messages = _with_system([{"role": "user", "content": prompt}], f)
    return messages, _response(f, "chosen"), _response(f, "rejected"), prompt


def _parse_chat_explicit(f: _Fields) -> Parsed:
    messages = _with_system(_messages(f, "prompt"), f)
    return messages, _response(f, "chosen"), _response(f, "rejected"), None


def _parse_sharegpt(f: _Fields) -> Parsed:
    messages = _with_system(_messages(f, "conversations"), f)
    return messages, _response(f, "chosen"), _response(f, "rejected"), None


def _parse_chat_implicit(f: _Fields) -> Parsed:
    chosen, rejected = _messages(f, "chosen"), _messages(f, "rejected")
    names = f.name("chosen"), f.name("rejected")
    if chosen == rejected:
        raise _Dropped(IDENTICAL_RESPONSES, f"`{names[0]}` and `{names[1]}` are the same conversation")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    prompt = chosen[:shared]
    if not any(m["role"] == "user" for m in prompt):
        raise _Dropped(NO_SHARED_PREFIX, f"`{names[0]}` and `{names[1]}` share no user turn")
    responses = []
    for name, rest in zip(names, (chosen[shared:], rejected[shared:])):
        if len(rest) > 1:
            raise _Dropped(
                MULTI_TURN_RESPONSE, f"`{name}` continues for {len(rest)} messages after the shared prompt"
            )
        responses.append(_response_message(rest[0], name) if rest else "")
    return _with_system(prompt, f), responses[0], responses[1], None


def _parse_transcript(f: _Fields) -> Parsed:
    chosen, rejected = _required_text(f, "chosen"), _required_text(f, "rejected")
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(_ASSISTANT_MARK)
    if cut < 0:
        raise _Dropped(
            NO_SHARED_PREFIX,
            f"`{f.name('chosen')}` and `{f.name('rejected')}` share no text up to an '\\n\\nAssistant:' turn",
        )
    end = cut + len(_ASSISTANT_MARK)
    text_prompt = chosen[:end]
    responses = []
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        # Kept raw (with the space after "Assistant:"): raw rendering must give back the source text.
        response = text[end:]
        if _HUMAN_MARK in response:
            raise _Dropped(MULTI_TURN_RESPONSE, f"`{f.name(key)}` goes on to another Human turn")
        responses.append(response)
    return _transcript_messages(text_prompt), responses[0], responses[1], text_prompt


def _transcript_messages(text: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: q\\n\\nAssistant: a\\n\\nHuman: q2\\n\\nAssistant:' -> user/assistant/user messages."""
    pieces = _TRANSCRIPT_TURN.split(text)
    # pieces = [before the first turn, "Human", text, "Assistant", text, ..., "Assistant", ""]
    if pieces[0].strip():
        raise _Dropped(
            BAD_TURN_ORDER, f"transcript starts with {_show(pieces[0])} before the first Human turn"
        )
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = [{"role": roles[who], "content": said.strip()} for who, said in zip(pieces[1::2], pieces[2::2])]
    return turns[:-1]  # the prompt ends with the empty "Assistant:" the response follows


def trl_extract_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) split as TRL 1.16's ``extract_prompt`` splits two strings.

    The first differing character ends the prompt; when the character before it is a space, the space
    moves to the responses. When one string is a prefix of the other (no differing character), TRL's
    loop variable stops at the last index of the shorter string, so the prompt is one character
    shorter than the shared text: reproduced, not fixed, so the tokens stay TRL's.
    """
    shortest = min(len(chosen), len(rejected))
    end = next((i for i in range(shortest) if chosen[i] != rejected[i]), max(shortest - 1, 0))
    if end < shortest and chosen[end] != rejected[end] and end > 0 and chosen[end - 1] == " ":
        end -= 1
    return chosen[:end], chosen[end:], rejected[end:]


def _parse_implicit_strings(f: _Fields) -> Parsed:
    chosen, rejected = _required_text(f, "chosen"), _required_text(f, "rejected")
    prompt, chosen_rest, rejected_rest = trl_extract_prompt(chosen, rejected)
    if not prompt.strip():
        raise _Dropped(
            NO_SHARED_PREFIX, f"`{f.name('chosen')}` and `{f.name('rejected')}` share no prompt prefix"
        )
    return _with_system([{"role": "user", "content": prompt}], f), chosen_rest, rejected_rest, prompt


def _label(f: _Fields) -> bool:
    value = f.get("label")
    if not isinstance(value, bool):
        raise BadValue(
            f"`{f.name('label')}` is {_show(value)}; it must be true (desirable) or false (undesirable)"
        )
    return value


def _parse_unpaired(f: _Fields) -> Parsed:
    """A half pair (module docstring): the completion on the side its label names."""
    label = _label(f)
    prompt = _required(f, "prompt")
    if isinstance(prompt, list):
        messages, text_prompt = _with_system(_messages(f, "prompt"), f), None
    else:
        text_prompt = _required_text(f, "prompt")
        messages = _with_system([{"role": "user", "content": text_prompt}], f)
    completion = _response(f, "completion")
    if not completion.strip():
        raise _Dropped(EMPTY_RESPONSE, f"`{f.name('completion')}` is empty")
    return messages, *((completion, "") if label else ("", completion)), text_prompt


_PARSERS = {
    PROMPT_STRINGS: _parse_prompt_strings,
    INSTRUCTION: _parse_instruction,
    CHAT_EXPLICIT: _parse_chat_explicit,
    CHAT_IMPLICIT: _parse_chat_implicit,
    TRANSCRIPT: _parse_transcript,
    SHAREGPT: _parse_sharegpt,
    IMPLICIT_STRINGS: _parse_implicit_strings,
    UNPAIRED: _parse_unpaired,
}


def _check_prompt(messages: list[dict[str, str]]) -> None:
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not turns:
        raise _Dropped(EMPTY_PROMPT, "the prompt has no user turn")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            order = ", ".join(m["role"] for m in messages)
            raise _Dropped(
                BAD_TURN_ORDER, f"prompt turns are [{order}]; expected [system,] user, assistant, ..."
            )
    if turns[-1]["role"] != "user":
        raise _Dropped(BAD_TURN_ORDER, "the prompt ends with an assistant turn; it must end with a user turn")
    if not turns[-1]["content"].strip():
        raise _Dropped(EMPTY_PROMPT, "the prompt's last user turn is empty")


def _check_responses(f: _Fields, chosen: str, rejected: str) -> None:
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise _Dropped(EMPTY_RESPONSE, f"`{f.name(key)}` is empty")
    if chosen.strip() == rejected.strip():
        raise _Dropped(IDENTICAL_RESPONSES, f"`{f.name('chosen')}` equals `{f.name('rejected')}`")


def normalise_row(row: dict, fmt: str, columns: ColumnMap | None = None) -> dict | Drop:
    """One source row -> a canonical row, or a ``Drop`` saying why it cannot train.

    Raises ``BadValue`` for a value that must be fixed rather than dropped (an unpaired row's label).
    """
    f = _Fields(row, columns.as_dict() if columns else {})
    try:
        prompt, chosen, rejected, text_prompt = _PARSERS[fmt](f)
        _check_prompt(prompt)
        if fmt != UNPAIRED:
            _check_responses(f, chosen, rejected)
    except _Dropped as dropped:
        return dropped.drop
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "text_prompt": text_prompt,
        "layout": fmt,
        "label": bool(chosen) if fmt == UNPAIRED else None,
    }


# ---------------------------------------------------------------------------------------------
# Detection


def _is_conversation(value) -> bool:
    """A list of messages with a turn that is not the assistant's (a whole conversation, not a reply)."""
    if not isinstance(value, list):
        return False
    for message in value:
        role = (message.get("role") or message.get("from")) if isinstance(message, dict) else None
        if _ROLES.get(str(role).lower()) != "assistant":
            return True
    return False


def row_layout(columns: set[str], row: dict) -> str | None:
    """The layout of one row (read under canonical names) of a dataset with these ``columns``.

    Columns decide between layouts told apart by their fields (``conversations``, an instruction
    column, ``prompt``); the row's own values decide between layouts told apart by type (a message
    list or a string), and between a pair and an unpaired row when the file has the columns of both
    (a null ``chosen`` with a ``completion``), so a file may hold rows of several layouts. None when a
    value the choice rests on is null or of no layout's type: such a row cannot train in any layout.
    """
    if not {"chosen", "rejected"} <= columns:
        return UNPAIRED if UNPAIRED_FIELDS <= columns else None
    if UNPAIRED_FIELDS <= columns and row.get("chosen") is None and row.get("completion") is not None:
        return UNPAIRED  # a file mixing pairs with unpaired rows (a KTO set): this row is a half pair
    if "conversations" in columns:
        return SHAREGPT
    chosen = row.get("chosen")
    if "prompt" in columns:
        prompt = row.get("prompt")
        if isinstance(prompt, list):
            return CHAT_EXPLICIT
        if _is_conversation(chosen):
            # ultrafeedback_binarized carries a prompt string next to whole conversations.
            return CHAT_IMPLICIT
        return PROMPT_STRINGS if prompt is not None and chosen is not None else None
    if columns & set(_INSTRUCTION_FIELDS):
        return INSTRUCTION
    if isinstance(chosen, list):
        return CHAT_IMPLICIT
    if isinstance(chosen, str):
        return TRANSCRIPT if _ASSISTANT_MARK in chosen else IMPLICIT_STRINGS
    return None


def detect_layouts(column_names: list[str], rows: Iterable[dict], source_name: str = "<data>") -> list[str]:
    """The layout of every row (see ``row_layout``), read under canonical names.

    Two choices are made for the whole dataset, from all its rows: a transcript and implicit-prompt
    strings differ by content, not type (an ``"\\n\\nAssistant:"`` turn), so the string rows without a
    prompt column all take the more common of the two (a transcript row that lacks the turn is then
    dropped as a transcript, not split as plain strings); and a row of no layout takes the most common
    layout, which only names the reason it is dropped. Ties go to the layout seen first.
    """
    columns = set(column_names)
    votes = [row_layout(columns, row) for row in rows]
    counts = Counter(v for v in votes if v)
    if not counts:
        raise ValueError(
            f"`{source_name}`: cannot tell the data format from columns {sorted(column_names)}; accepted "
            f"layouts: {LAYOUTS_HELP}. Map your columns with `columns: {{prompt: ..., chosen: ..., "
            f"rejected: ...}}` or set the format to one of {list(FORMATS)}"
        )
    if counts[TRANSCRIPT] and counts[IMPLICIT_STRINGS]:
        strings = next(v for v, _ in counts.most_common() if v in IMPLICIT_STRING_LAYOUTS)
        votes = [strings if v in IMPLICIT_STRING_LAYOUTS else v for v in votes]
        counts = Counter(v for v in votes if v)
    fallback = counts.most_common(1)[0][0]
    return [v or fallback for v in votes]


def describe_layouts(layouts: dict[str, int]) -> str:
    """``"mixed layouts: 20 rows prompt_strings, 20 rows chat_implicit"`` (most rows first) for a source
    whose rows are in several layouts; "" for one layout."""
    if len(layouts) < 2:
        return ""
    parts = sorted(layouts.items(), key=lambda kv: -kv[1])
    return "mixed layouts: " + ", ".join(f"{n} row{'s' * (n != 1)} {name}" for name, n in parts)
