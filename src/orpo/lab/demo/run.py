"""The offline demo, run as practitioners run the case study: from an imperfect base reviewer, pairs
from the base's own mistakes, each of SFT, ORPO, DPO, IPO, KTO and SimPO tuned on validation, then
several seeds on the test split with 95% intervals.

The reported case study starts from a model that already reviews code, imperfectly (recall 0.67,
precision 0.71), and fine-tunes it on pairs whose rejected reviews are its own failures. Here, at toy
scale on this CPU:

  1. Splits: train / validation / test snippets (`tasks.codereview.generator.make_splits`, no snippet
     shared), each with its correct review.
  2. Base (`demo.base`): a tiny Llama trained with SFT on a noisy review corpus, cached by its settings.
     Its judged metrics are the table's first row.
  3. Pairs (`demo.pairs`): on-policy (the base's samples of the training prompts paired by the rules,
     the reference review as chosen where no sample is as good) and/or synthetic (the generator's
     failure modes), ``--pairs``. Cached by settings.
  4. Tuning (`demo.tune`): per method and pair source, the same number of trials over the method's
     learning rate and knobs, chosen on the validation split's judged f1. Cached by settings.
  5. Test table: from the base, for each seed, each method trains on its pair source's pairs with the
     same epochs, batch and schedule and its own chosen values, then greedy reviews of the test
     snippets are judged by the rules (`tasks.codereview.judge`); preference accuracy = share of test
     pairs whose chosen review has the higher mean log-prob per token. Values with 95% intervals over
     seeds and snippets (`demo.table`); training time and peak resident memory per run (each run in
     its own process).
Outputs in ``output_dir``: ``results.json`` (every number, interval, chosen value and setting) and
``logps.png`` (held-out log-probs of chosen and rejected over training, mean over seeds with the
min-max band).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orpo.lab.demo.base import Base, cache_root, make_base
from orpo.lab.demo.methods import (
    DemoData,
    DemoJob,
    TrainSet,
    prepare_data,
    prepare_train,
    run_jobs,
    score_base,
)
from orpo.lab.demo.pairs import PairSource, on_policy_pairs, synthetic_pairs
from orpo.lab.demo.settings import (
    ARCH,
    BASE_LEARNING_RATE,
    BASES,
    BF16,
    BOOTSTRAP_SEED,
    DEFAULT_PARAMS,
    NLL_ON_PROMPT,
    NUM_THREADS,
    PAIR_SOURCES,
    TINY,
    TINY_LLAMA,
    TUNE_SEED,
    WARMUP,
    BaseSpec,
    DemoSize,
    batch_of,
    scoring_config,
    search_space,
    torch_threads,
)
from orpo.lab.demo.table import summarise
from orpo.lab.demo.tune import OBJECTIVE, TuneData, tune_methods
from orpo.lab.plots import plot_logp_curves
from orpo.tasks.codereview.generator import P_FALSE, P_MISS, make_splits


@dataclass
class DemoResult:
    """What `run_demo` wrote: the paths and the results.json content."""

    output_dir: Path
    results_path: Path
    figure_path: Path
    results: dict[str, Any]


class Clock:
    """Wall time per named phase, in seconds."""

    def __init__(self, progress: bool) -> None:
        self.times: dict[str, float] = {}
        self.progress = progress
        self._start = time.perf_counter()

    def phase(self, name: str, message: str) -> Phase:
        if self.progress:
            print(f"[demo] {message}", file=sys.stderr, flush=True)
        return Phase(self, name)

    def total(self) -> float:
        return time.perf_counter() - self._start


class Phase:
    def __init__(self, clock: Clock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.clock.times[self.name] = round(time.perf_counter() - self.start, 2)


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,4,7"`` -> those seeds; ``"0"`` -> the seed 0 (a count of no seed
    means nothing, and the docs write seeds as a list)."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(max(int(text), 1))) if int(text) >= 0 else [int(text)]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give a count (3) or a comma-separated list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: need at least one seed, all distinct and >= 0")
    return seeds


def spec_of(base: str) -> BaseSpec:
    if base not in BASES:
        raise ValueError(f"demo base {base!r} is not one of {', '.join(BASES)}")
    return BASES[base]


def size_of(size: str, base: str = TINY.name) -> DemoSize:
    """The budget named ``size`` of the base named ``base``."""
    return spec_of(base).size(size)


def stage_root(stage: str, cache: Path | None) -> Path:
    """The cache folder of a stage (base, pairs, tune): under ``cache`` when given, else beside the
    reference cache (``base.cache_root``)."""
    return cache / f"demo_{stage}" if cache is not None else cache_root(stage)


@dataclass
class Start:
    """What the demo and its budget curve start from: the base, trained or reused, and scored.

    Attributes:
        clock: the wall time of every phase so far.
        base_seed: the seed of the splits (and of the tiny base).
        splits: the train / validation / test snippets.
        base: the base model on disk.
        tokenizer: the base's tokenizer.
        data: validation and test tokenised with it.
        tune_data: the validation split as a study may read it.
        base_scored: the base's test counts, held-out log-probs and samples (``methods.score_base``).
        engine: the engine every run uses (the one ``engine="auto"`` picked for the base).
    """

    clock: Clock
    base_seed: int
    splits: dict[str, list]
    base: Base
    tokenizer: Any
    data: DemoData
    tune_data: TuneData
    base_scored: dict[str, Any]
    engine: str


def start(
    budget: DemoSize, base_seed: int, out: Path, cache: Path | None, progress: bool, spec: BaseSpec = TINY
) -> Start:
    """Splits, the base (trained, or reused from the cache; or the pretrained one), the tokenised
    splits, the base's scores."""
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(progress)
    splits = make_splits(budget.n_train, budget.n_val, budget.n_test, base_seed)
    what = (
        f"base stage: SFT on {budget.n_base} noisy reviews x {budget.base_epochs} epochs"
        if spec.name == TINY.name
        else f"base: {spec.name}, as it ships (no base stage)"
    )
    with clock.phase("base", what):
        base = make_base(spec, budget, base_seed, splits, stage_root("base", cache), progress)
    if progress:
        print(f"[demo] base {'reused from' if base.cached else 'saved to'} {base.path}", file=sys.stderr)
    tok, _ = base.load()
    with clock.phase("setup", "tokenising the validation and test splits"):
        data = prepare_data(
            splits,
            tok,
            scoring_config("orpo", budget.batch_size, out, spec),
            scoring_config("kto", budget.batch_size, out, spec),
            spec.system(),
            spec.gen_batch_size,
        )
    with clock.phase("base_score", f"scoring the base on {budget.n_test} test snippets"):
        base_scored, engine = score_base(base, budget, data, out)
    tune_data = TuneData(
        list(data.val["prompt_input_ids"]), list(splits["val"]), data.max_new_tokens, data.gen_batch_size
    )
    return Start(
        clock=clock,
        base_seed=base_seed,
        splits=splits,
        base=base,
        tokenizer=tok,
        data=data,
        tune_data=tune_data,
        base_scored=base_scored,
        engine=engine,
    )


