"""The demo's pair sources: the base's own samples paired by the rules (on-policy), or the generator's
synthetic rejected reviews.

on-policy   for each training prompt, ``samples`` reviews sampled from the base at temperature 1
            (under bf16 autocast where ``BaseSpec.sample_bf16``), each scored by ``rules:codereview`` (f1 against the snippet's true violations); chosen =
            the best sample, or the reference review when no sample scores as well; rejected = the
            worst sample (``orpo.pairs.make_pairs``, the same code as ``orpo pairs``). A prompt whose
            samples all equal the reference has nothing to push down and gives no pair. Cached under
            ``$ORPO_CACHE_DIR/demo_pairs/<hash of its settings>/pairs.jsonl`` (with make_pairs' own
            summary, samples and histogram), reused while the settings are the same.
synthetic   the train split as generated: the correct review against one realistic failure drawn by
            the generator (a missed violation, a false comment, a wrong approval or a wrong flag).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orpo.lab.demo.base import Base, settings_key
from orpo.lab.demo.settings import (
    BASE_THREADS,
    PAIR_CHOSEN,
    PAIR_REJECTED,
    PAIR_SEED,
    PAIR_TEMPERATURE,
    DemoSize,
    torch_threads,
)
from orpo.tasks.codereview.generator import ReviewExample, to_rows

PAIRS_VERSION = 1  # bump when this stage's code changes what it computes (invalidates caches)
JUDGE = "rules:codereview"


@dataclass
class PairSource:
    """One source's training rows and what the table says of them.

    Attributes:
        name: ``on-policy`` or ``synthetic``.
        rows: the training rows (prompt, chosen, rejected; on-policy rows carry their scores too).
        report: counts (prompts, pairs, dropped by reason, reference used) and mean scores.
        key: the hash of the source's settings (``synthetic``: the splits' seed), part of the tune's key.
        cached: whether an earlier run had made the pairs (None for synthetic pairs: nothing is made).
    """

    name: str
    rows: list[dict[str, Any]]
    report: dict[str, Any]
    key: str
    cached: bool | None


def pairs_settings(base: Base, budget: DemoSize, max_new_tokens: int) -> dict[str, Any]:
    """Everything the on-policy pairs depend on (their cache key is the hash)."""
    return {
        "version": PAIRS_VERSION,
        "base": base.key,
        "n_train": budget.n_train,
        "samples": budget.samples,
        "temperature": PAIR_TEMPERATURE,
        "max_new_tokens": max_new_tokens,
        "seed": PAIR_SEED,
        "judge": JUDGE,
        "chosen": PAIR_CHOSEN,
        "rejected": PAIR_REJECTED,
    }


def synthetic_pairs(train: list[ReviewExample], base_seed: int, system: str | None = None) -> PairSource:
    """The train split as generated: each correct review against its one drawn failure (``system``: the
    base's system turn, ``BaseSpec.system``)."""
    rows = to_rows(train, system)
    kinds: dict[str, int] = {}
    for example in train:
        kinds[example.failure_kind] = kinds.get(example.failure_kind, 0) + 1
    report = {"prompts": len(rows), "pairs": len(rows), "rejected_kinds": dict(sorted(kinds.items()))}
    return PairSource(
        name="synthetic", rows=rows, report=report, key=f"synthetic-{base_seed}-{len(rows)}", cached=None
    )


def pair_prompts(train: list[ReviewExample], system: str | None) -> list:
    """The training prompts as the sampler takes them (``evaluation.generate.Prompt``): the system turn
    (``BaseSpec.system``) where the base has one, then the snippet's prompt; the reference review is the
    snippet's correct one. Rendered by the sampler exactly as training renders ``to_rows(train, system)``."""
    from orpo.evaluation.generate import Prompt

    head = [{"role": "system", "content": system}] if system is not None else []
    return [
        Prompt(
            id=str(i),
            messages=[*head, {"role": "user", "content": row["prompt"]}],
            text_prompt=row["prompt"],
            reference=row["chosen"],
        )
        for i, row in enumerate(to_rows(train))
    ]


def on_policy_pairs(
    base: Base,
    train: list[ReviewExample],
    budget: DemoSize,
    max_new_tokens: int,
    root: Path,
    progress: bool,
) -> PairSource:
    """The base's own samples of the training prompts, paired by the rules (cached by settings)."""
    from orpo.pairs import make_pairs, output_paths

    settings = pairs_settings(base, budget, max_new_tokens)
    key = settings_key(settings)
    out = root / key / "pairs.jsonl"
    summary_path = output_paths(out)["summary"]
    cached = out.is_file() and summary_path.is_file()
    if cached:
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        summary = json.loads(summary_path.read_text())
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / "settings.json").write_text(json.dumps(settings, indent=1))
        prompts = pair_prompts(train, base.spec.system())
        if progress:
            print(
                f"[demo] on-policy pairs: {budget.samples} samples of the base per prompt for "
                f"{len(prompts)} prompts, scored by {JUDGE}",
                file=sys.stderr,
                flush=True,
            )
        import torch

        # One process with the machine to itself, as the base stage.
        with (
            torch_threads(BASE_THREADS),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=base.spec.sample_bf16),
        ):
            result = make_pairs(
                str(base.path),
                prompts,
                JUDGE,
                out,
                samples=budget.samples,
                temperature=PAIR_TEMPERATURE,
                seed=PAIR_SEED,
                max_new_tokens=max_new_tokens,
                batch_size=base.spec.gen_batch_size,
                chosen=PAIR_CHOSEN,
                rejected=PAIR_REJECTED,
                progress=False,
            )
        rows, summary = result.rows, result.summary
    counts, scores = summary["counts"], summary["scores"]
    report = {
        "prompts": counts["prompts"],
        "samples": counts["samples"],
        "distinct_samples": counts["distinct_samples"],
        "pairs": counts["pairs"],
        "dropped": counts["dropped"],
        "reference_used": counts["reference_used"],
        "reference_share": summary["reference_share"],
        "mean_f1": {k: scores[k]["mean"] for k in ("samples", "chosen", "rejected")},
        "settings": settings,
        "folder": str(out.parent),
    }
    if not rows:
        raise ValueError(f"on-policy pairs: no pair from {counts['prompts']} prompts ({counts['dropped']})")
    return PairSource(name="on-policy", rows=rows, report=report, key=key, cached=cached)
