"""See, before training, exactly what the model will learn from: the library side of ``orpo data inspect``.

``inspect_source`` runs the training pipeline's stages (``orpo.data.pipeline``: ``normalise_source``,
``tokenise_rows``, ``keep_trainable``) on a source and reports what they did, plus what only inspection
needs, measured on every row the tokenise stage returned (dropped ones too):

- the detected format (or each layout's row count when the rows mix layouts), rows kept and dropped by reason (first row numbers and one example line each),
  exact-duplicate pairs;
- token-length percentiles of prompt / chosen / rejected BEFORE truncation, and how many kept pairs
  the configured ``max_prompt_length`` / ``max_completion_length`` / ``max_length`` truncate (pairs
  left with no room for a response are in ``dropped`` as ``no_room_for_response``);
- BOS / EOS checks on the training tokens (both counts should be 0) and how many pairs needed the
  response re-tokenised on its own because the tokenizer merged across the prompt/response boundary;
- the first rows as the model sees them: decoded token ids, and per token whether it is a target of
  the NLL, of the log-probs of the odds ratio, of both, or of nothing (``MARKS``);
- for KTO (``method: kto``, or a source in the unpaired layout, which only KTO trains on): the examples,
  desirable and undesirable, and how many pairs were split in two; lengths are then those of the
  training tokens (after truncation), ``chosen`` the desirable completions, ``rejected`` the undesirable
  ones, and the TRL comparison (an ORPOTrainer one) is left out;
- per source layout, how many kept rows' tokens differ from what TRL 1.16's ORPOTrainer would train on,
  and why (``TRL_DIFF_REASONS``): with ``tokenization: trl`` only our drops remain (a prompt merged
  with a response on one side is TRL's too: that side's prompt tail); with ``tokenization: orpo`` this
  is what the improvements change.

Lengths before truncation come from the same ``PairTokenizer`` with the limits switched off (run only
on the pairs the limits changed); the rendering is the pipeline's ``PairPass.render`` and the example
tokens are the rows ``keep_trainable`` returns, so nothing here re-implements normalisation,
templating, tokenisation or the drop counts.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from datasets import Dataset, concatenate_datasets

from orpo.data.formats import ColumnMap
from orpo.data.load import Source, load_source, source_label
from orpo.data.pipeline import TokenisedRows, keep_trainable, normalise_source, tokenise_rows
from orpo.data.template import render_pair_trl, resolve_chat_template
from orpo.data.tokenize import (
    DROP_NO_ROOM,
    DROP_TOO_SHORT,
    TRL_DEFAULT_MAX_LENGTH,
    Limits,
    PairTokenizer,
    TokenisedPair,
    trl_sequences,
)
from orpo.engine.types import prompt_tails
from orpo.losses import NLL_WEIGHT, get_objective

if TYPE_CHECKING:
    from orpo.config import ORPOConfig

SEGMENTS = ("prompt", "chosen", "rejected")
PERCENTILES = (50, 90, 99)

# What each token of an example is trained on (``TokenView.mark``).
MASKED = "masked"  # a target of nothing: the first token, and the prompt unless nll_on_prompt
NLL = "nll"  # prompt token counted in the NLL only (nll_on_prompt: true); never in the log-probs
NLL_AND_LOGP = "nll+logp"  # chosen response token: the NLL and the chosen log-prob of the odds ratio
LOGP = "logp"  # rejected response token (or chosen when the method has no NLL): log-prob only
MARKS = (MASKED, NLL, NLL_AND_LOGP, LOGP)

# Why a row's tokens differ from TRL's (first that applies): the text differs (chat template on string
# rows, system column, transcript split), the BOS differs, the text and BOS agree but the ids or the
# prompt/response split differ (boundary), only truncation differs, or we drop a row TRL keeps.
TRL_DIFF_REASONS = ("template", "bos", "boundary", "truncation", "dropped")


@dataclass
class TokenView:
    """One token of an example: its id, its text (``decode([id])``) and what it is trained on."""

    id: int
    text: str
    mark: str


@dataclass
class Example:
    """One kept pair exactly as the model sees it (after templating and truncation).

    ``prompt`` / ``chosen`` / ``rejected`` are the decoded training ids (special tokens included);
    the ``*_tokens`` lists hold the same ids one by one. ``prompt`` is what the two sequences share;
    ``chosen`` / ``rejected`` open with their own prompt tail when the tokenizer merged the prompt's end
    into a response (``orpo.data.tokenize``), marked as prompt. Prompt marks are those of the chosen
    sequence; in the rejected sequence every prompt token is masked.
    """

    source_row: int
    prompt: str
    chosen: str
    rejected: str
    prompt_tokens: list[TokenView]
    chosen_tokens: list[TokenView]
    rejected_tokens: list[TokenView]
    truncated: dict[str, bool]


@dataclass
class InspectReport:
    """Everything ``orpo data inspect`` shows; ``to_dict`` is its ``--json`` output.

    ``format`` is the layout of every row, or "mixed" with ``layouts`` (layout -> source rows in it)
    saying how many rows are in each. Counts: ``rows`` in the source, ``kept`` after every filter and truncation, ``dropped`` reason ->
    count, ``first_dropped`` reason -> first source row numbers (0-based), ``drop_examples`` reason ->
    "row N: why". ``lengths`` segment -> {p50, p90, p99, max} tokens before truncation, over the rows
    that passed the format checks; ``truncated`` segment -> kept pairs cut by the limits.
    ``prompts_with_repeated_bos`` and ``responses_without_final_eos`` count training rows that break
    the BOS-once / EOS-once-at-the-end rules (a truncated response has no EOS by design and is not
    counted); both should be 0.
    """

    source: str
    format: str
    layouts: dict[str, int]
    rows: int
    kept: int
    dropped: dict[str, int]
    first_dropped: dict[str, list[int]]
    drop_examples: dict[str, str]
    duplicates: int
    tokenizer: str
    chat_template_mode: str
    strings_templated: bool
    nll_on_prompt: bool
    limits: dict[str, int | str | None]
    lengths: dict[str, dict[str, int]]
    truncated: dict[str, int]
    no_room_for_response: int
    boundary_retokenised: int
    tokenization: str
    # layout -> {"rows": rows that passed the format checks, "differ": rows whose tokens differ from
    # TRL's, and one count per TRL_DIFF_REASONS}
    trl_differences: dict[str, dict[str, int]]
    prompts_with_repeated_bos: int
    responses_without_final_eos: int
    examples: list[Example]
    # Every row's lengths before truncation, for the histogram; too long for the JSON output.
    token_lengths: dict[str, list[int]] = field(default_factory=dict, repr=False)
    # KTO: examples by label, and pairs split into two examples (0 for paired methods).
    desirable: int = 0
    undesirable: int = 0
    pairs_split: int = 0

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["token_lengths"]
        return out


def percentiles(values: list[int]) -> dict[str, int]:
    """p50 / p90 / p99 / max as actual values of ``values`` (nearest rank), 0 when empty."""
    if not values:
        return {**{f"p{q}": 0 for q in PERCENTILES}, "max": 0}
    ranked = np.percentile(values, PERCENTILES, method="inverted_cdf")
    return {**{f"p{q}": int(v) for q, v in zip(PERCENTILES, ranked)}, "max": int(max(values))}


def _leading(ids: list[int], token: int | None) -> int:
    count = 0
    while token is not None and count < len(ids) and ids[count] == token:
        count += 1
    return count


def _token_views(tokenizer, ids: list[int], marks: list[str]) -> list[TokenView]:
    return [TokenView(i, tokenizer.decode([i]), m) for i, m in zip(ids, marks)]


def _example(tokenizer, row: dict, source_row: int, truncated: dict[str, bool], config) -> Example:
    prompt, chosen, rejected = (row[f"{s}_input_ids"] for s in SEGMENTS)
    chosen_tail, rejected_tail = prompt_tails(row)
    has_nll = NLL_WEIGHT.get(config.method, 1.0) > 0
    # Nothing predicts the first token of a sequence, so it is never a target.
    prompt_mark = NLL if has_nll and config.nll_on_prompt else MASKED
    prompt_marks = [MASKED] + [prompt_mark] * (len(prompt) - 1)
    chosen_marks = [prompt_mark] * chosen_tail + [NLL_AND_LOGP if has_nll else LOGP] * (
        len(chosen) - chosen_tail
    )
    return Example(
        source_row=source_row,
        prompt=tokenizer.decode(prompt),
        chosen=tokenizer.decode(chosen),
        rejected=tokenizer.decode(rejected),
        prompt_tokens=_token_views(tokenizer, prompt, prompt_marks),
        chosen_tokens=_token_views(tokenizer, chosen, chosen_marks),
        rejected_tokens=_token_views(
            tokenizer, rejected, [MASKED] * rejected_tail + [LOGP] * (len(rejected) - rejected_tail)
        ),
        truncated=truncated,
    )


def _trl_reference(tokenizer, row: dict, max_length: int | None) -> tuple[list[int], int, list[int], int]:
    """TRL 1.16's (chosen ids, chosen prompt length, rejected ids, rejected prompt length) for a row."""
    seqs = trl_sequences(tokenizer, render_pair_trl(row, tokenizer))
    limit = max_length if max_length is not None else TRL_DEFAULT_MAX_LENGTH
    chosen = seqs.chosen[: max(limit, seqs.chosen_prompt)]
    rejected = seqs.rejected[: max(limit, seqs.rejected_prompt)]
    return chosen, seqs.chosen_prompt, rejected, seqs.rejected_prompt


