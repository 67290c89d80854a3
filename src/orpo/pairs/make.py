"""``make_pairs``: a model's own samples, scored by a judge, paired into preference rows (``orpo pairs``).

The steps, each its own function: load the prompts (and refuse bad inputs before any model is
opened), sample (``orpo.pairs.sample`` or ``orpo.pairs.server``), score each distinct completion
(``orpo.pairs.score``), pair (``orpo.pairs.pairing``), write OUT and its companions (the files are in
the package docstring, ``orpo.pairs``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from orpo.evaluation.generate import GenerationSettings, Prompt, load_prompts
from orpo.pairs.pairing import Candidate, PairingSettings, PromptResult, collapse, pair_prompt
from orpo.pairs.report import distribution, histogram
from orpo.pairs.sample import sample_file
from orpo.pairs.score import ScoreItem, build_scorer
from orpo.pairs.server import Server, server_sample_file

# Settings that may change between a run and its rerun without changing what OUT holds for a prompt.
RERUN_FREE = ("limit", "batch_size", "server_url")


@dataclass
class PairsResult:
    """The rows written to OUT and the summary written to OUT.summary.json."""

    rows: list[dict]
    summary: dict


def output_paths(out: str | Path) -> dict[str, Path]:
    """The files that go with OUT (see the ``orpo.pairs`` docstring)."""
    out = Path(out)
    return {
        "out": out,
        "samples": out.with_suffix(".samples.jsonl"),
        "summary": out.with_suffix(".summary.json"),
        "histogram": out.with_suffix(".scores.png"),
        "cache": out.with_suffix(".cache"),
    }


def _row(prompt: Prompt, pair, reference: str | None) -> dict:
    """One output row in the prompt's layout, with the pair's provenance."""
    if prompt.text_prompt is not None:
        system = prompt.messages[0]["content"] if prompt.messages[0]["role"] == "system" else None
        row = {"system": system} if system else {}
        row.update(prompt=prompt.text_prompt, chosen=pair.chosen, rejected=pair.rejected)
    else:
        row = {
            "prompt": prompt.messages,
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    row.update(
        prompt_id=prompt.id,
        chosen_score=pair.chosen_score,
        rejected_score=pair.rejected_score,
        margin=pair.chosen_score - pair.rejected_score,
        chosen_sample=pair.chosen_sample,
        rejected_sample=pair.rejected_sample,
    )
    if reference is not None:
        row["reference"] = reference
    row["source"] = "on-policy"
    return row


def _check_out(paths: dict[str, Path], settings: dict) -> None:
    """Refuse an OUT written with other settings (as ``orpo generate`` refuses its --out)."""
    out, summary = paths["out"], paths["summary"]
    if not out.exists():
        return
    if not summary.is_file():
        raise ValueError(
            f"{out} exists without {summary.name}, so not from orpo pairs; use another --out or delete it"
        )
    old = {
        k: v for k, v in json.loads(summary.read_text()).get("settings", {}).items() if k not in RERUN_FREE
    }
    new = {k: v for k, v in settings.items() if k not in RERUN_FREE}
    if old != new:
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        diff = ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in changed)
        raise ValueError(
            f"{out} was written with other settings ({diff}); use another --out or delete it and its "
            ".samples.jsonl"
        )


def _check_references(prompts: list[Prompt], source: str) -> None:
    for number, p in enumerate(prompts):
        if p.reference is None:
            raise ValueError(
                f"{source} row {number} (id {p.id}): no reference answer, which --chosen reference needs on "
                "every prompt; add a `reference` (or `chosen`) field or use --chosen best-or-reference"
            )


def make_pairs(
    model,
    prompts: str | list[Prompt],
    judge: str,
    out: str | Path,
    *,
    samples: int = 4,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    split: str = "train",
    limit: int | None = None,
    chosen: str = "best-or-reference",
    rejected: str = "worst",
    min_margin: float = 0.0,
    pairs_per_prompt: int = 1,
    metric: str | None = None,
    reward_batch_size: int = 8,
    llm: dict | None = None,
    cache_dir: str | Path | None = None,
    open_model_options: dict | None = None,
    server: Server | None = None,
    progress: bool = False,
    scorer=None,
) -> PairsResult:
    """Sample, score and pair (see the package docstring); write OUT and its companions.

    ``model`` is a path or name ``orpo.run.loading.open_model`` opens (``open_model_options``: base,
    tokenizer, dtype), or an opened ``LoadedModel``. ``prompts`` is a source ``load_prompts`` reads
    (``split``, ``limit``) or a list of ``Prompt``. ``judge`` is ``rules:FILE.py``, ``rules:codereview``,
    ``reward:MODEL`` or ``openai`` (``llm``: the ``LLMScorer`` options). With ``server`` the samples come
    from that endpoint (``orpo.pairs.server``) and only the tokenizer of ``model`` is opened. Every
    check that needs no model runs before the model is opened, so a bad input costs no sampling.
    ``scorer``: ``judge``'s scorer when the caller has built (and probed) it already; ``metric``,
    ``reward_batch_size``, ``llm`` and ``cache_dir`` are then the caller's business (``orpo iterate``
    builds it once for every round, so a reward model is not loaded again per round).
    """
    if samples < 2:
        raise ValueError(f"--samples {samples}: pairs need at least 2 samples per prompt")
    sampling = GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        num_samples=samples,
        batch_size=batch_size,
    )
    pairing = PairingSettings(chosen, rejected, min_margin, pairs_per_prompt, seed)
    paths = output_paths(out)
    if paths["out"].suffix != ".jsonl":
        raise ValueError(f"--out {out}: give a .jsonl file")
    source, prompts = _load_prompts(prompts, split, limit, pairing)
    if scorer is None:
        scorer = _scorer(
            judge,
            prompts,
            metric=metric,
            reward_batch_size=reward_batch_size,
            llm=llm,
            cache_dir=cache_dir or paths["cache"],
        )
    settings = _settings(model, source, split, limit, sampling, server, scorer, pairing)
    _check_out(paths, settings)
    records, written, kept = _sample(
        model, prompts, sampling, paths["samples"], server, open_model_options, progress
    )
    by_prompt, reference_scores = _score(prompts, records, scorer, pairing)
    rows, results = _pair(prompts, by_prompt, reference_scores, pairing)
    summary = _summary(paths, settings, prompts, records, by_prompt, results, rows, scorer, written, kept)
    _refuse_unscored(paths["out"], summary, judge)
    _write(paths, rows, summary, by_prompt, judge)
    return PairsResult(rows, summary)


def _load_prompts(
    prompts: str | list[Prompt], split: str, limit: int | None, pairing: PairingSettings
) -> tuple[str, list[Prompt]]:
    """(the source's name, its prompts); a source with no prompts, or a missing reference that
    ``--chosen reference`` needs, is refused."""
    source = prompts if isinstance(prompts, str) else "python"
    if isinstance(prompts, str):
        prompts = load_prompts(prompts, split=split, limit=limit)
    if not prompts:
        raise ValueError(f"{source}: no prompts")
    if pairing.chosen == "reference":
        _check_references(prompts, source)
    return source, prompts


def _scorer(judge: str, prompts: list[Prompt], **options):
    """The judge's scorer (``orpo.pairs.score.build_scorer``), probed on one prompt when that is free."""
    scorer = build_scorer(judge, **options)
    if judge.startswith("rules:"):
        # A free probe: a rules file that cannot score these prompts (no reference, unknown --metric)
        # fails now, before any sampling. Prompts without a reference are the likelier failure.
        probe = next((p for p in prompts if p.reference is None), prompts[0])
        scorer.score([ScoreItem(probe.id, probe.text, "", probe.reference)])
    return scorer


def _settings(
    model,
    source: str,
    split: str,
    limit: int | None,
    sampling: GenerationSettings,
    server: Server | None,
    scorer,
    pairing: PairingSettings,
) -> dict:
    """The run's settings, as OUT.summary.json records them and a rerun compares them."""
    name = model if isinstance(model, str) else model.name
    return {
        "model": str(name),
        "prompts": str(source),
        "split": split,
        "limit": limit,
        "batch_size": sampling.batch_size,
        "sampling": sampling.record()
        | ({"backend": "server", "server_model": server.model} if server else {}),
        "server_url": server.url if server else None,
        "judge": scorer.settings(),
        "pairing": asdict(pairing),
    }


def _sample(
    model,
    prompts: list[Prompt],
    sampling: GenerationSettings,
    samples_path: Path,
    server: Server | None,
    open_model_options: dict | None,
    progress: bool,
) -> tuple[list[dict], int, int]:
    """(every sample record, samples generated now, samples reused from the file): the model opened
    here when given by name, the samples from it or from ``server``."""
    if isinstance(model, str):
        from orpo.run.loading import open_model  # deferred: torch and the model stack, after every check

        model = open_model(model, **(open_model_options or {}), weights=server is None)
    if server is None:
        return sample_file(model, prompts, sampling, samples_path, progress=progress)
    return server_sample_file(model, prompts, sampling, samples_path, server, progress=progress)


def _score(
    prompts: list[Prompt], records: list[dict], scorer, pairing: PairingSettings
) -> tuple[dict[str, list[Candidate]], dict[str, float]]:
    """Score each distinct completion of each prompt once, and the references pairing may take.

    Returns prompt id -> its scored candidates (identical completions collapsed), and prompt id ->
    the score of its reference.
    """
    texts: dict[str, list[str]] = {p.id: [] for p in prompts}
    for r in records:  # in prompt and sample order
        texts[r["id"]].append(r["completion"])
    by_prompt: dict[str, list[Candidate]] = {}
    items: list[ScoreItem] = []
    for p in prompts:
        by_prompt[p.id] = collapse(texts[p.id], [None] * len(texts[p.id]))
        items += [ScoreItem(p.id, p.text, c.text, p.reference) for c in by_prompt[p.id]]
    n_candidates = len(items)
    if pairing.uses_reference:
        items += [
            ScoreItem(p.id, p.text, p.reference, p.reference) for p in prompts if p.reference is not None
        ]
    scores = scorer.score(items)
    candidate_scores = iter(scores[:n_candidates])
    reference_scores = dict(zip((i.id for i in items[n_candidates:]), scores[n_candidates:]))
    scored = {
        p.id: [Candidate(c.text, next(candidate_scores), c.samples) for c in by_prompt[p.id]] for p in prompts
    }
    return scored, reference_scores


def _pair(
    prompts: list[Prompt],
    by_prompt: dict[str, list[Candidate]],
    reference_scores: dict[str, float],
    pairing: PairingSettings,
) -> tuple[list[dict], dict[str, PromptResult]]:
    """(the output rows, prompt id -> what pairing did with it)."""
    rows, results = [], {}
    for p in prompts:
        result = pair_prompt(p.id, by_prompt[p.id], p.reference, reference_scores.get(p.id), pairing)
        results[p.id] = result
        rows += [_row(p, pair, p.reference) for pair in result.pairs]
    return rows, results


def _refuse_unscored(out: Path, summary: dict, judge: str) -> None:
    """No pair because the judge could not score the samples: one line with the counts by reason, and no
    OUT written (an empty file would read as a finished, if fruitless, run). No pair for a judged reason
    (every sample ties) is a result: written, and the summary says why."""
    counts = summary["counts"]
    if counts["pairs"] or "no_score" not in counts["dropped"]:
        return
    unscored, total = counts["unscored_samples"], counts["samples"]
    scored = (
        f"the judge scored none of the {total} samples"
        if unscored == total
        else f"the judge could not score {unscored} of the {total} samples"
    )
    reasons = ", ".join(f"{reason} {n}" for reason, n in counts["dropped"].items())
    raise ValueError(
        f"{out}: no pairs from {counts['prompts']} prompts: {scored} (dropped prompts: {reasons}); check that "
        f"--judge {judge} can score these prompts (an LLM judge's replies against --score-pattern); nothing "
        f"written but the samples, {summary['files']['samples']}, which a rerun reuses"
    )


def _write(
    paths: dict[str, Path], rows: list[dict], summary: dict, by_prompt: dict[str, list[Candidate]], judge: str
) -> None:
    """The histogram, the summary, then OUT (replaced whole, so a killed write leaves the old file). OUT
    last: a run killed before it leaves no OUT, so a rerun (which refuses an OUT without its summary)
    redoes the pairing from the kept samples."""
    histogram(
        paths["histogram"],
        [c.score for cs in by_prompt.values() for c in cs for _ in c.samples if c.score is not None],
        [r["chosen_score"] for r in rows],
        [r["rejected_score"] for r in rows],
        judge,
    )
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    tmp = paths["out"].with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, paths["out"])


