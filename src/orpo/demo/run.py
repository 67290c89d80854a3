"""The offline demo: SFT vs ORPO on the code-review task, from one tiny model, on this CPU.

Reproduces at toy scale (1) the code-review case study reported for ORPO (violation recall,
comment precision, false-negative rate of generated reviews) and (2) the paper's central claim
(Hong, Lee, Thorne 2024, arXiv:2403.07691, Figure 3): SFT on chosen responses raises the
log-probability of rejected responses along with the chosen ones, while ORPO keeps them apart.

Protocol (identical for both methods, only ``method`` differs):
  1. Generate train / validation / test splits (`codereview.make_splits`, no snippet shared).
  2. Train a tokenizer once on the train split's text; build one randomly initialised tiny Llama.
  3. From copies of that one starting model, with the same seed (so the same init, data order
     and schedule), train ``method="sft"`` (NLL on chosen only) and ``method="orpo"`` (NLL plus
     beta times the odds-ratio term) for the same number of steps on the same pairs.
  4. During training, evaluate the validation split at regular steps and record the mean
     per-token log-prob of chosen and rejected responses (``eval_logps/chosen|rejected``).
  5. On the test split: preference accuracy (``eval_rewards/accuracies``: share of pairs with
     logp(chosen) > logp(rejected)), then greedy generation of a review per snippet, scored by
     the rule-based judge (`judge.aggregate`). The untrained model's preference accuracy is the
     baseline row.
Outputs in ``output_dir``: ``results.json`` (every number, the settings and wall time per phase)
and ``logps.png`` (the paper's figure: held-out log-probs over steps, SFT vs ORPO).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Only light imports at module level: `orpo --help` imports every CLI module, and torch plus
# transformers take seconds to import.
from orpo.tasks.codereview.generator import ReviewExample, make_splits, to_rows
from orpo.tasks.codereview.judge import aggregate, score_review

METHODS = ("sft", "orpo")
ARCH = "llama"


# Fixed for every size and both methods (chosen once, not tuned per method).
LEARNING_RATE = 1e-3  # random-init models of ~1M parameters learn at ~1e-3; TRL's 1e-6 is for pretrained ones
BETA = 0.1  # the paper's lambda
WARMUP = 0.05
NLL_ON_PROMPT = True  # the library's default (the paper's code, TRL): the NLL covers prompt + chosen
# bf16 autocast (log-probs and the loss stay float32): measured 0.26 s/step vs 0.30 in float32 here.
BF16 = True
MAX_LENGTH = 256  # prompts are ~85-110 tokens, reviews <= ~30: nothing is truncated
EVAL_BATCH_SIZE = 50  # evaluation metrics are exact means over pairs whatever the batch size
GEN_BATCH_SIZE = 64
GEN_MARGIN_TOKENS = 8  # max_new_tokens = longest training chosen review (EOS included) + this
# One intra-op thread. A model this small runs thousands of tiny ops per step; with 2 threads each
# op waits on an OpenMP barrier, and when another process shares the 2 cores that wait becomes a
# scheduler time slice: measured 2.3-3.2 s/step with 2 threads vs 0.26 s/step with 1 (load ~3.5).
NUM_THREADS = 1


@dataclass(frozen=True)
class DemoSize:
    """The budget of one demo size; both methods get exactly this.

    Attributes:
        n_train, n_val, n_test: pairs per split (validation: the log-prob curves; test: the table).
        epochs: passes over the train split; steps = epochs * ceil(n_train / batch_size).
        batch_size: pairs per optimizer step.
        n_curve_points: validation evaluations during training (plus one before the first step).
        hidden_size, num_layers, num_heads, num_kv_heads: the tiny Llama's shape.
        vocab_size: vocabulary asked of the tokenizer (the small corpus may yield fewer tokens).
    """

    n_train: int
    n_val: int
    n_test: int
    epochs: int
    batch_size: int
    n_curve_points: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.n_train / self.batch_size)


_TINY_LLAMA = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, vocab_size=1024)

SIZES: dict[str, DemoSize] = {
    # For tests: seconds; the numbers mean nothing.
    "quick": DemoSize(
        n_train=48,
        n_val=16,
        n_test=16,
        epochs=1,
        batch_size=8,
        n_curve_points=2,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        vocab_size=1024,
    ),
    # The README's first command, under 5 minutes on a 2-core CPU with either engine (measured
    # 1.5 min packed, 3.6 min reference on a busy machine): the case study's 1,800 pairs, one
    # epoch (225 steps), on the model of `orpo train`'s embedded default.
    "default": DemoSize(
        n_train=1800, n_val=100, n_test=200, epochs=1, batch_size=8, n_curve_points=10, **_TINY_LLAMA
    ),
    # The same model with 3.3x the pairs, two epochs (1,500 steps): ~7-10 minutes.
    "large": DemoSize(
        n_train=6000, n_val=100, n_test=200, epochs=2, batch_size=8, n_curve_points=15, **_TINY_LLAMA
    ),
}


@dataclass
class DemoResult:
    """What `run_demo` wrote: the paths and the results.json content."""

    output_dir: Path
    results_path: Path
    figure_path: Path
    results: dict[str, Any]


def _logp_recorder():
    """A TrainerCallback whose ``points`` list gets (step, held-out chosen / rejected mean log-prob)
    at every evaluation while it is attached."""
    from transformers import TrainerCallback

    class LogpRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.points: list[dict[str, float]] = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_logps/chosen" in metrics:
                self.points.append(
                    {
                        "step": state.global_step,
                        "logps_chosen": metrics["eval_logps/chosen"],
                        "logps_rejected": metrics["eval_logps/rejected"],
                    }
                )

    return LogpRecorder()


class _Clock:
    """Wall time per named phase, in seconds."""

    def __init__(self, progress: bool) -> None:
        self.times: dict[str, float] = {}
        self.progress = progress
        self._start = time.perf_counter()

    def phase(self, name: str, message: str) -> _Phase:
        if self.progress:
            print(f"[demo] {message}", file=sys.stderr, flush=True)
        return _Phase(self, name)

    def total(self) -> float:
        return time.perf_counter() - self._start


class _Phase:
    def __init__(self, clock: _Clock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.clock.times[self.name] = round(time.perf_counter() - self.start, 2)


def _config(
    method: str, size: DemoSize, seed: int, output_dir: Path, eval_steps: int | None, engine: str = "auto"
):
    """The run's ORPOConfig; identical for both methods except ``method``. No periodic eval if eval_steps is None."""
    from orpo.config import ORPOConfig

    return ORPOConfig(
        output_dir=str(output_dir / method),
        method=method,
        beta=BETA,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine",
        warmup_steps=WARMUP,
        num_train_epochs=size.epochs,
        per_device_train_batch_size=size.batch_size,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        nll_on_prompt=NLL_ON_PROMPT,
        tokenization="orpo",  # the CLI's tokenisation (chat template on string prompts, BOS as the tokenizer adds it)
        engine=engine,
        max_length=MAX_LENGTH,
        bf16=BF16,
        gradient_checkpointing=False,
        eval_strategy="no" if eval_steps is None else "steps",
        eval_steps=eval_steps,
        logging_steps=eval_steps or 10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
    )


