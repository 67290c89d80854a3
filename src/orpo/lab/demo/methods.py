"""One method of the demo trained and scored: from the base, on the tokenised splits, in its own process.

prepare_data   validation and test tokenised once, so every method is scored on the same ids
prepare_train  one pair source's training rows tokenised as pairs and (for KTO) as examples
train_method   one (method, seed) from the base with its tuned values: the held-out log-prob curve,
               then the test scores
judge_reviews  greedy reviews judged by rules:codereview (``orpo.evaluation.judged``, EOS kept)
score_model    greedy reviews of the test snippets judged by the rules, preference accuracy, samples
judged_f1      the rules' mean f1 of greedy reviews (the studies' objective on validation)
run_jobs       every (method, seed) run, each in a fresh process, ``WORKERS`` at a time
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from orpo.evaluation.judged import AnswerSettings, JudgedPrompt, judge_answers
from orpo.evaluation.judges import parse_judge
from orpo.lab.demo.base import Base
from orpo.lab.demo.settings import (
    BF16,
    EVAL_BATCH_SIZE,
    GEN_BATCH_SIZE,
    GEN_MARGIN_TOKENS,
    NUM_THREADS,
    WORKERS,
    BaseSpec,
    DemoSize,
    eval_steps_of,
    orpo_config,
    scoring_config,
    torch_threads,
)
from orpo.lab.demo.table import snippet_counts
from orpo.lab.harness import reset_peak_rss, status_mb
from orpo.launch import ProcessResult, run_all
from orpo.losses import get_objective
from orpo.run.callbacks import quiet
from orpo.tasks.codereview.generator import ReviewExample, to_rows
from orpo.tasks.codereview.judge import score_review


@dataclass
class TrainSet:
    """One pair source's training data, tokenised for both kinds of objective.

    Attributes:
        source: ``on-policy`` or ``synthetic``.
        pairs: the pairs as the paired objectives take them (token columns, one row per pair).
        examples: the same pairs as KTO takes them: two examples per pair, with their KL samples
            (fixed for a batch of ``batch_of("kto", batch_size)`` examples).
        report: the data layer's one-line account of the pairs' tokenisation (rows kept, dropped by
            reason).
    """

    source: str
    pairs: Any
    examples: Any
    report: str = ""

    def for_method(self, method: str):
        return self.examples if get_objective(method).unpaired else self.pairs

    def first(self, n: int) -> TrainSet:
        """The first ``n`` pairs (the budget curve); KTO's examples are not narrowed (not used there)."""
        return TrainSet(self.source, self.pairs.select(range(n)), None, self.report)


@dataclass
class DemoData:
    """Validation and test tokenised once, so every method is scored on identical token ids.

    Attributes:
        val, test: `datasets.Dataset`s with the engine's token columns, one row per pair.
        val_kto: the validation pairs as KTO's examples (its held-out curve).
        val_examples: the validation split's snippets with their true violations (the studies' judge).
        test_rows: the test split's raw rows (prompt / chosen / rejected), aligned with `test`.
        test_examples: the test split's snippets with their true violations, aligned with `test`.
        max_new_tokens: generation budget: the longest chosen review of the train split + GEN_MARGIN_TOKENS.
        gen_batch_size: prompts per generation batch (the base's, ``BaseSpec.gen_batch_size``).
    """

    val: Any
    val_kto: Any
    test: Any
    val_examples: list[ReviewExample]
    test_rows: list[dict[str, str]]
    test_examples: list[ReviewExample]
    max_new_tokens: int
    gen_batch_size: int = GEN_BATCH_SIZE

    def val_for(self, method: str):
        return self.val_kto if get_objective(method).unpaired else self.val


def _tokenise(rows: list[dict], tok, config, name: str, all_kept: bool):
    """(dataset, the data layer's report); ``all_kept``: every row must survive (validation, test)."""
    from orpo.data.pipeline import prepare_dataset

    dataset, report = prepare_dataset(rows, tok, config, source_name=name)
    # Rows must stay aligned with their snippets (the judge needs each row's violations).
    per_row = 2 if get_objective(config.method).unpaired else 1  # KTO: a desirable, an undesirable example
    if all_kept and report.kept != per_row * len(rows):
        raise ValueError(f"demo {name} split: {report.summary()}; the demo expects every row kept")
    return dataset, report


def prepare_data(
    splits: dict[str, list[ReviewExample]],
    tok,
    config,
    kto_config,
    system: str | None = None,
    gen_batch_size: int = GEN_BATCH_SIZE,
) -> DemoData:
    """Validation and test tokenised with ``config`` (pairs) and validation also with ``kto_config``;
    ``system``: the system turn of every prompt (``BaseSpec.system``)."""
    val_rows = to_rows(splits["val"], system)
    test_rows = to_rows(splits["test"], system)
    train_chosen = [tok(r["chosen"], add_special_tokens=False)["input_ids"] for r in to_rows(splits["train"])]
    return DemoData(
        val=_tokenise(val_rows, tok, config, "val", True)[0],
        val_kto=_tokenise(val_rows, tok, kto_config, "val", True)[0],
        test=_tokenise(test_rows, tok, config, "test", True)[0],
        val_examples=splits["val"],
        test_rows=test_rows,
        test_examples=splits["test"],
        # +1: the EOS the tokenised response ends with
        max_new_tokens=max(len(ids) for ids in train_chosen) + 1 + GEN_MARGIN_TOKENS,
        gen_batch_size=gen_batch_size,
    )


