"""`orpo compare`: one recipe trained once per method (and per grid value), each in its own process.

    runs    = methods x grid values; a method may name its reference mode: dpo:precomputed,
              dpo:adapter, dpo:model (see ``orpo.refpass``); bare dpo uses the adapter-disabled base
              when the recipe has an adapter, else a frozen copy of the initial model
    process = ``python -m orpo.lab.compare.run SPEC.json``: builds model and data from the recipe (same seed,
              so every run starts from the same weights and sees the same pairs), trains, evaluates,
              writes RESULT.json; a fresh process per run, so its peak memory is its own
    table   = peak memory, time per pair (the reference pass separately), eval NLL, preference
              accuracy, held-out mean log-probs of chosen and rejected at the end; Markdown + JSON
    judge   = where the data has a task judge (builtin:codereview -> rules:codereview, or
              ``judge="rules:FILE.py"``): greedy completions of the first eval prompts, scored by it,
              each metric's mean with a bootstrap 95% interval over prompts (a second table)
    plot    = held-out mean log-probs of chosen (solid) and rejected (dashed) over training, one pair
              of lines per run (the ORPO paper's Figure 3 and its lambda ablation)

With ``baseline="trl"`` every method TRL 1.16 has (ORPO, DPO/IPO/hinge, SimPO and CPO via its
CPOTrainer, SFT via its SFTTrainer on prompt + chosen) also runs with TRL's trainer on the same model
and data, for memory and time side by side.

What is measured, and how:
- time per pair: the trainer's steps only (``on_step_begin`` to ``on_step_end``: forward, backward,
  optimizer; evaluations excluded), divided by the pairs trained (steps x batch x accumulation).
- reference pass: the precompute pass before training (``precomputed``); in the other modes the
  reference forward runs inside each step and is part of the step time.
- memory: ``peak RSS`` is the process's peak resident memory over the whole run (``ru_maxrss``);
  ``train peak`` the peak during ``train()`` alone (the kernel's high-water mark, reset just before).
  On CUDA, ``torch.cuda.max_memory_allocated`` is reported too.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orpo.lab.harness import peak_rss_mb, reset_peak_rss, status_mb
from orpo.losses import OBJECTIVES, get_objective
from orpo.refpass import MODES as REF_MODES

# Methods TRL 1.16 has a trainer for: name -> (module, trainer, config, extra config fields).
TRL_TRAINERS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig", {}),
    "dpo": ("trl", "DPOTrainer", "DPOConfig", {"loss_type": ["sigmoid"]}),
    "ipo": ("trl", "DPOTrainer", "DPOConfig", {"loss_type": ["ipo"]}),
    "hinge": ("trl", "DPOTrainer", "DPOConfig", {"loss_type": ["hinge"]}),
    "simpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig", {"loss_type": "simpo", "cpo_alpha": 0.0}),
    "cpo": ("trl.experimental.cpo", "CPOTrainer", "CPOConfig", {"loss_type": "sigmoid"}),
    "sft": ("trl", "SFTTrainer", "SFTConfig", {}),
}
# TRL trainers whose logged ``logps/*`` are length-normalised, like ours (plotted on the same scale).
TRL_MEAN_LOGPS = ("orpo", "simpo")
# TRL trainers whose logged ``nll_loss`` is the NLL of the chosen sequence (SFT's is its ``loss``).
TRL_NLL = ("orpo", "cpo")
# Eval prompts a task judge scores per run by default, and the cap on a completion's new tokens.
JUDGE_PROMPTS = 100
JUDGE_MAX_NEW_TOKENS = 512
# Training fields passed to TRL's config as they are (the budget, optimiser, precision, lengths).
TRL_SHARED_FIELDS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "gradient_checkpointing",
    "bf16",
    "seed",
    "max_length",
    "beta",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "use_cpu",
    "label_smoothing",
    "precompute_ref_log_probs",
    "simpo_gamma",
)

COLUMNS = (
    ("impl", "impl", "{}"),
    ("peak_rss_mb", "peak RSS MiB", "{:.0f}"),
    ("train_peak_mb", "train peak MiB", "{:.0f}"),
    ("ms_per_pair", "ms/pair", "{:.1f}"),
    ("ref_ms_per_pair", "ref pass ms/pair", "{:.1f}"),
    ("eval_nll", "eval NLL", "{:.3f}"),
    ("pref_acc", "pref acc", "{:.3f}"),
    ("logp_chosen", "logp chosen", "{:.3f}"),
    ("logp_rejected", "logp rejected", "{:.3f}"),
)


@dataclass
class RunSpec:
    """One run of a comparison: a label, the recipe overrides that make it, how to train it."""

    label: str
    method: str
    overrides: list[str]
    ref_mode: str | None = None
    impl: str = "orpo"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        keep = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.label)
        return keep.strip("_")


def list_methods() -> str:
    from orpo.losses import describe

    modes = ", ".join(REF_MODES)
    return f"{describe()}\nReference modes (dpo, ipo, hinge): METHOD:MODE with MODE one of {modes}."


def parse_methods(text: str) -> list[tuple[str, str | None]]:
    """``"orpo,dpo:precomputed"`` -> [("orpo", None), ("dpo", "precomputed")]; one-line errors."""
    out = []
    for item in (m.strip().lower() for m in text.split(",")):
        if not item:
            continue
        name, _, mode = item.partition(":")
        if name not in OBJECTIVES:
            raise ValueError(f"--methods: unknown method {name!r}; choose from {', '.join(OBJECTIVES)}")
        if mode and not OBJECTIVES[name].needs_reference:
            raise ValueError(f"--methods: {name} has no reference model, so {item!r} has no meaning")
        if mode and mode not in REF_MODES:
            raise ValueError(
                f"--methods: reference mode {mode!r} in {item!r} is not one of {', '.join(REF_MODES)}"
            )
        out.append((name, mode or None))
    if not out:
        raise ValueError("--methods is empty; e.g. --methods sft,orpo,dpo,simpo (see --list-methods)")
    return list(dict.fromkeys(out))


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["training.beta=0.1,0.5"]`` -> [("training.beta", ["0.1", "0.5"])]."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not parts:
            raise ValueError(f"--grid {item!r} is not KEY=V1,V2,... (e.g. --grid training.beta=0.1,0.5,1.0)")
        grid.append((key.strip(), parts))
    return grid


def plan(
    methods: list[tuple[str, str | None]], grid: list[tuple[str, list[str]]], baseline: str | None
) -> list[RunSpec]:
    """The runs: every method x every combination of grid values, then TRL's where asked."""
    combos = list(itertools.product(*[[(k, v) for v in values] for k, values in grid])) or [()]
    runs = []
    for (method, mode), combo in itertools.product(methods, combos):
        name = f"{method}:{mode}" if mode else method
        suffix = " ".join(f"{k.split('.')[-1]}={v}" for k, v in combo)
        label = f"{name} {suffix}".strip()
        overrides = [f"training.method={method}", *(f"{k}={v}" for k, v in combo)]
        if mode == "precomputed":
            overrides.append("training.precompute_ref_log_probs=true")
        runs.append(RunSpec(label, method, overrides, mode))
        if baseline == "trl" and method in TRL_TRAINERS:
            runs.append(RunSpec(f"{label} (trl)", method, overrides, mode, impl="trl"))
    return runs