def _summary(
    paths,
    settings,
    prompts,
    records,
    by_prompt,
    results: dict[str, PromptResult],
    rows,
    scorer,
    written,
    kept,
) -> dict:
    dropped: dict[str, int] = {}
    for result in results.values():
        if result.dropped:
            dropped[result.dropped] = dropped.get(result.dropped, 0) + 1
    paired = sum(1 for r in results.values() if r.pairs)
    reference_used = sum(1 for r in results.values() if r.pairs and r.reference_used)
    candidates = [c for cs in by_prompt.values() for c in cs]
    return {
        "out": str(paths["out"]),
        "settings": settings,
        "counts": {
            "prompts": len(prompts),
            "samples": len(records),
            "distinct_samples": len(candidates),
            "collapsed_samples": len(records) - len(candidates),
            "unscored_samples": sum(len(c.samples) for c in candidates if c.score is None),
            "prompts_paired": paired,
            "pairs": len(rows),
            "dropped": dict(sorted(dropped.items())),
            "reference_used": reference_used,
            "samples_generated": written,
            "samples_reused": kept,
        },
        "reference_share": reference_used / paired if paired else None,
        "scores": {
            # every sample (a collapsed candidate counts once per sample that produced it)
            "samples": distribution([c.score for c in candidates for _ in c.samples if c.score is not None]),
            "chosen": distribution([r["chosen_score"] for r in rows]),
            "rejected": distribution([r["rejected_score"] for r in rows]),
            "margin": distribution([r["margin"] for r in rows]),
        },
        "judge_counters": scorer.counters(),
        "files": {k: str(v) for k, v in paths.items() if k != "out"},
    }
