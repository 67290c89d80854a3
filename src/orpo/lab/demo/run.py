"""The offline demo, run as the case study was: from an imperfect base reviewer, SFT vs ORPO vs DPO vs
SimPO on the same pairs, several seeds, 95% intervals.

The reported case study starts from a model that already reviews code, imperfectly (recall 0.67,
precision 0.71), and fine-tunes it on 1,800 pairs whose rejected reviews show its failure modes. Here,
at toy scale on this CPU:

  1. Splits: train / validation / test pairs (`tasks.codereview.generator.make_splits`, no snippet
     shared). Rejected reviews are one realistic failure each: a missed most-severe violation, a false
     comment, approving code that has violations, or flagging clean code.
  2. Base stage: a tiny Llama (tokenizer trained on the demo's text) is trained with SFT on a noisy
     review corpus (`noisy_reviews`: each violation missed with P_MISS = 0.33, one false comment with
     P_FALSE = 0.35; other snippets than the splits'). It is saved under the cache
     (``$ORPO_CACHE_DIR/demo_base/<hash of its settings>``) and reused while its settings are the same.
     Its judged metrics are the table's first row.
  3. Comparison: from that base, for each seed, each method trains on the same 1,800 pairs with the
     same steps, batch, learning rate and schedule; only ``method`` (and its documented beta) differs:
     ``sft`` (NLL on chosen), ``orpo`` (NLL + beta * odds ratio), ``dpo`` (reference = the base, its
     log-probs precomputed in one pass so training holds one model), ``simpo``. The seed sets data
     order; the base and the pairs are the same for every seed.
  4. Scoring on the test split: greedy reviews (`orpo.evaluation.generate`) judged by the rules
     (`tasks.codereview.judge`); preference accuracy = share of pairs whose chosen review has the
     higher mean log-prob per token (the same definition for every method). Values with 95%
     intervals over seeds and snippets (`demo.table`). Training time and peak resident memory per
     method (the process's high-water mark, reset before each run).
Outputs in ``output_dir``: ``results.json`` (every number, interval and setting) and ``logps.png``
(held-out log-probs of chosen and rejected over training, mean over seeds with the min-max band).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Only light imports at module level: `orpo --help` imports every CLI module, and torch plus
# transformers take seconds to import.
from orpo.lab.demo.table import snippet_counts, summarise
from orpo.run.callbacks import quiet
from orpo.tasks.codereview.generator import (
    P_FALSE,
    P_MISS,
    ReviewExample,
    make_splits,
    noisy_reviews,
    noisy_rows,
    to_rows,
)
from orpo.tasks.codereview.judge import score_review

METHODS = ("sft", "orpo", "dpo", "simpo")
ARCH = "llama"

# Fixed before any result was seen, the same for every size and method (not tuned per method).
BASE_LEARNING_RATE = 1e-3  # random-init models of ~1M parameters learn at ~1e-3
LEARNING_RATE = 1e-3  # the comparison continues at the base's own rate (few steps: 57 at the default size)
# `beta` means a different thing per method (ORPO: weight of the odds-ratio term, the paper's lambda;
# DPO and SimPO: the temperature of the reward). Each is its paper's usual value; SFT ignores it.
BETAS = {"sft": 0.1, "orpo": 0.1, "dpo": 0.1, "simpo": 2.0}
SIMPO_GAMMA = 0.5  # SimPO's target margin (ORPOConfig's default)
WARMUP = 0.05
NLL_ON_PROMPT = True  # the library's default (the paper's code, TRL): the NLL covers prompt + chosen
# bf16 autocast (log-probs and the loss stay float32): measured 0.26 s/step vs 0.30 in float32 here.
BF16 = True
MAX_LENGTH = 256  # prompts are ~85-110 tokens, reviews <= ~30: nothing is truncated
EVAL_BATCH_SIZE = 50  # evaluation metrics are exact means over pairs whatever the batch size
GEN_BATCH_SIZE = 64
GEN_MARGIN_TOKENS = 8  # max_new_tokens = longest training chosen review (EOS included) + this
BOOTSTRAP_SEED = 0
BASE_SEED_OFFSET = 10_000  # the noisy corpus's stream is not the splits' stream
BASE_VERSION = 1  # bump when the base stage's code changes what it computes (invalidates caches)
# One intra-op thread. A model this small runs thousands of tiny ops per step; with 2 threads each
# op waits on an OpenMP barrier, and when another process shares the 2 cores that wait becomes a
# scheduler time slice: measured 2.3-3.2 s/step with 2 threads vs 0.26 s/step with 1 (load ~3.5).
NUM_THREADS = 1
# Runs of the comparison go to this many worker processes at once: one per core of a 2-core CPU,
# each with NUM_THREADS thread. The runs are independent (each loads the base from disk).
WORKERS = 2
# The base stage is one process with the machine to itself: it uses the workers' cores. Measured on
# this 2-core CPU, idle: 0.39 s/step with 2 threads vs 0.60 with 1. Part of the base's settings
# (the thread count can change float summation order, hence the weights).
BASE_THREADS = 2


@dataclass(frozen=True)
class DemoSize:
    """The budget of one demo size; every method gets exactly this.

    Attributes:
        n_train, n_val, n_test: pairs per split (validation: the log-prob curves; test: the table).
        n_base: noisy reviews the base is trained on (`base_epochs` passes).
        epochs: passes over the train split in the comparison; steps = epochs * ceil(n_train / batch_size).
        batch_size: pairs (or base reviews) per optimizer step.
        n_seeds: comparison seeds by default (0 .. n_seeds - 1).
        n_curve_points: validation evaluations during training (plus one before the first step).
        hidden_size, num_layers, num_heads, num_kv_heads: the tiny Llama's shape.
        vocab_size: vocabulary asked of the tokenizer (the small corpus may yield fewer tokens).
    """

    n_train: int
    n_val: int
    n_test: int
    n_base: int
    base_epochs: int
    epochs: int
    batch_size: int
    n_seeds: int
    n_curve_points: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.n_train / self.batch_size)

    @property
    def base_steps(self) -> int:
        return self.base_epochs * math.ceil(self.n_base / self.batch_size)


_TINY_LLAMA = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, vocab_size=1024)

SIZES: dict[str, DemoSize] = {
    # For tests: seconds; the numbers mean nothing.
    "quick": DemoSize(
        n_train=48,
        n_val=16,
        n_test=16,
        n_base=48,
        base_epochs=1,
        epochs=1,
        batch_size=8,
        n_seeds=2,
        n_curve_points=2,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        vocab_size=1024,
    ),
    # `orpo demo`: the case study's 1,800 pairs, one epoch per method and seed (57 steps of 32 pairs:
    # on this CPU a step's cost is mostly fixed overhead, so 32 pairs cost ~2x 8 pairs), from a base
    # trained on 3,600 noisy reviews x 4 epochs (452 steps, cached); 3 seeds x 4 methods.
    # Base epochs: 1 gave a base that had learnt the format only (recall 0.12, precision 0.10 on the
    # test snippets); 4 gives recall 0.69 / precision 0.62, near the case study's base (0.67 / 0.71).
    # Chosen on the base's own metrics, before any comparison was run from it.
    "default": DemoSize(
        n_train=1800,
        n_val=100,
        n_test=200,
        n_base=3600,
        base_epochs=4,
        epochs=1,
        batch_size=32,
        n_seeds=3,
        n_curve_points=5,
        **_TINY_LLAMA,
    ),
}


@dataclass
class DemoResult:
    """What `run_demo` wrote: the paths and the results.json content."""

    output_dir: Path
    results_path: Path
    figure_path: Path
    results: dict[str, Any]


def _config(
    method: str,
    seed: int,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    output_dir: Path,
    eval_steps: int | None,
    engine: str = "auto",
):
    """One run's ORPOConfig; identical for every method except ``method`` and its beta. No periodic
    evaluation if ``eval_steps`` is None."""
    from orpo.config import ORPOConfig

    return ORPOConfig(
        output_dir=str(output_dir),
        method=method,
        beta=BETAS[method],
        simpo_gamma=SIMPO_GAMMA,
        precompute_ref_log_probs=True,  # DPO: one model in memory (ignored by the other methods)
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=WARMUP,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
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


def _logp_recorder(names: tuple[str, str]):
    """A TrainerCallback whose ``points`` list gets (step, held-out chosen / rejected mean log-prob)
    at every evaluation while it is attached. ``names``: the objective's metrics holding mean
    log-probs per token (``Objective.mean_logps_metrics``; DPO's ``logps/*`` are sums)."""
    from transformers import TrainerCallback

    chosen_key, rejected_key = (f"eval_{n}" for n in names)

    class LogpRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.points: list[dict[str, float]] = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and chosen_key in metrics:
                self.points.append(
                    {
                        "step": state.global_step,
                        "logps_chosen": metrics[chosen_key],
                        "logps_rejected": metrics[rejected_key],
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


# ---------------------------------------------------------------- the base stage


def cache_root() -> Path:
    """``$ORPO_CACHE_DIR/demo_base`` (default ``~/.cache/orpo/demo_base``), beside the reference cache."""
    from orpo.refpass import cache_dir

    return cache_dir().parent / "demo_base"


def base_settings(budget: DemoSize, seed: int, p_miss: float = P_MISS, p_false: float = P_FALSE) -> dict:
    """Everything the base stage's weights depend on (its cache key is their hash)."""
    return {
        "version": BASE_VERSION,
        "seed": seed,
        "p_miss": p_miss,
        "p_false": p_false,
        "n_base": budget.n_base,
        "base_epochs": budget.base_epochs,
        "batch_size": budget.batch_size,
        "learning_rate": BASE_LEARNING_RATE,
        "warmup": WARMUP,
        "bf16": BF16,
        "max_length": MAX_LENGTH,
        "threads": BASE_THREADS,
        # The tokenizer's corpus and the snippets kept out of the noisy corpus come from the splits.
        "splits": [budget.n_train, budget.n_val, budget.n_test],
        "model": {
            "arch": ARCH,
            "hidden_size": budget.hidden_size,
            "num_layers": budget.num_layers,
            "num_heads": budget.num_heads,
            "num_kv_heads": budget.num_kv_heads,
            "vocab_size": budget.vocab_size,
        },
    }


@dataclass(frozen=True)
class Base:
    """A trained base model on disk.

    Attributes:
        path: the folder with the model, the tokenizer and ``base.json``.
        key: hash of `settings` (the folder's name).
        settings: `base_settings`.
        cached: True when an earlier run had trained it.
        corpus: the noisy corpus as counted (reviews, violations, missed, false comments, rates).
        seconds: training time when it was trained.
    """

    path: Path
    key: str
    settings: dict
    cached: bool
    corpus: dict
    seconds: float

    def load(self):
        """(tokenizer, model) as saved: every run starts from these same bytes."""
        from orpo.modeling import load_model, load_tokenizer

        return load_tokenizer(str(self.path)), load_model(str(self.path), {"dtype": "float32"})


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def train_base(
    budget: DemoSize,
    seed: int,
    splits: dict[str, list[ReviewExample]],
    root: Path | None = None,
    p_miss: float = P_MISS,
    p_false: float = P_FALSE,
    progress: bool = False,
) -> Base:
    """The base stage: SFT of a fresh tiny Llama on `budget.n_base` noisy reviews, or the cached one."""
    settings = base_settings(budget, seed, p_miss, p_false)
    key = settings_key(settings)
    path = (root or cache_root()) / key
    marker = path / "base.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        return Base(path, key, settings, True, saved["corpus"], saved["seconds"])

    from orpo.run.build import TINY_PREFIX, build_tokenizer_and_model, corpus_of, new_trainer
    from orpo.run.recipe import ModelSection

    start = time.perf_counter()
    exclude = frozenset(e.snippet for examples in splits.values() for e in examples)
    reviews = noisy_reviews(budget.n_base, seed + BASE_SEED_OFFSET, p_miss, p_false, exclude)
    rows = noisy_rows(reviews)
    n_violations = sum(len(r.violations) for r in reviews)
    corpus = {
        "reviews": len(reviews),
        "violations": n_violations,
        "missed": sum(r.missed for r in reviews),
        "false_comments": sum(r.false_comments for r in reviews),
        "miss_rate": sum(r.missed for r in reviews) / max(n_violations, 1),
        "false_comment_rate": sum(r.false_comments for r in reviews) / max(len(reviews), 1),
    }
    m = settings["model"]
    spec = ModelSection(
        name=TINY_PREFIX + ARCH,
        tiny={k: m[k] for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads")}
        | {"seed": seed},
    )
    tok, model = build_tokenizer_and_model(
        spec, None, corpus_of(rows + to_rows(splits["train"]), limit=10**6)
    )
    staging = path.with_name(f"{key}.tmp{int(time.time() * 1e6)}")
    args = _config(
        "sft",
        seed,
        budget.base_epochs,
        BASE_LEARNING_RATE,
        budget.batch_size,
        staging / "run",
        eval_steps=None,
    )
    trainer = new_trainer(args, tok, model, rows)
    quiet(trainer, progress)
    with _torch_threads(BASE_THREADS):
        trainer.train()
    seconds = round(time.perf_counter() - start, 2)
    trainer.accelerator.unwrap_model(trainer.model).save_pretrained(staging)
    tok.save_pretrained(staging)
    shutil.rmtree(staging / "run", ignore_errors=True)
    (staging / "base.json").write_text(
        json.dumps({"settings": settings, "corpus": corpus, "seconds": seconds})
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # another run finished the same base meanwhile: keep theirs
        shutil.rmtree(staging)
    else:
        staging.replace(path)
    return Base(path, key, settings, False, corpus, seconds)


# ---------------------------------------------------------------- scoring


@dataclass
class _DemoData:
    """The three splits tokenised once, so every method trains and is scored on identical token ids.

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


def _score_model(engine, model, tok, data: _DemoData) -> dict[str, Any]:
    """Per test snippet counts (`table.snippet_counts`), the mean test log-probs, and three samples."""
    reviews = generate_reviews(model, tok, data.test["prompt_input_ids"], data.max_new_tokens, BF16)
    scores = [score_review(text, ex.violations) for text, ex in zip(reviews, data.test_examples)]
    chosen, rejected = pair_mean_logps(engine, model, data.test)
    return {
        "counts": snippet_counts(scores, [c > r for c, r in zip(chosen, rejected)]),
        "test_logps_chosen": sum(chosen) / len(chosen),
        "test_logps_rejected": sum(rejected) / len(rejected),
        "samples": [
            {"prompt": row["prompt"], "expected": row["chosen"], "generated": text}
            for row, text in list(zip(data.test_rows, reviews))[:3]
        ],
    }


def _eval_steps(size: DemoSize) -> int:
    """Steps between two points of the held-out log-prob curve."""
    return max(1, size.steps // size.n_curve_points)


def _train_method(
    method: str,
    seed: int,
    base: Base,
    budget: DemoSize,
    data: _DemoData,
    out: Path,
    engine: str,
    progress: bool,
) -> dict[str, Any]:
    """Train one method for one seed from the base; its curve, test counts, time and peak memory."""
    from orpo.lab.harness import reset_peak_rss, status_mb
    from orpo.losses import get_objective
    from orpo.run.build import new_trainer

    tok, model = base.load()
    args = _config(
        method,
        seed,
        budget.epochs,
        LEARNING_RATE,
        budget.batch_size,
        out / f"{method}-seed{seed}",
        _eval_steps(budget),
        engine,
    )
    recorder = _logp_recorder(get_objective(method).mean_logps_metrics)
    peak_known = reset_peak_rss()
    start = time.perf_counter()
    trainer = new_trainer(args, tok, model, data.train, data.val, [recorder])
    quiet(trainer, progress)
    trainer.evaluate()  # step 0: the base
    trainer.train()
    if recorder.points[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM") if peak_known else None
    trainer.remove_callback(recorder)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    scored = _score_model(trainer.engine, trainer.accelerator.unwrap_model(trainer.model), tok, data)
    return {
        "seed": seed,
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 2),  # construction (DPO: its reference pass), training, evaluations
        "peak_rss_mb": None if peak is None else round(peak, 1),
        "curve": recorder.points,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        **scored,
    }


def _score_base(base: Base, budget: DemoSize, data: _DemoData, out: Path) -> tuple[dict[str, Any], str]:
    """The base's test counts and held-out log-probs, and the engine ``engine="auto"`` picked (every
    method then uses that one, so they run the same code)."""
    from orpo.run.build import new_trainer

    tok, model = base.load()
    args = _config("sft", 0, 1, LEARNING_RATE, budget.batch_size, out / "base", eval_steps=None)
    trainer = new_trainer(args, tok, model, None)
    quiet(trainer, progress=False)
    val = trainer.evaluate(eval_dataset=data.val)
    scored = _score_model(trainer.engine, model, tok, data)
    scored["val_logps_chosen"] = val["eval_logps/chosen"]
    scored["val_logps_rejected"] = val["eval_logps/rejected"]
    return scored, trainer.engine.name


# ---------------------------------------------------------------- the figure


def plot_logps(curves: dict[str, list[list[dict[str, float]]]], path: Path, title: str) -> None:
    """Held-out mean log-prob of chosen and rejected over steps, per method: mean over seeds (line) and
    min-max over seeds (band); a last panel with every method's gap chosen - rejected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(curves) + 1, figsize=(3.9 * (len(curves) + 1), 3.6))
    gap_ax = axes[-1]
    for ax, (method, runs) in zip(axes, curves.items()):
        steps = [p["step"] for p in runs[0]]
        n = min(len(r) for r in runs)
        steps = steps[:n]
        series = {
            key: np.array([[p[key] for p in r[:n]] for r in runs])  # (seeds, points)
            for key in ("logps_chosen", "logps_rejected")
        }
        for key, color, style, label in (
            ("logps_chosen", "tab:blue", "o-", "chosen"),
            ("logps_rejected", "tab:red", "s--", "rejected"),
        ):
            values = series[key]
            ax.plot(steps, values.mean(axis=0), style, color=color, label=label, markersize=3)
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2)
        ax.set_title(f"{method.upper()}")
        ax.set_ylabel("mean log-prob per response token")
        gap = series["logps_chosen"] - series["logps_rejected"]
        line = gap_ax.plot(steps, gap.mean(axis=0), "o-", label=method.upper(), markersize=3)[0]
        gap_ax.fill_between(steps, gap.min(axis=0), gap.max(axis=0), color=line.get_color(), alpha=0.2)
    gap_ax.axhline(0.0, color="grey", linewidth=0.8)
    gap_ax.set_title("gap: chosen - rejected")
    gap_ax.set_ylabel("log-prob difference per token")
    for ax in axes:
        ax.set_xlabel("training step (from the base)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------- the run


def _job(job: tuple) -> dict[str, Any]:
    """One (method, seed) run in a worker process (no progress bars: they would interleave)."""
    method, seed, base, budget, data, out, engine = job
    with _torch_threads(NUM_THREADS):
        return _train_method(method, seed, base, budget, data, out, engine, progress=False)


def _run_jobs(jobs: list[tuple], progress: bool) -> list[dict[str, Any]]:
    """The runs' results in job order, computed by `WORKERS` processes (a fresh interpreter each:
    spawn, so no torch state is shared). Each run's time and peak memory are its own process's."""
    if WORKERS <= 1 or len(jobs) <= 1:
        return [_job(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        for job, result in zip(jobs, pool.map(_job, jobs)):
            results.append(result)
            if progress:
                print(
                    f"[demo] {job[0].upper()} seed {job[1]} ({len(job[4].train)} pairs): done in "
                    f"{result['train_seconds']:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,4,7"`` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give a count (3) or a comma-separated list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: need at least one seed, all distinct and >= 0")
    return seeds


def run_demo(
    size: str = "default",
    seeds: list[int] | None = None,
    output_dir: str | Path = "runs/demo",
    progress: bool = True,
    base_seed: int = 0,
    cache: Path | None = None,
) -> DemoResult:
    """Train the base (or reuse it), then every method for every seed; write results.json and logps.png.

    See the module docstring for the protocol and `SIZES` for the budgets. ``seeds`` defaults to
    ``0 .. n_seeds - 1`` of the size; ``base_seed`` seeds the splits, the noisy corpus and the base.
    """
    if size not in SIZES:
        raise ValueError(f"demo size {size!r} is not one of {', '.join(SIZES)}")
    budget = SIZES[size]
    seeds = list(range(budget.n_seeds)) if seeds is None else seeds
    with _torch_threads(NUM_THREADS):
        return _run(budget, size, seeds, base_seed, Path(output_dir), cache, progress)


def _run(
    budget: DemoSize,
    size: str,
    seeds: list[int],
    base_seed: int,
    out: Path,
    cache: Path | None,
    progress: bool,
) -> DemoResult:
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock(progress)
    splits = make_splits(budget.n_train, budget.n_val, budget.n_test, base_seed)
    with clock.phase(
        "base", f"base stage: SFT on {budget.n_base} noisy reviews x {budget.base_epochs} epochs"
    ):
        base = train_base(budget, base_seed, splits, cache, progress=progress)
    if progress:
        print(f"[demo] base {'reused from' if base.cached else 'saved to'} {base.path}", file=sys.stderr)
    tok, _ = base.load()
    with clock.phase("setup", "tokenising the splits"):
        data = _prepare_data(splits, tok, _config("orpo", 0, 1, LEARNING_RATE, budget.batch_size, out, None))
    with clock.phase("base_score", f"scoring the base on {budget.n_test} test snippets"):
        base_scored, engine = _score_base(base, budget, data, out)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    jobs = [(method, seed, base, budget, data, out, engine) for seed in seeds for method in METHODS]
    with clock.phase(
        "comparison",
        f"{len(jobs)} runs ({len(METHODS)} methods x {len(seeds)} seeds) of {budget.steps} steps",
    ):
        for job, result in zip(jobs, _run_jobs(jobs, progress)):
            runs[job[0]].append(result)

    figure_path = out / "logps.png"
    plot_logps(
        {m: [r["curve"] for r in rs] for m, rs in runs.items()},
        figure_path,
        f"Held-out log-probs from the base ({budget.n_train} pairs, seeds {', '.join(map(str, seeds))})",
    )

    def summary(method_runs: list[dict]) -> dict[str, Any]:
        return {
            "metrics": summarise([r["counts"] for r in method_runs], BOOTSTRAP_SEED),
            "train_seconds_mean": round(sum(r["train_seconds"] for r in method_runs) / len(method_runs), 2),
            "peak_rss_mb_max": max((r["peak_rss_mb"] or 0.0) for r in method_runs) or None,
            "test_logps_chosen": sum(r["test_logps_chosen"] for r in method_runs) / len(method_runs),
            "test_logps_rejected": sum(r["test_logps_rejected"] for r in method_runs) / len(method_runs),
        }

    results: dict[str, Any] = {
        "settings": {
            "size": size,
            "seeds": seeds,
            "base_seed": base_seed,
            **{k: v for k, v in asdict(budget).items() if k not in _TINY_LLAMA},
            "steps": budget.steps,
            "base_steps": budget.base_steps,
            "eval_every_steps": _eval_steps(budget),
            "learning_rate": LEARNING_RATE,
            "base_learning_rate": BASE_LEARNING_RATE,
            "lr_scheduler": "cosine",
            "warmup": WARMUP,
            "betas": BETAS,
            "simpo_gamma": SIMPO_GAMMA,
            "dpo_reference": "the base, log-probs precomputed",
            "p_miss": P_MISS,
            "p_false": P_FALSE,
            "nll_on_prompt": NLL_ON_PROMPT,
            "bf16": BF16,
            "max_length": MAX_LENGTH,
            "max_new_tokens": data.max_new_tokens,
            "torch_threads": NUM_THREADS,
            "engine": engine,
            "bootstrap": {"resamples": 1000, "level": 0.95, "over": ["seeds", "test snippets"]},
            "model": {
                "arch": ARCH,
                **{k: v for k, v in asdict(budget).items() if k in _TINY_LLAMA},
                "tokenizer_vocab": len(tok),
                "parameters": sum(p.numel() for p in base.load()[1].parameters()),
            },
        },
        "base": {
            "path": str(base.path),
            "key": base.key,
            "cached": base.cached,
            "train_seconds": base.seconds,
            "corpus": base.corpus,
            "metrics": summarise([base_scored["counts"]], BOOTSTRAP_SEED),
            **{k: v for k, v in base_scored.items() if k != "counts"},
            "counts": base_scored["counts"],
        },
        "methods": {m: {**summary(rs), "runs": rs} for m, rs in runs.items()},
        "wall_time_s": {**clock.times, "total": round(clock.total(), 2)},
    }
    results_path = out / "results.json"
    results_path.write_text(json.dumps(results, indent=1))
    return DemoResult(out, results_path, figure_path, results)


# ---------------------------------------------------------------- the budget curve

BUDGET_PAIRS = (200, 600, 1800)
BUDGET_METHODS = ("sft", "orpo")


def run_budget_curve(
    size: str = "default",
    seeds: list[int] | None = None,
    output_dir: str | Path = "runs/demo",
    progress: bool = True,
    base_seed: int = 0,
    pairs: tuple[int, ...] = BUDGET_PAIRS,
    cache: Path | None = None,
) -> DemoResult:
    """Judged recall and precision against training pairs for SFT and ORPO, from the same base.

    For each ``n`` in ``pairs`` (the first ``n`` pairs of the train split), each method and seed
    trains one epoch of ``n`` pairs with the size's other settings, and is scored on the test split.
    Writes ``budget.json`` (values and 95% intervals per method and n) and ``budget.png``.
    """
    if size not in SIZES:
        raise ValueError(f"demo size {size!r} is not one of {', '.join(SIZES)}")
    budget = SIZES[size]
    seeds = list(range(budget.n_seeds)) if seeds is None else seeds
    bad = [n for n in pairs if not 0 < n <= budget.n_train]
    if bad:
        raise ValueError(f"budget points {bad} must be in 1..{budget.n_train} (the train split's pairs)")
    with _torch_threads(NUM_THREADS):
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        clock = _Clock(progress)
        splits = make_splits(budget.n_train, budget.n_val, budget.n_test, base_seed)
        with clock.phase("base", "base stage (reused when cached)"):
            base = train_base(budget, base_seed, splits, cache, progress=progress)
        tok, _ = base.load()
        data = _prepare_data(splits, tok, _config("orpo", 0, 1, LEARNING_RATE, budget.batch_size, out, None))
        base_scored, engine = _score_base(base, budget, data, out)
        jobs = []
        for n in pairs:
            sub = dataclasses.replace(budget, n_train=n)
            sub_data = dataclasses.replace(data, train=data.train.select(range(n)))
            for method in BUDGET_METHODS:
                jobs += [
                    (method, seed, base, sub, sub_data, out / "budget" / f"pairs{n}", engine)
                    for seed in seeds
                ]
        with clock.phase(
            "runs",
            f"{len(jobs)} runs ({len(BUDGET_METHODS)} methods x {len(pairs)} budgets x {len(seeds)} seeds)",
        ):
            done = _run_jobs(jobs, progress)  # all at once: the workers stay busy across budgets
        points: dict[str, list[dict[str, Any]]] = {m: [] for m in BUDGET_METHODS}
        for n in pairs:
            for method in BUDGET_METHODS:
                runs = [r for job, r in zip(jobs, done) if job[0] == method and len(job[4].train) == n]
                points[method].append(
                    {
                        "pairs": n,
                        "steps": runs[0]["steps"],
                        "seeds": [r["seed"] for r in runs],
                        "metrics": summarise([r["counts"] for r in runs], BOOTSTRAP_SEED),
                        "train_seconds_mean": round(sum(r["train_seconds"] for r in runs) / len(runs), 2),
                    }
                )
        base_metrics = summarise([base_scored["counts"]], BOOTSTRAP_SEED)
        figure_path = out / "budget.png"
        plot_budget(points, base_metrics, figure_path, f"From the base, seeds {', '.join(map(str, seeds))}")
        results = {
            "settings": {
                "size": size,
                "seeds": seeds,
                "base_seed": base_seed,
                "pairs": list(pairs),
                "batch_size": budget.batch_size,
                "learning_rate": LEARNING_RATE,
                "betas": BETAS,
            },
            "base": {"key": base.key, "cached": base.cached, "metrics": base_metrics},
            "methods": points,
            "wall_time_s": {**clock.times, "total": round(clock.total(), 2)},
        }
        results_path = out / "budget.json"
        results_path.write_text(json.dumps(results, indent=1))
        return DemoResult(out, results_path, figure_path, results)


def plot_budget(points: dict[str, list[dict]], base: dict, path: Path, title: str) -> None:
    """Recall and precision (95% interval as error bars) against training pairs, per method; the
    base's value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, metric in zip(axes, ("recall", "precision")):
        for i, (method, rows) in enumerate(points.items()):
            xs = [r["pairs"] * (1 + 0.03 * (i - 0.5)) for r in rows]  # a small offset keeps bars apart
            m = [r["metrics"][metric] for r in rows]
            # undefined points (precision of reviews with no finding at all) are gaps, not values
            ys = [float("nan") if v.get("denominator") == 0 else v["value"] for v in m]
            err = [[v["value"] - v["low"] for v in m], [v["high"] - v["value"] for v in m]]
            bars = ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label=method.upper())
            for x, v in zip(xs, m):
                if v.get("denominator") == 0:
                    ax.annotate(
                        "no finding",
                        (x, 0.02),
                        xycoords=("data", "axes fraction"),
                        fontsize=7,
                        color=bars[0].get_color(),
                        ha="center",
                    )
        ax.axhline(base[metric]["value"], color="grey", linestyle="--", linewidth=1, label="base")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks([r["pairs"] for r in next(iter(points.values()))])
        ax.set_xticklabels([str(r["pairs"]) for r in next(iter(points.values()))])
        ax.set_xlabel("training pairs (one epoch)")
        ax.set_ylabel(metric)
        ax.set_title(f"judged {metric}, 95% interval")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