def make_sources(
    s: Start, budget: DemoSize, names: list[str], out: Path, cache: Path | None, progress: bool
) -> list[tuple[PairSource, TrainSet]]:
    """Each requested pair source's rows (on-policy: sampled, or reused from the cache) and their
    tokenised training sets."""
    unknown = [n for n in names if n not in PAIR_SOURCES]
    if unknown or not names:
        raise ValueError(f"--pairs {','.join(names)}: give on-policy, synthetic or both")
    sources = []
    for name in names:
        if name == "on-policy":
            with s.clock.phase(
                "pairs", f"on-policy pairs from the base ({budget.samples} samples per prompt)"
            ):
                source = on_policy_pairs(
                    s.base,
                    s.splits["train"],
                    budget,
                    s.data.max_new_tokens,
                    stage_root("pairs", cache),
                    progress,
                )
        else:
            source = synthetic_pairs(s.splits["train"], s.base_seed, s.base.spec.system())
        with s.clock.phase(f"setup_{name}", f"tokenising the {len(source.rows)} {name} pairs"):
            train = prepare_train(
                name,
                source.rows,
                s.tokenizer,
                scoring_config("orpo", budget.batch_size, out, s.base.spec),
                scoring_config("kto", budget.batch_size, out, s.base.spec),
            )
        # Every method must train on the pairs the table counts: a row the tokeniser drops is said.
        source.report["trained_pairs"] = len(train.pairs)
        source.report["tokenised"] = train.report
        if len(train.pairs) != len(source.rows) and progress:
            print(
                f"[demo] training on {len(train.pairs)} of {len(source.rows)}: {train.report}",
                file=sys.stderr,
            )
        if len(train.examples) != 2 * len(train.pairs):
            raise ValueError(
                f"{name} pairs: {len(train.examples)} KTO examples from {len(train.pairs)} pairs (expected 2 per pair)"
            )
        sources.append((source, train))
    return sources