def _as_trl(pair: TokenisedPair) -> tuple[list[int], int, list[int], int]:
    """(chosen ids, chosen prompt length, rejected ids, rejected prompt length), as ``_trl_reference``."""
    prompt = pair.prompt_input_ids
    return (
        prompt + pair.chosen_input_ids,
        len(prompt) + pair.chosen_prompt_tail_length,
        prompt + pair.rejected_input_ids,
        len(prompt) + pair.rejected_prompt_tail_length,
    )


def _without_bos(ref: tuple[list[int], int, list[int], int], bos: int | None) -> tuple:
    chosen, c_split, rejected, r_split = ref
    if bos is None:
        return ref
    if chosen[:1] == [bos]:
        chosen, c_split = chosen[1:], c_split - 1
    if rejected[:1] == [bos]:
        rejected, r_split = rejected[1:], r_split - 1
    return chosen, c_split, rejected, r_split


def _trl_difference(
    tokenizer, row: dict, rendered, cut: TokenisedPair, full: TokenisedPair, max_length
) -> str:
    """Why the trained tokens of ``row`` differ from TRL's ("" when they are TRL's; TRL_DIFF_REASONS)."""
    trl_full = _trl_reference(tokenizer, row, None if max_length is None else 10**9)
    trl_cut = _trl_reference(tokenizer, row, max_length)
    if cut.drop_reason:
        return "dropped"
    if _as_trl(cut) == trl_cut:
        return ""
    trl_text = render_pair_trl(row, tokenizer)
    if (rendered.prompt + rendered.chosen, rendered.prompt + rendered.rejected) != (
        trl_text.prompt + trl_text.chosen,
        trl_text.prompt + trl_text.rejected,
    ):
        return "template"
    bos = tokenizer.bos_token_id
    if (
        _without_bos(_as_trl(full), bos) == _without_bos(trl_full, bos)
        and _as_trl(full)[0][:1] != trl_full[0][:1]
    ):
        return "bos"
    if _as_trl(full) == trl_full:
        return "truncation"
    return "boundary"


