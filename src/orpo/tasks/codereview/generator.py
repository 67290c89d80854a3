"""Seeded generator of code-review preference pairs for the offline demo.

Each example is a short Python function (4-10 lines, under 300 characters) built from a few
statement blocks, each written either clean or breaking one rule of `rules.RULES`; 0-3
violations, about a quarter of snippets clean. Names come from a small vocabulary and most
clean lines are near-misses of a rule (``ast.literal_eval`` vs ``eval``, ``shell=False``,
``os.environ[...]`` vs a literal, ``except ValueError:``, ``opts=None``), so a model has to
read the line, not just its shape.

The chosen review lists every violation in the rigid format of `judge.format_review`. The
rejected review is one realistic failure, picked by the seed:

- ``missed_severe``: the most severe violation is left out (snippets with >= 2 violations);
- ``false_comment``: every violation plus a comment on a clean line;
- ``approved_violations``: ``No violations.`` on code that has violations;
- ``flagged_clean``: a comment on a clean snippet.

`prompt_for` numbers the lines (``L3 ...``), as a review tool shows them, so that a tiny
model copies the line number from the prompt instead of counting newlines.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from orpo.tasks.codereview.judge import NO_VIOLATIONS, format_review
from orpo.tasks.codereview.rules import RULES, Violation, severity_rank

MAX_LINES = 10
MAX_CHARS = 300
PROMPT_HEADER = "Review this code:\n"
PROMPT_FOOTER = "Findings:\n"

# P(number of violations = 0, 1, 2, 3): a quarter clean, as the demo's test set should be.
_N_VIOLATION_WEIGHTS = (0.25, 0.35, 0.25, 0.15)
_ALL_RULE_IDS = tuple(rule.id for rule in RULES)

_FUNC_NAMES = ("load_data", "parse_user", "run_job", "save_file", "read_config", "fetch_items", "send_report")
_INPUTS = ("text", "data", "line", "payload", "raw")
_CLEAN_DEFAULTS = ("opts=None", "cache=None", "retries=3", "verbose=False")
_MUTABLE_DEFAULTS = ("opts=[]", "cache={}", "items=[]", "seen={}")
_OUTPUTS = ("value", "result", "obj", "cfg")
_SECRET_NAMES = ("token", "api_key", "password", "secret")
_SECRET_VALUES = ("hunter2", "s3cr3t", "abc123", "sk_live_9f2a", "letmein")
_PLAIN_NAMES = ("mode", "label", "sep", "encoding")
_PLAIN_VALUES = ("fast", "utf-8", "csv", "debug")
_EXCEPTIONS = ("ValueError", "KeyError", "OSError", "TypeError")
_ACCUMULATORS = ("rows", "names", "out")
_ITEMS = ("x", "row", "item")


@dataclass(frozen=True)
class _Line:
    """One generated source line (without indentation) and what a reviewer should say of it.

    `rule` is the rule it breaks (None when clean); `decoys` are rules it superficially
    resembles, the plausible false comments on it.
    """

    text: str
    indent: int = 0
    rule: str | None = None
    decoys: tuple[str, ...] = ()


@dataclass
class ReviewExample:
    """One snippet with its true violations and a (chosen, rejected) review pair.

    Attributes:
        snippet: Python source, lines implicitly numbered 1..k.
        violations: 0-3 violations, sorted by line, at most one per line.
        chosen: the correct review (`judge.format_review(violations)`).
        rejected: a realistic wrong review; never equal to `chosen`.
        failure_kind: which failure `rejected` shows (see the module docstring).
    """

    snippet: str
    violations: list[Violation]
    chosen: str
    rejected: str
    failure_kind: str


def prompt_for(snippet: str) -> str:
    """The prompt the model sees for `snippet`: header, numbered lines, then ``Findings:``."""
    numbered = "\n".join(f"L{i} {line}" for i, line in enumerate(snippet.splitlines(), start=1))
    return f"{PROMPT_HEADER}{numbered}\n{PROMPT_FOOTER}"


def system_prompt() -> str:
    """The rulebook and the review format, written for a model that was not trained on them (the
    system turn of a pretrained chat model's prompt): every rule with its id, name and what it forbids,
    the finding line ``L<line> <rule id> <rule name>`` with an example, and the clean answer."""
    rules = "\n".join(f"{r.id} {r.name} ({r.severity}): {r.description}" for r in RULES)
    example = format_review([Violation("R2", 3), Violation("R5", 5)])
    return (
        "You review Python code against the team's rulebook. The rules:\n"
        f"{rules}\n"
        "Each code line starts with its number (L1, L2, ...). Answer with one finding per broken rule, "
        "one per line, sorted by line number, each written exactly as `L<line> <rule id> <rule name>`, "
        f"for example:\n{example}\n"
        f"If the code breaks no rule, answer exactly: {NO_VIOLATIONS}\n"
        "Write nothing else."
    )


def to_rows(examples: list[ReviewExample], system: str | None = None) -> list[dict[str, str]]:
    """Preference rows ``{"prompt", "chosen", "rejected"}`` (data format 1 of the spec), with a
    ``system`` column first when ``system`` is given (format 2: a chat model's system turn)."""
    head = {"system": system} if system is not None else {}
    return [
        {**head, "prompt": prompt_for(e.snippet), "chosen": e.chosen, "rejected": e.rejected}
        for e in examples
    ]


# --- statement blocks: each returns its lines, clean or breaking the block's rule -------------


def _secret_block(rng: random.Random, src: str, bad: bool) -> list[_Line]:
    name = rng.choice(_SECRET_NAMES)
    if bad:
        return [_Line(f'{name} = "{rng.choice(_SECRET_VALUES)}"', 1, rule="R4")]
    key = name.upper()
    getter = rng.choice((f'os.environ["{key}"]', f'os.getenv("{key}")'))
    return [_Line(f"{name} = {getter}", 1, decoys=("R4",))]


def _plain_block(rng: random.Random, src: str, bad: bool) -> list[_Line]:
    # A string literal bound to a harmless name: only the name tells it from a secret.
    assert not bad, "a plain assignment has no violating form"
    return [_Line(f'{rng.choice(_PLAIN_NAMES)} = "{rng.choice(_PLAIN_VALUES)}"', 1, decoys=("R4",))]


def _eval_block(rng: random.Random, src: str, bad: bool) -> list[_Line]:
    out = rng.choice(_OUTPUTS)
    if bad:
        text = rng.choice((f"{out} = eval({src})", f"exec({src})", f"{out} = eval(input())"))
        return [_Line(text, 1, rule="R2")]
    func = rng.choice(("int", "float", "ast.literal_eval", "json.loads"))
    return [_Line(f"{out} = {func}({src})", 1, decoys=("R2",))]


def _shell_block(rng: random.Random, src: str, bad: bool) -> list[_Line]:
    call = rng.choice(("subprocess.run", "subprocess.call"))
    if bad:
        return [_Line(f"{call}({src}, shell=True)", 1, rule="R3")]
    args = rng.choice((f"{src}, shell=False", f'["ls", {src}]', f"{src}.split(), check=True"))
    return [_Line(f"{call}({args})", 1, decoys=("R3",))]


def _except_block(rng: random.Random, src: str, bad: bool) -> list[_Line]:
    out = rng.choice(_OUTPUTS)
    handler = (
        _Line("except:", 1, rule="R5")
        if bad
        else _Line(f"except {rng.choice(_EXCEPTIONS)}:", 1, decoys=("R5",))
    )
    return [
        _Line("try:", 1),
        _Line(f"{out} = {rng.choice(('int', 'float', 'len'))}({src})", 2),
        handler,
        _Line(rng.choice(("return None", f"{out} = None", "pass")), 2),
    ]


def _loop_block(rng: random.Random, src: str, bad: bool) -> list[_Line]:
    assert not bad, "a loop block has no violating form"
    acc, item = rng.choice(_ACCUMULATORS), rng.choice(_ITEMS)
    # `acc = []` in a body is fine; only a mutable *default argument* breaks R6.
    return [
        _Line(f"{acc} = []", 1, decoys=("R6",)),
        _Line(f"for {item} in {src}:", 1),
        _Line(f"{acc}.append({item})", 2),
    ]


def _def_line(rng: random.Random, src: str, rule: str | None) -> _Line:
    words = rng.choice(_FUNC_NAMES).split("_")
    if rule == "R1":
        head = words[0] if rng.random() < 0.5 else words[0].title()
        name = head + "".join(w.title() for w in words[1:])
    else:
        name = "_".join(words)
    params = [src]
    if rule == "R6":
        params.append(rng.choice(_MUTABLE_DEFAULTS))
    elif rng.random() < 0.5:
        params.append(rng.choice(_CLEAN_DEFAULTS))
    decoys = tuple(r for r in ("R1", "R6") if r != rule and (r == "R1" or len(params) > 1))
    return _Line(f"def {name}({', '.join(params)}):", 0, rule=rule, decoys=decoys)


# Body blocks by kind: block(rng, src, bad) -> lines, where `src` is the function's input
# parameter and `bad` asks for the violating form.
_BLOCKS = {
    "secret": _secret_block,
    "eval": _eval_block,
    "shell": _shell_block,
    "except": _except_block,
    "loop": _loop_block,
    "plain": _plain_block,
}
# The block kind that can break each body-level rule (R1 and R6 live on the def line).
_RULE_BLOCKS = {"R2": "eval", "R3": "shell", "R4": "secret", "R5": "except"}


def _draw_rules(rng: random.Random) -> list[str]:
    """The rules this snippet breaks: 0-3 distinct ids, never R1 with R6 (both live on the def line)."""
    n = rng.choices(range(len(_N_VIOLATION_WEIGHTS)), weights=_N_VIOLATION_WEIGHTS)[0]
    while True:
        rules = rng.sample(_ALL_RULE_IDS, n)
        if not {"R1", "R6"} <= set(rules):
            return rules


def _draw_lines(rng: random.Random, rules: list[str]) -> list[_Line]:
    """Imports, the def line, 2-3 body blocks in random order, and a return line."""
    src = rng.choice(_INPUTS)
    kinds = [_RULE_BLOCKS[r] for r in rules if r in _RULE_BLOCKS]
    fillers = [k for k in _BLOCKS if k not in kinds]
    n_blocks = rng.randint(max(2, len(kinds)), 3)
    kinds += rng.sample(fillers, n_blocks - len(kinds))
    rng.shuffle(kinds)
    bad_kinds = {_RULE_BLOCKS[r] for r in rules if r in _RULE_BLOCKS}
    body = [line for kind in kinds for line in _BLOCKS[kind](rng, src, kind in bad_kinds)]
    used = " ".join(line.text for line in body)
    imports = [
        _Line(f"import {mod}")
        for mod in ("ast", "json", "os", "subprocess")
        if re.search(rf"\b{mod}\.", used)
    ]
    function = _def_line(rng, src, next((r for r in rules if r in ("R1", "R6")), None))
    return [*imports, function, *body, _Line(rng.choice((f"return {src}", "return None", "return True")), 1)]


def _rejected(rng: random.Random, lines: list[_Line], violations: list[Violation]) -> tuple[str, str]:
    """A wrong review for these lines and its failure kind (see the module docstring)."""
    if not violations:
        kinds = ["flagged_clean"]
    elif len(violations) == 1:
        kinds = ["false_comment", "approved_violations"]
    else:
        kinds = ["missed_severe", "false_comment", "approved_violations"]
    kind = rng.choice(kinds)
    if kind == "approved_violations":
        return NO_VIOLATIONS, kind
    if kind == "missed_severe":
        worst = min(severity_rank(v.rule_id) for v in violations)
        missed = rng.choice([v for v in violations if severity_rank(v.rule_id) == worst])
        return format_review(v for v in violations if v != missed), kind
    return format_review([*violations, _false_comment(rng, lines)]), kind


def _snippet(rng: random.Random) -> tuple[list[_Line], str]:
    """A snippet's lines and source; snippets over `MAX_LINES` lines or `MAX_CHARS` characters are redrawn."""
    rules = _draw_rules(rng)
    while True:
        lines = _draw_lines(rng, rules)
        snippet = "\n".join("    " * line.indent + line.text for line in lines)
        if len(lines) <= MAX_LINES and len(snippet) < MAX_CHARS:
            return lines, snippet


def _false_comment(rng: random.Random, lines: list[_Line]) -> Violation:
    """A comment on a clean line, preferably naming the rule that line resembles (a plausible mistake)."""
    clean = [(number, line) for number, line in enumerate(lines, start=1) if line.rule is None]
    lookalikes = [(number, line) for number, line in clean if line.decoys]
    number, line = rng.choice(lookalikes or clean)
    return Violation(rng.choice(line.decoys or _ALL_RULE_IDS), number)


def _example(rng: random.Random) -> ReviewExample:
    """One example (see `_snippet`)."""
    lines, snippet = _snippet(rng)
    violations = [Violation(line.rule, n) for n, line in enumerate(lines, start=1) if line.rule is not None]
    chosen = format_review(violations)
    rejected, failure_kind = _rejected(rng, lines, violations)
    assert rejected != chosen, (snippet, chosen)
    return ReviewExample(snippet, violations, chosen, rejected, failure_kind)


def generate_examples(n: int, seed: int) -> list[ReviewExample]:
    """`n` examples with pairwise distinct snippets, fully determined by `seed`."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    examples: list[ReviewExample] = []
    seen: set[str] = set()
    # The snippet space is finite (tens of thousands); give up well before looping forever.
    for _ in range(50 * n + 1000):
        if len(examples) == n:
            return examples
        example = _example(rng)
        if example.snippet not in seen:
            seen.add(example.snippet)
            examples.append(example)
    if len(examples) == n:
        return examples
    raise ValueError(f"could only draw {len(examples)} distinct snippets, {n} asked; ask for fewer examples")


def make_splits(n_train: int, n_val: int, n_test: int, seed: int) -> dict[str, list[ReviewExample]]:
    """Train / validation / test splits with no snippet text in two splits.

    The splits are consecutive slices of one `generate_examples` stream, whose snippets are
    pairwise distinct, so the test set only holds code the model never trained on.
    """
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for name, size in sizes.items():
        if size < 0:
            raise ValueError(f"n_{name} must be >= 0, got {size}")
    examples = generate_examples(sum(sizes.values()), seed)
    splits: dict[str, list[ReviewExample]] = {}
    start = 0
    for name, size in sizes.items():
        splits[name] = examples[start : start + size]
        start += size
    return splits


# --- the noisy review corpus: what an imperfect reviewer wrote ------------------------------------

# Fixed before any model was trained: the rates at which the corpus's reviewer errs. They are chosen
# so that the corpus itself scores like the case study's base model (recall 0.67, precision 0.71):
# with 1.30 violations per snippet on average, missing each with P_MISS leaves 0.87 found, and one
# false comment per review with P_FALSE gives precision 0.87 / (0.87 + 0.35) = 0.71.
P_MISS = 0.33
"""Each true violation is left out of the noisy review with this probability, independently."""
P_FALSE = 0.35
"""A noisy review gets one false comment (on a clean line) with this probability."""


@dataclass(frozen=True)
class NoisyReview:
    """One snippet reviewed by the imperfect reviewer.

    Attributes:
        snippet: Python source (lines 1..k).
        violations: its true violations.
        review: the noisy review, in the format of `judge.format_review`.
        missed: how many of ``violations`` the review leaves out.
        false_comments: how many findings of the review are not violations (0 or 1).
    """

    snippet: str
    violations: list[Violation]
    review: str
    missed: int
    false_comments: int


def noisy_reviews(
    n: int, seed: int, p_miss: float = P_MISS, p_false: float = P_FALSE, exclude: frozenset[str] = frozenset()
) -> list[NoisyReview]:
    """`n` reviews of distinct snippets (none in `exclude`) by a reviewer that misses each violation
    with probability `p_miss` and adds one false comment with probability `p_false`; fully
    determined by the arguments."""
    for name, p in (("p_miss", p_miss), ("p_false", p_false)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p} must be a probability in [0, 1]")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    out: list[NoisyReview] = []
    seen = set(exclude)
    for _ in range(50 * n + 1000):
        if len(out) == n:
            return out
        lines, snippet = _snippet(rng)
        if snippet in seen:
            continue
        seen.add(snippet)
        violations = [
            Violation(line.rule, k) for k, line in enumerate(lines, start=1) if line.rule is not None
        ]
        kept = [v for v in violations if rng.random() >= p_miss]
        false = [_false_comment(rng, lines)] if rng.random() < p_false else []
        review = format_review([*kept, *false])
        out.append(NoisyReview(snippet, violations, review, len(violations) - len(kept), len(false)))
    if len(out) == n:
        return out
    raise ValueError(f"could only draw {len(out)} distinct snippets, {n} asked; ask for fewer reviews")


def noisy_rows(reviews: list[NoisyReview]) -> list[dict[str, str]]:
    """Rows for supervised training on the noisy reviews: ``chosen`` is the noisy review. Preference
    trainers need a ``rejected`` column; SFT never reads it, and it is the review with every finding
    dropped (or, when ``chosen`` approves, one comment on line 1), so that it never equals ``chosen``."""
    rows = []
    for r in reviews:
        rejected = NO_VIOLATIONS if r.review != NO_VIOLATIONS else format_review([Violation("R1", 1)])
        rows.append({"prompt": prompt_for(r.snippet), "chosen": r.review, "rejected": rejected})
    return rows