# ---------------------------------------------------------------- the parent process


def run_compare(
    config: str | None,
    overrides: list[str],
    methods: list[tuple[str, str | None]],
    grid: list[tuple[str, list[str]]],
    baseline: str | None = None,
    progress: bool = False,
    log=sys.stderr,
    judge: str | None = "auto",
    judge_prompts: int = JUDGE_PROMPTS,
) -> dict:
    """Plan, launch every run in its own process, collect, write compare.json / compare.md / the plot.

    ``judge``: "auto" (the task's judge where the data has one: builtin:codereview -> rules:codereview),
    "none", or "rules:NAME_OR_FILE.py".
    """
    from orpo.run.recipe import load_recipe

    recipe = load_recipe(config, list(overrides))
    judge = resolve_judge(judge, recipe.data.train)
    if judge_prompts < 1:
        raise ValueError(f"--judge-prompts {judge_prompts} must be >= 1")
    data = recipe.data
    if data.eval is None and data.eval_split is None and not (data.eval_fraction or 0) > 0:
        raise ValueError(
            "compare needs an eval set; set data.eval, data.eval_split or data.eval_fraction > 0"
        )
    if baseline == "trl":
        try:
            import trl  # noqa: F401
        except ImportError:
            raise ValueError("--baseline trl needs TRL: pip install 'orpo[bench]'") from None
    runs = plan(methods, grid, baseline)
    for run in runs:  # validate every recipe before the first (long) run starts
        one = load_recipe(config, [*overrides, *run.overrides])
        one.training_args()
        if run.ref_mode == "adapter" and one.adapter is None:
            raise ValueError(
                f"{run.label}: the adapter-disabled reference needs an adapter; add adapter.r=16 "
                "(applies to every method) or use dpo:model / dpo:precomputed"
            )
    root = Path(recipe.training_args().output_dir)
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for i, run in enumerate(runs, 1):
        print(f"compare: [{i}/{len(runs)}] {run.label} ...", file=log, flush=True)
        result = launch(config, overrides, run, root / run.slug, progress, judge, judge_prompts)
        results.append(result)
        ms = result.get("ms_per_pair")
        print(
            f"compare: [{i}/{len(runs)}] {run.label}: {ms:.1f} ms/pair, peak RSS {result['peak_rss_mb']:.0f} MiB",
            file=log,
            flush=True,
        )
    report = {
        "config": config or "<embedded default>",
        "overrides": list(overrides),
        "grid": [[k, v] for k, v in grid],
        "judge": judge,
        "runs": results,
        # Compact view: label -> headline numbers (and the final eval metrics), as before.
        "methods": {
            r["label"]: {**r["final"], **_row(r), "train_seconds": r["train_seconds"]} for r in results
        },
        "files": [str(root / n) for n in ("compare.json", "compare.md", "compare_logps.png")],
    }
    (root / "compare.json").write_text(json.dumps(report, indent=2))
    (root / "compare.md").write_text(format_markdown(results) + "\n")
    if any(r["curve"] for r in results):
        plot_curves(results, root / "compare_logps.png")
    return report