def _quiet_trainer(trainer, progress: bool) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from orpo.callbacks import ProgressBarCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(ProgressBarCallback())


def generate_reviews(
    model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, bf16: bool
) -> list[str]:
    """Greedy reviews for tokenised prompts through the one generator (`orpo.evaluation.generate`).

    Each review is decoded up to and including its first stop token, special tokens kept (the judge
    cuts the review at the EOS marker; a review without one ran out of ``max_new_tokens``).
    """
    import torch

    from orpo.evaluation.generate import GenerationSettings, generate_ids

    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=GEN_BATCH_SIZE)
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        results = generate_ids(model, tokenizer, prompt_ids, settings)
    return [tokenizer.decode(samples[0][0], skip_special_tokens=False) for samples in results]


def _score(reviews: list[str], examples: list[ReviewExample]) -> dict[str, float]:
    return aggregate([score_review(text, ex.violations) for text, ex in zip(reviews, examples)])


def _eval_steps(size: DemoSize) -> int:
    """Steps between two points of the held-out log-prob curve."""
    return max(1, size.steps // size.n_curve_points)


def _train_method(
    method: str,
    size: DemoSize,
    seed: int,
    output_dir: Path,
    initial_model,
    tok,
    data: _DemoData,
    engine: str,
    clock: _Clock,
    progress: bool,
) -> dict[str, Any]:
    """Train one method from a copy of the starting model; return its curve and test metrics."""
    from orpo.trainer import ORPOTrainer

    args = _config(method, size, seed, output_dir, _eval_steps(size), engine)
    recorder = _logp_recorder()
    model = copy.deepcopy(initial_model)
    trainer = ORPOTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.val,
        processing_class=tok,
        callbacks=[recorder],
    )
    _quiet_trainer(trainer, progress)
    with clock.phase(
        f"{method}_train", f"training {method.upper()}: {size.steps} steps of {size.batch_size} pairs"
    ):
        trainer.evaluate()  # step 0: the starting model
        trainer.train()
        if recorder.points[-1]["step"] != trainer.state.global_step:
            trainer.evaluate()
    trainer.remove_callback(recorder)  # test-split evaluations below are not part of the curve
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    with clock.phase(f"{method}_test", f"scoring {method.upper()} on {size.n_test} test snippets"):
        test = trainer.evaluate(eval_dataset=data.test)
        reviews = generate_reviews(
            trainer.accelerator.unwrap_model(trainer.model),
            tok,
            data.test["prompt_input_ids"],
            data.max_new_tokens,
            bool(args.bf16),
        )
    judged = _score(reviews, data.test_examples)
    return {
        "test": {
            **judged,
            "preference_accuracy": test["eval_rewards/accuracies"],
            "logps_chosen": test["eval_logps/chosen"],
            "logps_rejected": test["eval_logps/rejected"],
            "nll_loss": test["eval_nll_loss"],
        },
        "curve": recorder.points,
        "steps": trainer.state.global_step,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "samples": [
            {"prompt": row["prompt"], "expected": row["chosen"], "generated": text}
            for row, text in list(zip(data.test_rows, reviews))[:3]
        ],
    }