def tune_sources(
    s: Start,
    budget: DemoSize,
    methods: list[str],
    sources: list[tuple[PairSource, TrainSet]],
    cache: Path | None,
    progress: bool,
) -> dict[str, dict[str, dict[str, Any]]]:
    """source -> method -> chosen values (``tune.tune_methods``)."""
    tuned = {}
    for source, train in sources:
        with s.clock.phase(
            f"tune_{source.name}",
            f"tuning {len(methods)} methods on {source.name} pairs: {budget.trials} trials each, chosen on "
            f"the {len(s.tune_data.examples)} validation snippets",
        ):
            tuned[source.name] = tune_methods(
                methods,
                train,
                source.key,
                s.base,
                budget,
                s.tune_data,
                s.engine,
                stage_root("tune", cache),
                progress,
            )
    return tuned


def label_of(method: str, source: str, n_sources: int) -> str:
    """A method's row in the table: the method, and its pair source when the table has two."""
    return method if n_sources == 1 else f"{method} ({source})"


def run_demo(
    size: str = "default",
    seeds: list[int] | None = None,
    output_dir: str | Path = "runs/demo",
    progress: bool = True,
    base_seed: int = 0,
    cache: Path | None = None,
    pairs: list[str] | None = None,
    base: str = TINY.name,
) -> DemoResult:
    """The base (or reuse it), the pairs, each method's study, then every method for every seed; write
    results.json and logps.png.

    See the module docstring for the protocol and `settings.BASES` for the bases and their budgets.
    ``base`` names what the demo starts from (tiny: trained here; smollm2: SmolLM2-135M-Instruct);
    ``seeds`` defaults to ``0 .. n_seeds - 1`` of the size; ``base_seed`` seeds the splits (and the tiny
    base's noisy corpus and weights); ``pairs`` is the pair sources (default on-policy); ``cache`` the
    root of the stages' caches.
    """
    spec = spec_of(base)
    budget = spec.size(size)
    seeds = list(range(budget.n_seeds)) if seeds is None else seeds
    with torch_threads(NUM_THREADS):
        return _run(
            budget, size, seeds, base_seed, Path(output_dir), cache, progress, pairs or ["on-policy"], spec
        )


def _run(
    budget: DemoSize,
    size: str,
    seeds: list[int],
    base_seed: int,
    out: Path,
    cache: Path | None,
    progress: bool,
    source_names: list[str],
    spec: BaseSpec,
) -> DemoResult:
    s = start(budget, base_seed, out, cache, progress, spec)
    sources = make_sources(s, budget, source_names, out, cache, progress)
    tuned = tune_sources(s, budget, list(budget.methods), sources, cache, progress)
    jobs, labels = _comparison_jobs(s, budget, seeds, sources, tuned, out)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    with s.clock.phase(
        "comparison",
        f"{len(jobs)} runs ({len(labels)} methods x {len(seeds)} seeds) at each method's chosen values",
    ):
        for job, result in zip(jobs, run_jobs(jobs, progress)):
            runs[job.label].append(result)

    figure_path = out / "logps.png"
    plot_logp_curves(
        {label.upper(): [r["curve"] for r in rs] for label, rs in runs.items()},
        figure_path,
        f"Held-out log-probs from the base (seeds {', '.join(map(str, seeds))}, each method at its tuned values)",
        keys=("logps_chosen", "logps_rejected"),
        panels=True,
        xlabel="training step (from the base)",
    )
    results: dict[str, Any] = {
        "settings": _settings_record(s, budget, size, seeds, base_seed, source_names, sources),
        "base": _base_record(s.base, s.base_scored),
        "pairs": {source.name: {**source.report, "cached": source.cached} for source, _ in sources},
        "tuned": {
            label_of(m, name, len(sources)): chosen
            for name, per in tuned.items()
            for m, chosen in per.items()
        },
        "methods": {
            label: {**_method_summary(rs, *labels[label], tuned), "runs": rs} for label, rs in runs.items()
        },
        "wall_time_s": {**s.clock.times, "total": round(s.clock.total(), 2)},
    }
    results_path = out / "results.json"
    results_path.write_text(json.dumps(results, indent=1))
    return DemoResult(output_dir=out, results_path=results_path, figure_path=figure_path, results=results)