def resolve_judge(judge: str | None, train_source) -> str | None:
    """The rules judge a comparison scores with (see ``run_compare``), checked before any run starts."""
    if judge is None or judge == "none":
        return None
    if judge == "auto":
        return "rules:codereview" if train_source == "builtin:codereview" else None
    kind, _, name = judge.partition(":")
    if kind != "rules" or not name:
        raise ValueError(
            f"--judge {judge}: compare scores each run on its own, so it takes a rules judge "
            "(rules:codereview or rules:FILE.py), auto or none; compare two runs pairwise with `orpo judge`"
        )
    from orpo.evaluation.judges.rules import load_rules

    load_rules(name)  # a missing file or a file without judge() is a one-line error now, not after training
    return judge


def _row(result: dict) -> dict:
    return {k: result.get(k) for k, _, _ in COLUMNS if result.get(k) is not None}


def launch(
    config: str | None,
    overrides: list[str],
    run: RunSpec,
    out: Path,
    progress: bool,
    judge: str | None = None,
    judge_prompts: int = JUDGE_PROMPTS,
) -> dict:
    """Run one spec in a fresh ``python -m orpo.lab.compare.run`` process; its RESULT.json, or a one-line error."""
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "config": config,
        "overrides": [*overrides, *run.overrides, f"training.output_dir={out}"],
        "label": run.label,
        "method": run.method,
        "ref_mode": run.ref_mode,
        "impl": run.impl,
        "progress": progress,
        "judge": judge,
        "judge_prompts": judge_prompts,
        "result": str(out / "result.json"),
    }
    (out / "spec.json").write_text(json.dumps(spec, indent=2))
    (out / "result.json").unlink(missing_ok=True)
    log_path = out / "worker.log"
    with log_path.open("w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "orpo.lab.compare.run", str(out / "spec.json")],
            stdout=log,
            stderr=subprocess.STDOUT if not progress else None,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
    if code != 0 or not (out / "result.json").is_file():
        lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
        last = lines[-1] if lines else "no output"
        raise ValueError(f"run {run.label!r} failed (exit {code}): {last} (full log: {log_path})")
    return json.loads((out / "result.json").read_text())


def _fmt(value, pattern: str) -> str:
    if value is None:
        return "-"
    return pattern.format(value)


def _judge_metrics(results: list[dict]) -> list[str]:
    names: list[str] = []
    for r in results:
        for name in (r.get("judge") or {}).get("metrics", {}):
            if name not in names:
                names.append(name)
    return names


def _interval(m: dict | None) -> str:
    return "-" if m is None else f"{m['mean']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"


def judge_caption(results: list[dict]) -> str:
    j = next((r["judge"] for r in results if r.get("judge")), None)
    if j is None:
        return ""
    return (
        f"{j['judge']} on greedy completions of the first {j['prompts']} eval prompts "
        f"(at most {j['max_new_tokens']} new tokens); mean [95% bootstrap interval over prompts]"
    )


def format_markdown(results: list[dict]) -> str:
    header = "| run | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in results:
        cells = " | ".join(_fmt(r.get(k), pattern) for k, _, pattern in COLUMNS)
        lines.append(f"| {r['label']} | {cells} |")
    names = _judge_metrics(results)
    if names:
        lines += ["", judge_caption(results) + ":", ""]
        lines.append("| run | " + " | ".join(names) + " |")
        lines.append("|" + "---|" * (len(names) + 1))
        for r in results:
            metrics = (r.get("judge") or {}).get("metrics", {})
            lines.append(f"| {r['label']} | " + " | ".join(_interval(metrics.get(n)) for n in names) + " |")
    return "\n".join(lines)


def format_table(results: list[dict]) -> str:
    """Plain-text table for the terminal."""
    width = max(len(r["label"]) for r in results) + 2
    header = f"{'run':<{width}}" + "".join(f"{label:>17}" for _, label, _ in COLUMNS)
    lines = [header]
    for r in results:
        cells = "".join(f"{_fmt(r.get(k), pattern):>17}" for k, _, pattern in COLUMNS)
        lines.append(f"{r['label']:<{width}}{cells}")
    names = _judge_metrics(results)
    if names:
        lines += ["", judge_caption(results) + ":"]
        lines.append(f"{'run':<{width}}" + "".join(f"{n:>20}" for n in names))
        for r in results:
            metrics = (r.get("judge") or {}).get("metrics", {})
            lines.append(
                f"{r['label']:<{width}}" + "".join(f"{_interval(metrics.get(n)):>20}" for n in names)
            )
    return "\n".join(lines)


def plot_curves(results: list[dict], path: Path) -> None:
    """Held-out mean log-probs over training: solid chosen, dashed rejected, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(x for x in results if x["curve"]):
        steps = [p["step"] for p in r["curve"]]
        colour = colours[i % len(colours)]
        ax.plot(steps, [p["chosen"] for p in r["curve"]], "-", color=colour, label=f"{r['label']} chosen")
        ax.plot(
            steps, [p["rejected"] for p in r["curve"]], "--", color=colour, label=f"{r['label']} rejected"
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out mean log-prob per token")
    ax.set_title("Held-out log-probs: chosen (solid) vs rejected (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- the worker process


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Sums the wall time of optimizer steps (evaluations and saving happen outside them)."""

        def __init__(self):
            self.seconds, self.steps, self._start = 0.0, 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._start is not None:
                self.seconds += time.perf_counter() - self._start
                self.steps += 1
                self._start = None

    return StepTimer()


def _curve(log_history: list[dict], names: tuple[str, str], first: dict | None) -> list[dict]:
    chosen, rejected = (f"eval_{n}" for n in names)
    points = {0: dict(first, step=0)} if first else {}
    for h in log_history:  # the final evaluation may repeat the last step's: one point per step
        if chosen in h and rejected in h:
            points[h["step"]] = {"step": h["step"], "chosen": h[chosen], "rejected": h[rejected]}
    return list(points.values())


def judge_run(model, tok, eval_rows, args, recipe, judge: str, n_prompts: int) -> dict:
    """Greedy completions of the first ``n_prompts`` eval prompts, scored by the rules judge ``judge``.

    Prompts are rendered and tokenised as training renders them (template, BOS, truncation); each
    completion gets at most the longest reference (chosen) response's tokens + 8, capped at
    ``JUDGE_MAX_NEW_TOKENS``. Returns metric -> mean and bootstrap 95% interval over the prompts.
    """
    import numpy as np
    import torch

    from orpo.data.formats import normalise
    from orpo.data.tokenize import Limits
    from orpo.evaluation.generate import GenerationSettings, Prompt, generate_ids, prompt_ids
    from orpo.evaluation.judges.base import Item
    from orpo.evaluation.judges.rules import RulesJudge
    from orpo.evaluation.stats import bootstrap_interval

    start = time.perf_counter()
    rules = RulesJudge(judge.partition(":")[2])
    canon = normalise(eval_rows, columns=recipe.data.columns, fmt=recipe.data.format, source_name="eval set")
    rows = canon.rows.select(range(min(n_prompts, len(canon.rows))))
    prompts = [
        Prompt(str(i), list(r["prompt"]), r.get("text_prompt"), r["chosen"]) for i, r in enumerate(rows)
    ]
    ids = prompt_ids(prompts, tok, args.chat_template_mode, Limits.from_config(args), args.tokenization)
    longest = max(len(tok(p.reference, add_special_tokens=False)["input_ids"]) for p in prompts)
    settings = GenerationSettings(max_new_tokens=min(longest + 8, JUDGE_MAX_NEW_TOKENS), batch_size=16)
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=bool(args.bf16) and not torch.cuda.is_available()
        ):
            outputs = generate_ids(model, tok, ids, settings)
    finally:
        model.train(was_training)
    scores = []
    for p, samples in zip(prompts, outputs):
        text = tok.decode(samples[0][0], skip_special_tokens=True)
        scores.append(rules.score(Item(p.id, p.text, text, text, p.reference), text))
    metrics = {}
    for name in scores[0]:
        values = np.array([s[name] for s in scores])
        low, high = bootstrap_interval(values)
        metrics[name] = {"mean": float(values.mean()), "ci_low": low, "ci_high": high}
    return {
        "judge": judge,
        "prompts": len(prompts),
        "max_new_tokens": settings.max_new_tokens,
        "lower_is_better": sorted(rules.lower_is_better),
        "seconds": time.perf_counter() - start,
        "metrics": metrics,
    }