def _drop_example(reason: str, source_row: int, measured: dict, limits: Limits) -> str:
    """The "row N: why" line of a pair dropped at tokenisation."""
    if reason == DROP_NO_ROOM:
        return (
            f"row {source_row}: the prompt keeps {measured['kept_prompt']} tokens and "
            f"max_length={limits.max_length} / max_completion_length={limits.max_completion_length} leave "
            f"fewer than min_response_tokens={limits.min_response_tokens} for a response; raise max_length "
            "or lower max_prompt_length"
        )
    if reason == DROP_TOO_SHORT:
        return (
            f"row {source_row}: a response has {min(measured['chosen'], measured['rejected'])} tokens, fewer "
            f"than min_response_tokens={limits.min_response_tokens}"
        )
    return f"row {source_row}: {reason}"


def inspect_source(
    source: Source,
    tokenizer,
    config: ORPOConfig,
    columns: ColumnMap | dict[str, str] | None = None,
    fmt: str | None = None,
    split: str = "train",
    n_examples: int = 3,
    source_name: str | None = None,
    tokenizer_name: str | None = None,
) -> InspectReport:
    """Inspect ``source`` as training with ``tokenizer`` and ``config`` (an ``ORPOConfig``) would see it.

    ``source`` is anything ``load_source`` reads, ``builtin:NAME``, or rows already loaded. Raises
    ValueError as training would (unreadable source, unknown layout, no usable rows).
    """
    name = source_label(source, source_name)
    norm = normalise_source(load_source(source, split=split), config, name, columns, fmt)
    if not get_objective(config.method).unpaired and any(label is not None for label in norm.rows["label"]):
        config = copy.copy(config)  # unpaired rows: show what KTO, the one method for them, trains on
        config.method = "kto"
    # What training gets: the pipeline's stages, every row's tokens looked at before the filter.
    tokenised = tokenise_rows(norm, tokenizer, config, name)
    trained, report = keep_trainable(tokenised, config, name)
    if tokenised.unpaired:
        return _inspect_examples(trained, report, tokenizer, config, name, n_examples, tokenizer_name)
    pair_pass = tokenised.pair_pass
    measured = _measure_rows(norm, tokenised, config, name)
    reasons = measured["drop_reason"]
    kept_positions = [i for i, reason in enumerate(reasons) if not reason]
    kept_measured = measured.select(kept_positions)
    examples = [
        _example(
            tokenizer,
            trained[k],
            norm.source_index[position],
            dict(zip(SEGMENTS, kept_measured[k]["truncated"])),
            config,
        )
        for k, position in enumerate(kept_positions[:n_examples])
    ]
    token_lengths = {s: measured[s] for s in SEGMENTS}
    return InspectReport(
        **_report_counts(report, name, tokenizer, tokenizer_name),
        drop_examples=_drop_examples(norm, report, measured, pair_pass.limits),
        chat_template_mode=config.chat_template_mode,
        strings_templated=pair_pass.wrap,
        nll_on_prompt=config.nll_on_prompt,
        limits=asdict(pair_pass.limits),
        lengths={s: percentiles(values) for s, values in token_lengths.items()},
        truncated=dict(report.truncated),
        no_room_for_response=report.dropped.get(DROP_NO_ROOM, 0),
        boundary_retokenised=report.boundary_retokenised,
        tokenization=pair_pass.tokenization,
        trl_differences=_trl_differences(measured),
        prompts_with_repeated_bos=sum(kept_measured["repeated_bos"]),
        responses_without_final_eos=sum(kept_measured["bad_eos"]),
        examples=examples,
        token_lengths=token_lengths,
    )