def prepare_train(source: str, rows: list[dict], tok, config, kto_config) -> TrainSet:
    """A pair source's rows (prompt, chosen, rejected; and system where the base's prompts have one)
    tokenised as pairs and as KTO's examples."""
    rows = [{k: r[k] for k in ("system", "prompt", "chosen", "rejected") if k in r} for r in rows]
    pairs, report = _tokenise(rows, tok, config, f"{source} pairs", False)
    return TrainSet(
        source=source,
        pairs=pairs,
        examples=_tokenise(rows, tok, kto_config, f"{source} pairs", False)[0],
        report=report.summary(),
    )


def judge_reviews(
    model,
    tok,
    prompt_ids: list[list[int]],
    examples: list[ReviewExample],
    max_new_tokens: int,
    batch_size: int = GEN_BATCH_SIZE,
):
    """Greedy reviews of these prompts judged by ``rules:codereview`` against each snippet's chosen
    review (its true violations), through ``orpo.evaluation.judged``. Reviews are decoded with
    special tokens kept: the judge cuts a review at the EOS marker (the tiny base's, or a chat
    template's end of turn such as ``<|im_end|>``, where generation stops), and a review without one
    ran out of ``max_new_tokens``. The judge reads only the review (its prompt text is "")."""
    prompts = [
        JudgedPrompt(str(i), "", list(ids), example.chosen)
        for i, (ids, example) in enumerate(zip(prompt_ids, examples))
    ]
    settings = AnswerSettings(max_new_tokens, batch_size=batch_size, bf16=BF16, keep_special=True)
    return judge_answers(model, tok, prompts, parse_judge("rules:codereview").scorer(), settings)


def pair_mean_logps(engine, model, dataset) -> tuple[list[float], list[float]]:
    """Per pair: mean log-prob per token of the chosen and of the rejected response (no grad, bf16
    autocast as in training)."""
    import torch
    from torch.utils.data import DataLoader

    from orpo.engine.types import PAIR_COLUMNS

    loader = DataLoader(
        dataset.select_columns(list(PAIR_COLUMNS)),
        batch_size=EVAL_BATCH_SIZE,
        shuffle=False,
        collate_fn=engine.collator,
    )
    chosen: list[float] = []
    rejected: list[float] = []
    model.eval()
    for batch in loader:
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
            stats = engine.forward(model, batch, False)
        chosen += stats.chosen_mean_logps.float().tolist()
        rejected += stats.rejected_mean_logps.float().tolist()
    return chosen, rejected


def judged_f1(
    model,
    tok,
    prompt_ids: list[list[int]],
    examples: list[ReviewExample],
    max_new_tokens: int,
    batch_size: int = GEN_BATCH_SIZE,
):
    """Mean f1 of the greedy reviews of these prompts (a study's objective: the validation split's).
    The mean is summed in order, as the demo's cached studies were."""
    judged = judge_reviews(model, tok, prompt_ids, examples, max_new_tokens, batch_size)
    return sum(s["f1"] for s in judged.scores) / len(examples)


def score_model(engine, model, tok, data: DemoData) -> dict[str, Any]:
    """Per test snippet counts (`table.snippet_counts`), the mean test log-probs, and three samples."""
    judged = judge_reviews(
        model,
        tok,
        data.test["prompt_input_ids"],
        data.test_examples,
        data.max_new_tokens,
        data.gen_batch_size,
    )
    reviews = judged.texts
    scores = [score_review(text, ex.violations) for text, ex in zip(reviews, data.test_examples)]
    f1 = [s["f1"] for s in judged.scores]
    chosen, rejected = pair_mean_logps(engine, model, data.test)
    return {
        "counts": snippet_counts(scores, [c > r for c, r in zip(chosen, rejected)], f1),
        "test_logps_chosen": sum(chosen) / len(chosen),
        "test_logps_rejected": sum(rejected) / len(rejected),
        "samples": [
            {"prompt": row["prompt"], "expected": row["chosen"], "generated": text}
            for row, text in list(zip(data.test_rows, reviews))[:3]
        ],
    }


class LogpRecorder(TrainerCallback):
    """Keeps (step, held-out chosen / rejected mean log-prob) at every evaluation while it is attached.

    ``names``: the objective's metrics holding mean log-probs per token (``Objective.mean_logps_metrics``;
    DPO's ``logps/*`` are sums).
    """

    def __init__(self, names: tuple[str, str]) -> None:
        self.chosen_key, self.rejected_key = (f"eval_{n}" for n in names)
        self.points: list[dict[str, float]] = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and self.chosen_key in metrics:
            self.points.append(
                {
                    "step": state.global_step,
                    "logps_chosen": metrics[self.chosen_key],
                    "logps_rejected": metrics[self.rejected_key],
                }
            )