def _baseline(
    initial_model, tok, data: _DemoData, seed: int, size: DemoSize, output_dir: Path
) -> tuple[dict[str, float], str]:
    """Preference accuracy and log-probs of the untrained starting model on the test split, and the
    engine ``engine="auto"`` picked (both methods then use that one, so they run the same code)."""
    from orpo.trainer import ORPOTrainer

    args = _config("orpo", size, seed, output_dir, eval_steps=None)
    trainer = ORPOTrainer(model=copy.deepcopy(initial_model), args=args, processing_class=tok)
    _quiet_trainer(trainer, progress=False)
    metrics = trainer.evaluate(eval_dataset=data.test)
    return {
        "preference_accuracy": metrics["eval_rewards/accuracies"],
        "logps_chosen": metrics["eval_logps/chosen"],
        "logps_rejected": metrics["eval_logps/rejected"],
        "nll_loss": metrics["eval_nll_loss"],
    }, trainer.engine.name


@dataclass
class _DemoData:
    """The three splits tokenised once, so both methods train and are scored on identical token ids.

    Attributes:
        train, val, test: `datasets.Dataset`s with the engine's token columns, one row per pair.
        test_rows: the test split's raw rows (prompt / chosen / rejected), aligned with `test`.
        test_examples: the test split's snippets with their true violations, aligned with `test`.
        max_new_tokens: generation budget: the longest training chosen review + GEN_MARGIN_TOKENS.
    """

    train: Any
    val: Any
    test: Any
    test_rows: list[dict[str, str]]
    test_examples: list[ReviewExample]
    max_new_tokens: int


def _prepare_data(splits: dict[str, list[ReviewExample]], tok, config) -> _DemoData:
    from orpo.data.pipeline import prepare_dataset

    tokenised = {}
    for name, examples in splits.items():
        rows = to_rows(examples)
        tokenised[name], report = prepare_dataset(rows, tok, config, source_name=name)
        # Rows must stay aligned with their snippets (the judge needs each test row's violations).
        if report.kept != len(rows):
            raise ValueError(f"demo {name} split: {report.summary()}; the demo expects every row kept")
    longest = max(len(ids) for ids in tokenised["train"]["chosen_input_ids"])
    return _DemoData(
        **tokenised,
        test_rows=to_rows(splits["test"]),
        test_examples=splits["test"],
        max_new_tokens=longest + GEN_MARGIN_TOKENS,
    )