def _measure_rows(norm, tokenised: TokenisedRows, config, name: str) -> Dataset:
    """Per-row detail the pipeline does not keep, one row per normalised row (dropped ones too).

    Lengths before truncation, the truncation flags, the drop reason, the BOS / EOS checks, the layout
    and why the tokens differ from TRL's; the trained tokens are the pipeline's (``tokenised``), the
    untruncated ones the same pass with the limits off, run only on the pairs the limits changed.
    """
    pair_pass = tokenised.pair_pass
    tokenizer = pair_pass.tokenizer
    limits = pair_pass.limits
    unlimited = PairTokenizer(
        tokenizer,
        # (10**9, not None: None is TRL's 512 in "trl" mode)
        replace(limits, max_length=10**9, max_prompt_length=None, max_completion_length=None),
        pair_pass.tokenization,
    )
    bos_id, eos_id = tokenizer.bos_token_id, pair_pass.pairs.eos_id
    pair_fields = [f.name for f in fields(TokenisedPair)]

    def measure(row: dict) -> dict:
        rendered = pair_pass.render(row)
        cut = TokenisedPair(**{f: row[f] for f in pair_fields})
        # The limits only ever shorten, so a pair they left alone is its own untruncated form.
        shortened = cut.prompt_truncated or cut.chosen_truncated or cut.rejected_truncated
        full = unlimited(rendered) if shortened or cut.drop_reason == DROP_NO_ROOM else cut
        bad_eos = 0
        for side, ids in zip(("chosen", "rejected"), cut.responses()):
            complete = not getattr(cut, f"{side}_truncated")
            if eos_id is not None and complete and (ids[-1:] != [eos_id] or ids.count(eos_id) != 1):
                bad_eos += 1
        full_chosen, full_rejected = full.responses()
        return {
            # The chosen sequence's prompt (the shared prompt and its tail); responses without tails.
            "prompt": len(full.prompt_input_ids) + full.chosen_prompt_tail_length,
            "chosen": len(full_chosen),
            "rejected": len(full_rejected),
            "kept_prompt": len(cut.prompt_input_ids)
            + max(cut.chosen_prompt_tail_length, cut.rejected_prompt_tail_length),
            "drop_reason": cut.drop_reason,
            "truncated": [cut.prompt_truncated, cut.chosen_truncated, cut.rejected_truncated],
            "repeated_bos": _leading(cut.prompt_input_ids, bos_id) > 1,
            "bad_eos": bad_eos,
            "layout": row.get("layout") or norm.format,
            "trl_diff": _trl_difference(tokenizer, row, rendered, cut, full, limits.max_length),
        }

    # Each canonical row beside its tokens (the tokenise map keeps order and length).
    both = concatenate_datasets([norm.rows, tokenised.rows], axis=1)
    return both.map(
        measure,
        remove_columns=both.column_names,
        num_proc=config.dataset_num_proc,
        desc=f"Inspecting {name}",
    )


