"""One run of ``orpo compare`` in its own process: ``python -m orpo.lab.compare.worker SPEC.json``.

Builds model and data from the recipe (same seed, so every run starts from the same weights and sees
the same pairs), trains with our trainer or TRL's (``impl``), evaluates before and after, saves the
model (ours), scores greedy completions with the rules judge if asked, and writes RESULT.json.

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
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.trainer_callback import PrinterCallback

from orpo.evaluation.judged import judge_eval_set
from orpo.lab.harness import StepTimer, peak_rss_mb, reset_peak_rss, status_mb
from orpo.lab.trl_baseline import TRL_MEAN_LOGPS, TRL_NLL, shared_settings, trl_trainer
from orpo.losses import get_objective
from orpo.run.callbacks import MetricsJsonlCallback, quiet


def _curve(log_history: list[dict], names: tuple[str, str], first: dict | None) -> list[dict]:
    chosen, rejected = (f"eval_{n}" for n in names)
    points = {0: dict(first, step=0)} if first else {}
    for h in log_history:  # the final evaluation may repeat the last step's: one point per step
        if chosen in h and rejected in h:
            points[h["step"]] = {"step": h["step"], "chosen": h[chosen], "rejected": h[rejected]}
    return list(points.values())


def judge_run(model, setup: Setup, judge: str, n_prompts: int) -> dict:
    """Greedy completions of the first ``n_prompts`` eval prompts, scored by the rules judge ``judge``
    (``orpo.evaluation.judged.judge_eval_set``: metric -> mean and bootstrap 95% interval)."""
    return judge_eval_set(
        model,
        setup.tok,
        setup.args,
        setup.eval_rows,
        columns=setup.recipe.data.columns,
        fmt=setup.recipe.data.format,
        judge=judge,
        n_prompts=n_prompts,
    )


@dataclass
class Setup:
    """What a run trains: its recipe and arguments, data and model, built as ``orpo train`` builds them."""

    recipe: Any
    args: Any
    train_rows: Any
    eval_rows: Any
    tok: Any
    model: Any

    @classmethod
    def of(cls, spec: dict) -> Setup:
        from orpo.run.build import load_data, tokenizer_and_model_of
        from orpo.run.recipe import load_recipe

        recipe = load_recipe(spec["config"], spec["overrides"])
        args = recipe.training_args()
        train_rows, eval_rows = load_data(recipe, args.seed)
        tok, model = tokenizer_and_model_of(recipe, args, train_rows)
        return cls(recipe=recipe, args=args, train_rows=train_rows, eval_rows=eval_rows, tok=tok, model=model)


def _trainer_ours(spec: dict, s: Setup, callbacks: list):
    from orpo.run.build import new_trainer

    ref_model = None
    if spec["ref_mode"] == "model" and s.recipe.adapter is not None:
        ref_model = copy.deepcopy(s.model)  # else the trainer makes the frozen copy itself
    trainer = new_trainer(
        s.args,
        s.tok,
        s.model,
        s.train_rows,
        s.eval_rows,
        callbacks,
        s.recipe.adapter,
        s.recipe.data,
        ref_model=ref_model,
    )
    if trainer.reference is not None and spec["ref_mode"] and trainer.reference.mode != spec["ref_mode"]:
        raise ValueError(
            f"{spec['label']}: asked for reference mode {spec['ref_mode']}, got {trainer.reference.mode}"
        )
    return trainer


def _trainer_trl(spec: dict, s: Setup, callbacks: list):
    from orpo.run.build import peft_config_of

    args = s.args
    settings = {
        **shared_settings(args),
        "output_dir": args.output_dir,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": args.logging_steps,
        "eval_strategy": args.eval_strategy,
        "eval_steps": args.eval_steps,
        "disable_tqdm": not spec["progress"],
    }
    return trl_trainer(
        spec["method"],
        settings,
        s.model,
        s.tok,
        s.train_rows,
        s.eval_rows,
        callbacks=callbacks,
        peft_config=peft_config_of(s.recipe.adapter),
        ref_mode=spec["ref_mode"],
        nll_on_prompt=args.nll_on_prompt,
    )


def worker(spec_path: str) -> int:
    """Train one run of a comparison and write its RESULT.json (see the module docstring)."""
    import torch

    spec = json.loads(Path(spec_path).read_text())
    setup = Setup.of(spec)
    args = setup.args
    timer = StepTimer()
    callbacks = [timer, MetricsJsonlCallback(Path(args.output_dir) / "metrics.jsonl")]
    build = _trainer_trl if spec["impl"] == "trl" else _trainer_ours
    setup_start = time.perf_counter()
    trainer = build(spec, setup, callbacks)
    setup_seconds = time.perf_counter() - setup_start
    if spec["progress"]:  # keep the Trainer's own bar (TRL's trainers have no other)
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
        judged = judge_run(model_now, setup, spec["judge"], spec["judge_prompts"])

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
        print(
            "usage: python -m orpo.lab.compare.worker SPEC.json (started by `orpo compare`)", file=sys.stderr
        )
        return 2
    try:
        return worker(argv[0])
    except (ValueError, ImportError, OSError) as err:
        print(f"orpo compare worker: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