def _comparison_jobs(
    s, budget: DemoSize, seeds: list[int], sources: list, tuned: dict, out: Path
) -> tuple[list[DemoJob], dict[str, tuple[str, str]]]:
    """(one job per method, pair source and seed at the method's tuned values, label -> (method, source))."""
    labels: dict[str, tuple[str, str]] = {}
    jobs = []
    for source, train in sources:
        for method in budget.methods:
            label = label_of(method, source.name, len(sources))
            labels[label] = (method, source.name)
            jobs += [
                DemoJob(
                    method=method,
                    seed=seed,
                    params=tuned[source.name][method]["params"],
                    label=label,
                    base=s.base,
                    budget=budget,
                    train=train,
                    data=s.data,
                    out=out,
                    engine=s.engine,
                )
                for seed in seeds
            ]
    return jobs, labels


def _method_summary(method_runs: list[dict], method: str, source: str, tuned: dict) -> dict[str, Any]:
    """results.json's record of one method on one pair source: its tuned values, metrics over the seeds."""
    chosen = tuned[source][method]
    return {
        "method": method,
        "source": source,
        "tuned": chosen["params"],
        "val_f1": chosen["value"],
        "metrics": summarise([r["counts"] for r in method_runs], BOOTSTRAP_SEED),
        "steps": method_runs[0]["steps"],
        "train_seconds_mean": round(sum(r["train_seconds"] for r in method_runs) / len(method_runs), 2),
        "peak_rss_mb_max": max((r["peak_rss_mb"] or 0.0) for r in method_runs) or None,
        "test_logps_chosen": sum(r["test_logps_chosen"] for r in method_runs) / len(method_runs),
        "test_logps_rejected": sum(r["test_logps_rejected"] for r in method_runs) / len(method_runs),
    }


def _settings_record(
    s, budget: DemoSize, size: str, seeds: list[int], base_seed: int, source_names: list[str], sources: list
) -> dict[str, Any]:
    """results.json's "settings": everything the numbers depend on."""
    spec = s.base.spec
    tiny = spec.name == TINY.name
    base_stage = ("n_base", "base_epochs", *TINY_LLAMA)  # the tiny base's budget: none for a pretrained one
    return {
        "base": spec.name,
        "size": size,
        "seeds": seeds,
        "base_seed": base_seed,
        "pairs": source_names,
        **{k: v for k, v in asdict(budget).items() if k not in (TINY_LLAMA if tiny else base_stage)},
        "steps": {source.name: budget.steps(len(train.pairs)) for source, train in sources},
        **({"base_steps": budget.base_steps} if tiny else {}),
        "kto_batch_examples": batch_of("kto", budget.batch_size),
        **({"base_learning_rate": BASE_LEARNING_RATE} if tiny else {}),
        "learning_rate_space": spec.learning_rate_space,
        "search_space": {m: search_space(m, spec) for m in budget.methods},
        "objective": OBJECTIVE,
        "tune_seed": TUNE_SEED,
        "defaults": DEFAULT_PARAMS,
        "lr_scheduler": "cosine",
        "warmup": WARMUP,
        "reference": "the base, log-probs precomputed (DPO, IPO, KTO)",
        **({"p_miss": P_MISS, "p_false": P_FALSE} if tiny else {"system_prompt": spec.system()}),
        "nll_on_prompt": NLL_ON_PROMPT,
        "bf16": BF16,
        "max_length": spec.max_length,
        "max_new_tokens": s.data.max_new_tokens,
        "torch_threads": NUM_THREADS,
        "engine": s.engine,
        "bootstrap": {"resamples": 1000, "level": 0.95, "over": ["seeds", "test snippets"]},
        "model": _model_record(s, budget),
    }


def _model_record(s, budget: DemoSize) -> dict[str, Any]:
    """results.json's "model": the tiny Llama's shape, or the pretrained model's file and adapter."""
    adapter = s.base.spec.adapter()
    shape = (
        {"arch": ARCH, **{k: v for k, v in asdict(budget).items() if k in TINY_LLAMA}}
        if s.base.spec.name == TINY.name
        else {
            "name": s.base.spec.name,
            "file": s.base.settings["file"],
            "folder": str(s.base.path),
            "adapter": None if adapter is None else asdict(adapter),
        }
    )
    return {
        **shape,
        "tokenizer_vocab": len(s.tokenizer),
        "parameters": sum(p.numel() for p in s.base.load()[1].parameters()),
    }


def _base_record(base, base_scored: dict) -> dict[str, Any]:
    """results.json's "base": where the base is, how it was trained, and its scores."""
    return {
        "path": str(base.path),
        "key": base.key,
        "cached": base.cached,
        "train_seconds": base.seconds,
        "corpus": base.corpus,
        "metrics": summarise([base_scored["counts"]], BOOTSTRAP_SEED),
        **{k: v for k, v in base_scored.items() if k != "counts"},
        "counts": base_scored["counts"],
    }