def _drop_examples(norm, report, measured: Dataset, limits: Limits) -> dict[str, str]:
    """Reason -> "row N: why": normalisation's lines, then one for each reason tokenisation dropped."""
    drop_examples = dict(norm.drop_examples)
    reasons = measured["drop_reason"]
    for reason in report.dropped:
        if reason not in drop_examples:
            position = reasons.index(reason)
            drop_examples[reason] = _drop_example(
                reason, norm.source_index[position], measured[position], limits
            )
    return drop_examples


def _trl_differences(measured: Dataset) -> dict[str, dict[str, int]]:
    """Per layout: rows, rows whose tokens differ from TRL's, and how many for each TRL_DIFF_REASONS."""
    trl_differences: dict[str, dict[str, int]] = {}
    for layout, reason in zip(measured["layout"], measured["trl_diff"]):
        counts = trl_differences.setdefault(
            layout, {"rows": 0, "differ": 0, **dict.fromkeys(TRL_DIFF_REASONS, 0)}
        )
        counts["rows"] += 1
        if reason:
            counts["differ"] += 1
            counts[reason] += 1
    return trl_differences


def _report_counts(report, name: str, tokenizer, tokenizer_name: str | None) -> dict:
    """The InspectReport fields that come straight from the data layer's report (paired or unpaired)."""
    return dict(
        source=name,
        format=report.format,
        layouts=dict(report.layouts),
        rows=report.rows,
        kept=report.kept,
        dropped=dict(report.dropped),
        first_dropped=dict(report.first_dropped),
        duplicates=report.duplicates,
        tokenizer=tokenizer_name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
    )