def paired_engine(tok, model, out: Path, spec: BaseSpec):
    """The pair engine of a scoring trainer (test preference accuracy is measured on pairs for every
    method, KTO's too)."""
    from orpo.run.build import new_trainer

    return new_trainer(scoring_config("sft", EVAL_BATCH_SIZE, out, spec), tok, model, None).engine


def train_method(job: DemoJob, progress: bool = False) -> dict[str, Any]:
    """Train one method for one seed from the base; its curve, test counts, time and peak memory."""
    from orpo.run.build import new_trainer

    tok, model = job.base.load()
    train = job.train.for_method(job.method)
    n_pairs = len(job.train.pairs)
    args = orpo_config(
        job.method,
        seed=job.seed,
        epochs=job.budget.epochs,
        params=job.params,
        batch_size=job.budget.batch_size,
        output_dir=job.out / f"{job.label}-seed{job.seed}".replace(" ", "_"),
        eval_steps=eval_steps_of(job.budget, n_pairs),
        engine=job.engine,
        max_length=job.base.spec.max_length,
    )
    data = job.data
    recorder = LogpRecorder(get_objective(job.method).mean_logps_metrics)
    peak_known = reset_peak_rss()
    start = time.perf_counter()
    trainer = new_trainer(
        args, tok, model, train, data.val_for(job.method), [recorder], adapter=job.base.spec.adapter()
    )
    quiet(trainer, progress_bar=progress)
    trainer.evaluate()  # step 0: the base
    trainer.train()
    if recorder.points[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM") if peak_known else None
    trainer.remove_callback(recorder)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trained = trainer.accelerator.unwrap_model(trainer.model)
    unpaired = get_objective(job.method).unpaired  # KTO's engine takes examples; the test pairs need pairs
    engine = paired_engine(tok, trained, args.output_dir, job.base.spec) if unpaired else trainer.engine
    scored = score_model(engine, trained, tok, data)
    return {
        "seed": job.seed,
        "trained_with": {k: getattr(args, k) for k in job.params},  # as the trainer read them
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 2),  # construction (DPO: its reference pass), training, evaluations
        "peak_rss_mb": None if peak is None else round(peak, 1),
        "curve": recorder.points,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        **scored,
    }


def score_base(base: Base, budget: DemoSize, data: DemoData, out: Path) -> tuple[dict[str, Any], str]:
    """The base's test counts and held-out log-probs, and the engine ``engine="auto"`` picked (every
    method then uses that one, so they run the same code)."""
    from orpo.run.build import new_trainer

    tok, model = base.load()
    args = scoring_config("sft", budget.batch_size, out / "base", base.spec)
    trainer = new_trainer(args, tok, model, None)
    quiet(trainer)
    val = trainer.evaluate(eval_dataset=data.val)
    scored = score_model(trainer.engine, model, tok, data)
    scored["val_f1"] = judged_f1(
        model, tok, data.val["prompt_input_ids"], data.val_examples, data.max_new_tokens, data.gen_batch_size
    )
    scored["val_logps_chosen"] = val["eval_logps/chosen"]
    scored["val_logps_rejected"] = val["eval_logps/rejected"]
    return scored, trainer.engine.name


@dataclass(frozen=True)
class DemoJob:
    """One (method, seed) run of the demo; calling it trains and scores that run (in a worker process).

    Attributes:
        method, seed: what to train, with which data order.
        params: the method's values chosen by its study (learning rate and knobs).
        label: the method's row in the table (the method, and the pair source when there are two).
        base: the base every run starts from (loaded from disk by each run).
        budget: the size's budget.
        train: the pair source's training data (the budget curve's is its first ``n`` pairs).
        data: validation and test, tokenised.
        out: the folder the run's trainer writes under.
        engine: the engine every method uses (the one the base's scoring picked).
    """

    method: str
    seed: int
    params: dict
    label: str
    base: Base
    budget: DemoSize
    train: TrainSet
    data: DemoData
    out: Path
    engine: str

    def __call__(self) -> dict[str, Any]:
        """No progress bars: several runs share the terminal."""
        with torch_threads(NUM_THREADS):
            return train_method(self, progress=False)


def run_jobs(jobs: list[DemoJob], progress: bool) -> list[dict[str, Any]]:
    """The runs' results in job order, each run in a fresh process (spawned, so no torch state is
    shared), ``WORKERS`` at a time. Each run's time and peak memory are its own process's."""

    def done(index: int, result: ProcessResult) -> None:
        job = jobs[index]
        if progress and result.ok:
            print(
                f"[demo] {job.label.upper()} seed {job.seed} ({len(job.train.pairs)} pairs): done in "
                f"{result.value['train_seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    results = run_all(jobs, WORKERS, on_done=done)
    for job, result in zip(jobs, results):
        if not result.ok:
            if isinstance(result.error, Exception):
                raise result.error
            raise RuntimeError(f"demo run {job.label} seed {job.seed} failed: {result.cause()}")
    return [result.value for result in results]