def _build(spec: dict):
    """Recipe, args, data and model of a spec, as ``orpo train`` builds them."""
    from orpo.run.build import load_data, tokenizer_and_model_of
    from orpo.run.recipe import load_recipe

    recipe = load_recipe(spec["config"], spec["overrides"])
    args = recipe.training_args()
    train_rows, eval_rows = load_data(recipe, args.seed)
    tok, model = tokenizer_and_model_of(recipe, args, train_rows)
    return recipe, args, train_rows, eval_rows, tok, model


def _trainer_ours(spec: dict, recipe, args, train_rows, eval_rows, tok, model, callbacks):
    from orpo.run.build import new_trainer

    ref_model = None
    if spec["ref_mode"] == "model" and recipe.adapter is not None:
        ref_model = copy.deepcopy(model)  # else the trainer makes the frozen copy itself
    trainer = new_trainer(
        args, tok, model, train_rows, eval_rows, callbacks, recipe.adapter, recipe.data, ref_model=ref_model
    )
    if trainer.reference is not None and spec["ref_mode"] and trainer.reference.mode != spec["ref_mode"]:
        raise ValueError(
            f"{spec['label']}: asked for reference mode {spec['ref_mode']}, got {trainer.reference.mode}"
        )
    return trainer


def _trainer_trl(spec: dict, recipe, args, train_rows, eval_rows, tok, model, callbacks):
    import importlib
    from dataclasses import fields

    from datasets import Dataset

    from orpo.run.build import peft_config_of

    module, trainer_name, config_name, extra = TRL_TRAINERS[spec["method"]]
    if spec["method"] == "sft":  # TRL's SFTTrainer reads prompt-completion rows: the chosen is the completion
        train_rows, eval_rows = (_prompt_completion(rows, recipe) for rows in (train_rows, eval_rows))
        # our SFT's NLL covers the prompt too unless nll_on_prompt is off; TRL's the completion only
        extra = {**extra, "completion_only_loss": not args.nll_on_prompt}
    mod = importlib.import_module(module)
    trainer_cls, config_cls = getattr(mod, trainer_name), getattr(mod, config_name)
    known = {f.name for f in fields(config_cls)}
    values = {k: getattr(args, k) for k in TRL_SHARED_FIELDS if k in known and hasattr(args, k)}
    values.update({k: v for k, v in extra.items() if k in known})
    trl_args = config_cls(
        output_dir=args.output_dir,
        report_to="none",
        save_strategy="no",
        logging_steps=args.logging_steps,
        eval_strategy=args.eval_strategy,
        eval_steps=args.eval_steps,
        disable_tqdm=not spec["progress"],
        **values,
    )
    ref_model = None
    # TRL's DPOTrainer given no ref_model reloads one from the model's name, which a model built
    # in memory does not have: hand it the frozen copy, as ours makes.
    if spec["ref_mode"] == "model" and "ref_model" in _params(trainer_cls):
        ref_model = copy.deepcopy(model)
    kwargs = {"ref_model": ref_model} if ref_model is not None else {}
    return trainer_cls(
        model=model,
        args=trl_args,
        train_dataset=Dataset.from_list(list(train_rows)),
        eval_dataset=Dataset.from_list(list(eval_rows)),
        processing_class=tok,
        peft_config=peft_config_of(recipe.adapter),
        callbacks=callbacks,
        **kwargs,
    )