def _inspect_examples(
    trained: Dataset, report, tokenizer, config, name: str, n_examples: int, tokenizer_name: str | None
) -> InspectReport:
    """``inspect_source`` for an unpaired objective (KTO): counts and lengths from the training rows."""
    limits = Limits.from_config(config)
    bos_id, eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    labels = trained["label"]
    prompts, completions = trained["prompt_input_ids"], trained["chosen_input_ids"]
    token_lengths = {
        "prompt": [len(p) for p in prompts],
        "chosen": [len(c) for c, desirable in zip(completions, labels) if desirable],
        "rejected": [len(c) for c, desirable in zip(completions, labels) if not desirable],
    }
    cut = [
        limits.max_length is not None and len(p) + len(c) >= limits.max_length
        for p, c in zip(prompts, completions)
    ]
    examples = [
        _kto_example(tokenizer, row, was_cut) for row, was_cut in list(zip(trained, cut))[:n_examples]
    ]
    return InspectReport(
        **_report_counts(report, name, tokenizer, tokenizer_name),
        drop_examples={},
        chat_template_mode=config.chat_template_mode,
        strings_templated=resolve_chat_template(tokenizer, None, config.chat_template_mode),
        nll_on_prompt=config.nll_on_prompt,
        limits=asdict(limits),
        lengths={s: percentiles(values) for s, values in token_lengths.items()},
        truncated={"prompt": 0, "chosen": report.truncated.get("chosen", 0), "rejected": 0},
        no_room_for_response=report.dropped.get(DROP_NO_ROOM, 0),
        boundary_retokenised=0,
        tokenization=getattr(config, "tokenization", "orpo"),
        trl_differences={},
        prompts_with_repeated_bos=sum(_leading(p, bos_id) > 1 for p in prompts),
        responses_without_final_eos=sum(
            eos_id is not None and not was_cut and c[-1:] != [eos_id] for c, was_cut in zip(completions, cut)
        ),
        examples=examples,
        token_lengths=token_lengths,
        desirable=report.desirable,
        undesirable=report.undesirable,
        pairs_split=report.pairs_split,
    )


def _kto_example(tokenizer, row: dict, was_cut: bool) -> Example:
    """One KTO training example: the completion on the side its label names, a log-prob target only
    (KTO has no NLL)."""
    ids = {"chosen": [], "rejected": [], "chosen" if row["label"] else "rejected": row["chosen_input_ids"]}
    prompt = row["prompt_input_ids"]
    return Example(
        source_row=row["source_row"],
        prompt=tokenizer.decode(prompt),
        chosen=tokenizer.decode(ids["chosen"]),
        rejected=tokenizer.decode(ids["rejected"]),
        prompt_tokens=_token_views(tokenizer, prompt, [MASKED] * len(prompt)),
        chosen_tokens=_token_views(tokenizer, ids["chosen"], [LOGP] * len(ids["chosen"])),
        rejected_tokens=_token_views(tokenizer, ids["rejected"], [LOGP] * len(ids["rejected"])),
        truncated={
            "prompt": False,
            "chosen": was_cut and row["label"],
            "rejected": was_cut and not row["label"],
        },
    )


def plot_lengths(report: InspectReport, path: str | Path) -> Path:
    """Histogram PNG of prompt / chosen / rejected lengths before truncation, limits as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    longest = max((max(v) for v in report.token_lengths.values() if v), default=1)
    bins = np.linspace(0, longest + 1, min(60, longest + 2))
    for segment, values in report.token_lengths.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{segment} ({len(values)} rows)")
    styles = {"max_prompt_length": ":", "max_completion_length": "-.", "max_length": "--"}
    for name, style in styles.items():
        value = report.limits.get(name)
        if value is not None:
            ax.axvline(value, color="black", linestyle=style, linewidth=1, label=f"{name}={value}")
    ax.set_xlabel("tokens (before truncation)")
    ax.set_ylabel("rows")
    ax.set_title(f"{report.source}: token lengths ({report.tokenizer})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