def plot_logps(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    """The paper's figure: held-out mean log-prob of chosen and rejected over steps.

    One panel per method with both curves, and a last panel with the gap chosen - rejected of every
    method (the curves start near -6.5 and end near -0.5, so a gap of 0.1 is invisible on their scale).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves) + 1, figsize=(4.6 * (len(curves) + 1), 3.8))
    for ax, (method, points) in zip(axes, curves.items()):
        steps = [p["step"] for p in points]
        ax.plot(steps, [p["logps_chosen"] for p in points], "o-", color="tab:blue", label="chosen")
        ax.plot(steps, [p["logps_rejected"] for p in points], "s--", color="tab:red", label="rejected")
        ax.set_title(f"{method.upper()}: held-out log-probs")
        ax.set_ylabel("mean log-prob per response token")
    gap_ax = axes[-1]
    for method, points in curves.items():
        gap = [p["logps_chosen"] - p["logps_rejected"] for p in points]
        gap_ax.plot([p["step"] for p in points], gap, "o-", label=method.upper())
    gap_ax.axhline(0.0, color="grey", linewidth=0.8)
    gap_ax.set_title("gap: chosen - rejected")
    gap_ax.set_ylabel("log-prob difference per token")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run the block with `n` torch intra-op threads, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_demo(
    size: str = "default", seed: int = 0, output_dir: str | Path = "runs/demo", progress: bool = True
) -> DemoResult:
    """Train SFT and ORPO on the code-review task and write results.json and logps.png.

    See the module docstring for the protocol and `SIZES` for the budgets.
    """
    if size not in SIZES:
        raise ValueError(f"demo size {size!r} is not one of {', '.join(SIZES)}")
    with _torch_threads(NUM_THREADS):
        return _run(SIZES[size], size, seed, Path(output_dir), progress)


def _run(budget: DemoSize, size: str, seed: int, out: Path, progress: bool) -> DemoResult:
    from orpo.build import TINY_PREFIX, build_tokenizer_and_model, corpus_of
    from orpo.recipe import ModelSection

    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock(progress)

    with clock.phase("setup", "generating the splits, training the tokenizer, building the model"):
        splits = make_splits(budget.n_train, budget.n_val, budget.n_test, seed)
        spec = ModelSection(
            name=TINY_PREFIX + ARCH,
            tiny={
                "vocab_size": budget.vocab_size,
                "hidden_size": budget.hidden_size,
                "num_layers": budget.num_layers,
                "num_heads": budget.num_heads,
                "num_kv_heads": budget.num_kv_heads,
                "seed": seed,
            },
        )
        tok, initial_model = build_tokenizer_and_model(spec, None, corpus_of(to_rows(splits["train"])))
        data = _prepare_data(splits, tok, _config("orpo", budget, seed, out, eval_steps=None))
    with clock.phase("baseline", "scoring the untrained starting model"):
        baseline, engine = _baseline(initial_model, tok, data, seed, budget, out)
    runs = {
        method: _train_method(method, budget, seed, out, initial_model, tok, data, engine, clock, progress)
        for method in METHODS
    }

    figure_path = out / "logps.png"
    plot_logps(
        {m: r["curve"] for m, r in runs.items()},
        figure_path,
        f"Held-out log-probs during training (code review, {budget.n_train} pairs, seed {seed})",
    )
    results: dict[str, Any] = {
        "settings": {
            "size": size,
            "seed": seed,
            "n_train": budget.n_train,
            "n_val": budget.n_val,
            "n_test": budget.n_test,
            "epochs": budget.epochs,
            "batch_size": budget.batch_size,
            "steps": budget.steps,
            "eval_every_steps": _eval_steps(budget),
            "learning_rate": LEARNING_RATE,
            "lr_scheduler": "cosine",
            "warmup": WARMUP,
            "beta": BETA,
            "nll_on_prompt": NLL_ON_PROMPT,
            "bf16": BF16,
            "max_length": MAX_LENGTH,
            "max_new_tokens": data.max_new_tokens,
            "torch_threads": NUM_THREADS,
            "engine": engine,
            "model": {
                "arch": ARCH,
                "hidden_size": budget.hidden_size,
                "num_layers": budget.num_layers,
                "num_heads": budget.num_heads,
                "num_kv_heads": budget.num_kv_heads,
                "vocab_size": len(tok),
                "parameters": sum(p.numel() for p in initial_model.parameters()),
            },
        },
        "baseline": baseline,
        "methods": runs,
        "wall_time_s": {**clock.times, "total": round(clock.total(), 2)},
    }
    results_path = out / "results.json"
    results_path.write_text(json.dumps(results, indent=2))
    return DemoResult(out, results_path, figure_path, results)