def _prompt_completion(rows, recipe) -> list[dict]:
    """Preference rows in TRL's layout (prompt, chosen) as SFTTrainer's prompt-completion rows."""
    out = []
    for i, row in enumerate(rows):
        if "prompt" not in row or "chosen" not in row:
            raise ValueError(
                f"--baseline trl for sft: row {i} has no prompt/chosen columns (TRL's layout); "
                "TRL's SFTTrainer cannot read this data's layout"
            )
        out.append({"prompt": row["prompt"], "completion": row["chosen"]})
    return out


def _params(cls) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def worker(spec_path: str) -> int:
    """Train one run of a comparison and write its RESULT.json (see the module docstring)."""
    import torch

    spec = json.loads(Path(spec_path).read_text())
    recipe, args, train_rows, eval_rows, tok, model = _build(spec)
    from orpo.run.callbacks import MetricsJsonlCallback, quiet

    timer = _step_timer()
    callbacks = [timer, MetricsJsonlCallback(Path(args.output_dir) / "metrics.jsonl")]
    build = _trainer_trl if spec["impl"] == "trl" else _trainer_ours
    setup_start = time.perf_counter()
    trainer = build(spec, recipe, args, train_rows, eval_rows, tok, model, callbacks)
    setup_seconds = time.perf_counter() - setup_start
    if spec["progress"]:  # keep the Trainer's own bar (TRL's trainers have no other)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    else:
        quiet(trainer)
    objective = get_objective(spec["method"])
    # TRL's DPO logs summed logps only; its curve is left out rather than put on another scale.
    names = objective.mean_logps_metrics if spec["impl"] == "orpo" else ("logps/chosen", "logps/rejected")
    comparable_curve = spec["impl"] == "orpo" or spec["method"] in TRL_MEAN_LOGPS

    before = trainer.evaluate()
    first = {"chosen": before.get(f"eval_{names[0]}"), "rejected": before.get(f"eval_{names[1]}")}
    rss_before = status_mb("VmRSS")
    can_reset = reset_peak_rss()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    train_peak = status_mb("VmHWM") if can_reset else None
    final = trainer.evaluate()
    if spec["impl"] == "orpo":
        trainer.save_model(args.output_dir)  # so `orpo eval / generate` can use any run of the comparison
    judged = None
    if spec.get("judge"):  # after saving: a judge that fails on this data does not lose the trained model
        model_now = trainer.accelerator.unwrap_model(trainer.model)
        judged = judge_run(model_now, tok, eval_rows, args, recipe, spec["judge"], spec["judge_prompts"])

    world = max(1, args.world_size)
    pairs = timer.steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    reference = getattr(trainer, "reference", None)
    ref_seconds = (
        reference.precompute_seconds if reference is not None and reference.mode == "precomputed" else None
    )
    n_ref_pairs = len(trainer.train_dataset) + sum(
        len(d) for d in ([trainer.eval_dataset] if not isinstance(trainer.eval_dataset, dict) else [])
    )
    result = {
        "label": spec["label"],
        "method": spec["method"],
        "impl": spec["impl"],
        "ref_mode": getattr(reference, "mode", None) if spec["impl"] == "orpo" else spec["ref_mode"],
        "overrides": spec["overrides"],
        "steps": timer.steps,
        "pairs": pairs,
        "train_seconds": timer.seconds,
        "setup_seconds": setup_seconds,
        "ms_per_pair": 1000 * timer.seconds / pairs if pairs else None,
        "ref_seconds": ref_seconds,
        "ref_ms_per_pair": 1000 * ref_seconds / n_ref_pairs if ref_seconds else None,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_train_mb": rss_before,
        "train_peak_mb": train_peak,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "eval_nll": _eval_nll(spec, final),
        "pref_acc": final.get("eval_rewards/accuracies"),
        "logp_chosen": final.get(f"eval_{names[0]}") if comparable_curve else None,
        "logp_rejected": final.get(f"eval_{names[1]}") if comparable_curve else None,
        "curve": _curve(trainer.state.log_history, names, first) if comparable_curve else [],
        "final": {k: v for k, v in final.items() if isinstance(v, (int, float))},
        "judge": judged,
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=2))
    return 0


def _eval_nll(spec: dict, final: dict) -> float | None:
    if spec["impl"] == "orpo" or spec["method"] in TRL_NLL:
        return final.get("eval_nll_loss")
    if spec["method"] == "sft":  # TRL's SFT loss is the NLL (of the completion, or of all tokens)
        return final.get("eval_loss")
    return None  # TRL's CPOTrainer logs nll_loss = 0 when its NLL weight is 0 (SimPO): not an NLL


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m orpo.lab.compare.run SPEC.json (started by `orpo compare`)", file=sys.stderr)
        return 2
    try:
        return worker(argv[0])
    except (ValueError, ImportError, OSError) as err:
        print(f"orpo compare worker: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
