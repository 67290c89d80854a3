"""From any preference data to the engine's token columns: normalise -> render -> tokenise -> filter.

``prepare_dataset`` is the one entry point the trainer and the CLI use; ``orpo data inspect`` runs its
three stages itself (``normalise_source``, ``tokenise_rows`` with the per-row ``PairPass``,
``keep_trainable``) to look at every row in between, so all of them see exactly the same tokens. Each
stage is a ``datasets.map`` (cached by fingerprint, parallel with ``num_proc``); rows that cannot train
are dropped and counted by reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

from datasets import Dataset

from orpo.data.formats import CANONICAL_FEATURES, NormaliseResult, describe_layouts
from orpo.data.normalise import normalise
from orpo.data.template import RenderedPair, render_pair, resolve_chat_template, template_markers
from orpo.data.tokenize import Limits, PairTokenizer, TokenisedPair
from orpo.data.unpaired import LABEL_COLUMN, ExampleTokenizer, unpair, with_kl_samples
from orpo.engine.types import PAIR_COLUMNS, PROMPT_TAIL_COLUMNS
from orpo.losses import get_objective

FLAG_COLUMNS = ("prompt_truncated", "chosen_truncated", "rejected_truncated", "boundary_retokenised")
MAX_EXAMPLE_ROWS = 5
# Tokens of a pair in the packed layout (prompt once): what `group_by_length` sorts on.
LENGTH_COLUMN = "length"
# The user's row number of each pair (0-based, in the source): lets training name a failing batch's rows.
SOURCE_ROW_COLUMN = "source_row"


def _with_length(row: dict) -> dict:
    row[LENGTH_COLUMN] = sum(len(row[c]) for c in PAIR_COLUMNS)
    return row


@dataclass
class DataReport:
    """What preparation did to one dataset; printed by the CLI and ``orpo data inspect``.

    ``format`` is the layout of every row or "mixed"; ``layouts`` counts the source rows per layout
    (empty for rows that came already normalised or tokenised). For an unpaired objective (KTO),
    ``kept`` counts examples, ``desirable`` / ``undesirable`` split them, and ``pairs_split`` says how
    many pairs became two examples each.
    """

    source: str
    format: str
    rows: int
    kept: int = 0
    layouts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    first_dropped: dict[str, list[int]] = field(default_factory=dict)
    duplicates: int = 0
    truncated: dict[str, int] = field(default_factory=dict)
    boundary_retokenised: int = 0
    desirable: int = 0
    undesirable: int = 0
    pairs_split: int = 0

    def summary(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        mixed = describe_layouts(self.layouts)
        line = f"{self.source}: format {self.format}, {self.rows} rows, {self.kept} kept, dropped: {drops}"
        if self.desirable or self.undesirable:
            line += f"; examples: {self.desirable} desirable, {self.undesirable} undesirable"
        return f"{line}; {mixed}" if mixed else line

    def one_sided(self) -> str:
        """ "all N examples are desirable, none undesirable: ..." for KTO examples of one label, else ""."""
        if not self.kept or (self.desirable and self.undesirable) or not (self.desirable or self.undesirable):
            return ""
        side, other, label = ("desirable", "undesirable", "false")
        if not self.desirable:
            side, other, label = ("undesirable", "desirable", "true")
        return (
            f"{self.source}: all {self.kept} examples are {side}, none {other}: KTO learns from one side "
            f"only; add {other} examples (label {label})"
        )

    def unpairing(self) -> str:
        """ "N pairs -> 2N examples: ..." when pairs were split for an unpaired objective, else ""."""
        if not self.pairs_split:
            return ""
        n = self.pairs_split
        return f"{self.source}: {n} pairs -> {2 * n} examples: {n} desirable, {n} undesirable (method kto)"


def is_tokenised(data) -> bool:
    return isinstance(data, Dataset) and all(c in data.column_names for c in PAIR_COLUMNS)


def prepare_dataset(
    data,
    tokenizer,
    config,
    source_name: str = "train",
    columns=None,
    fmt: str | None = None,
) -> tuple[Dataset, DataReport]:
    """Normalise, render, tokenise and filter ``data`` (Dataset, list of dicts, ...) for training.

    ``config`` supplies the limits (``max_length`` ...), ``tokenization``, ``chat_template_mode``,
    ``dataset_num_proc`` and ``method``: an unpaired objective (KTO) gets examples (``orpo.data.unpaired``),
    the others pairs; unpaired rows with a paired objective are an error.
    A dataset that already holds the token columns passes through untouched.
    The three stages (``normalise_source``, ``tokenise_rows``, ``keep_trainable``) are public so that
    ``orpo data inspect`` can look at every row between the last two.
    """
    if is_tokenised(data):
        if LENGTH_COLUMN not in data.column_names:
            data = data.map(_with_length, desc=f"Measuring {source_name}")
        return data, DataReport(source_name, "tokenised", len(data), kept=len(data))
    norm = normalise_source(data, config, source_name, columns, fmt)
    return keep_trainable(tokenise_rows(norm, tokenizer, config, source_name), config, source_name)


def normalise_source(
    data, config, source_name: str = "train", columns=None, fmt: str | None = None
) -> NormaliseResult:
    """Stage 1: every row of ``data`` as a canonical pair (``orpo.data.normalise``), with the drop counts."""
    if isinstance(data, Dataset) and set(data.column_names) == set(CANONICAL_FEATURES):
        # Already normalised (``load_mixture`` output): normalising again would lose text_prompt.
        n = len(data)
        return NormaliseResult(data, "canonical", n, n, {}, {}, 0, source_name, source_index=list(range(n)))
    return normalise(
        data, columns=columns, fmt=fmt, source_name=source_name, num_proc=config.dataset_num_proc
    )


class PairPass:
    """The per-row pass of a paired method: render a canonical row, then tokenise it within the limits.

    ``render`` applies the chat template as ``chat_template_mode`` says (``orpo.data.template``);
    calling the pass returns the row's ``TokenisedPair`` (``orpo.data.tokenize``) within the config's
    limits, with its drop reason. ``orpo data inspect`` renders with it again to measure each row.
    """

    def __init__(self, tokenizer, config):
        self.tokenizer = tokenizer
        self.tokenization = getattr(config, "tokenization", "orpo")
        self.wrap = resolve_chat_template(tokenizer, None, config.chat_template_mode)
        self.markers = template_markers(tokenizer) if self.wrap else ()
        self.limits = Limits.from_config(config)
        self.pairs = PairTokenizer(tokenizer, self.limits, self.tokenization)

    def render(self, row: dict) -> RenderedPair:
        return render_pair(row, self.tokenizer, self.wrap, self.markers, self.tokenization)

    def __call__(self, row: dict) -> TokenisedPair:
        return self.pairs(self.render(row))


@dataclass
class TokenisedRows:
    """Stage 2's output: every normalised row (or example, for KTO) tokenised, in order.

    ``rows`` holds the ``TokenisedPair`` fields (dropped rows too, ``drop_reason`` set), ``length`` and
    ``source_row`` (and ``label`` when ``unpaired``); ``source_rows`` maps a position to the user's row;
    ``report`` has the normalisation counts, which ``keep_trainable`` completes; ``pair_pass`` is the
    pass that rendered and tokenised the rows (for KTO, each example as a pair of one completion).
    """

    rows: Dataset
    source_rows: list[int]
    report: DataReport
    unpaired: bool
    pair_pass: PairPass


def tokenise_rows(norm: NormaliseResult, tokenizer, config, source_name: str = "train") -> TokenisedRows:
    """Stage 2: render and tokenise every row of ``norm`` (pairs, or examples for an unpaired method)."""
    report = DataReport(
        source_name,
        norm.format,
        norm.total,
        dropped=dict(norm.dropped),
        first_dropped={k: list(v) for k, v in norm.first_dropped.items()},
        duplicates=norm.duplicates,
        layouts=dict(norm.layouts),
    )
    pair_pass = PairPass(tokenizer, config)
    method = getattr(config, "method", "orpo")
    examples = get_objective(method).unpaired
    canonical, source_rows = norm.rows, norm.source_index  # normalised position -> the user's row number
    if not examples:
        _refuse_unpaired(canonical, source_name, method)
        render = pair_pass
    else:
        canonical, source_rows, report.pairs_split = unpair(canonical, pair_pass.tokenization, source_rows)
        render = ExampleTokenizer(
            tokenizer, pair_pass.pairs, pair_pass.tokenization, pair_pass.wrap, pair_pass.markers
        )

    def tokenise(row: dict, index: int) -> dict:
        try:
            pair = render(row)
            # A shallow field copy: `asdict` would deep-copy every token list.
            out = _with_length({f.name: getattr(pair, f.name) for f in fields(pair)})
            out[SOURCE_ROW_COLUMN] = source_rows[index]
            if examples:
                out[LABEL_COLUMN] = row["label"]
            return out
        except ValueError as err:
            raise ValueError(f"{source_name} row {source_rows[index]}: {err}") from None

    tokenised = canonical.map(
        tokenise,
        with_indices=True,
        remove_columns=canonical.column_names,
        num_proc=config.dataset_num_proc,
        desc=f"Tokenising {source_name}",
    )
    return TokenisedRows(tokenised, source_rows, report, examples, pair_pass)


def keep_trainable(
    tokenised: TokenisedRows, config, source_name: str = "train"
) -> tuple[Dataset, DataReport]:
    """Stage 3: drop the rows that cannot train (counted by reason), the engine's columns of the rest.

    Raises ValueError when no row is left. For an unpaired method each example gets its KL sample.
    """
    report, source_rows, num_proc = tokenised.report, tokenised.source_rows, config.dataset_num_proc
    reasons = tokenised.rows["drop_reason"]
    for reason, count in Counter(r for r in reasons if r).items():
        report.dropped[reason] = report.dropped.get(reason, 0) + count
        rows = [source_rows[i] for i, r in enumerate(reasons) if r == reason]
        report.first_dropped[reason] = rows[:MAX_EXAMPLE_ROWS]
    kept = tokenised.rows.filter(lambda r: not r, input_columns="drop_reason", num_proc=num_proc)
    report.kept = len(kept)
    report.truncated = {c.removesuffix("_truncated"): sum(kept[c]) for c in FLAG_COLUMNS[:3]}
    report.boundary_retokenised = sum(kept["boundary_retokenised"])
    if report.kept == 0:
        raise ValueError(f"{source_name}: no usable rows after tokenisation ({report.summary()})")
    columns = [*PAIR_COLUMNS, *PROMPT_TAIL_COLUMNS, LENGTH_COLUMN, SOURCE_ROW_COLUMN]
    if tokenised.unpaired:
        report.desirable = sum(kept[LABEL_COLUMN])
        report.undesirable = report.kept - report.desirable
        # TRL pairs KL samples in blocks of the training batch size, for the eval set too.
        kept = with_kl_samples(kept, config.per_device_train_batch_size, config.max_length)
        kept = kept.map(_with_length, desc=f"Measuring {source_name}")
        columns.append(LABEL_COLUMN)
    return kept.select_columns(columns), report


def _refuse_unpaired(rows: Dataset, source_name: str, method: str) -> None:
    """One line when unpaired rows meet an objective that trains on pairs, with the count of each layout."""
    unpaired = sum(label is not None for label in rows["label"])
    if not unpaired:
        return
    if unpaired == len(rows):
        raise ValueError(
            f"{source_name}: {unpaired} rows are in the unpaired layout (prompt, completion, label), which only "
            f"method=kto trains on; method={method!r} needs pairs (prompt, chosen, rejected): set method: kto "
            "or give paired data"
        )
    raise ValueError(
        f"{source_name}: {unpaired} of {len(rows)} rows are in the unpaired layout (prompt, completion, label), "
        f"which only method=kto trains on, and {len(rows) - unpaired} are pairs; method={method!r} needs "
        "pairs: set method: kto (it trains on both) or remove the unpaired rows"
    )
