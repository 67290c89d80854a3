"""``orpo iterate``: rounds of on-policy pairs, training and judged held-out evaluation, with control arms.

Round r of the main arm: pairs sampled from round r-1's model (round 0: the recipe's model) on the round's
prompts and scored by the judge (``orpo pairs``' make_pairs), then the recipe trained on them (from round
r-1's model, or from the base with ``--from base``; earlier rounds' pairs replayed as ``--replay`` says),
then greedy answers to held-out prompts judged with a 95% interval, and the win rate against round r-1.

Control arms (``--control``) separate what the rounds add from what more training adds:
  steps   from round 1's model on, round r trains on round 1's pairs only, for as many steps as the main
          arm's round r (round 1 is the main arm's own)
  sft     the same rounds with SFT on the chosen answers, sampling from its own models (rejection-sampling
          fine-tuning); its round 1 uses the main arm's round-1 pairs (same base, same samples)

Files (OUT = --out):
  OUT/iterate.json                  the settings; a rerun with other settings is refused
  OUT/base/                         a tiny:ARCH recipe's model, built once
  OUT/round-0/eval.json             the base's held-out answers and scores
  OUT/round-N/pairs.jsonl (+ .samples.jsonl, .summary.json, .scores.png), run/, [model/], train.json, eval.json
  OUT/control-steps/round-N/..., OUT/sft/round-N/...   the control arms' rounds (N >= 2 for steps)
  OUT/summary.json, OUT/rounds.png  per arm and round: pairs, training, metric and interval, win rate

Every stage is resumable (``orpo.iterate.stages``): a rerun does no finished work.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from orpo.iterate.plan import (
    IterateSettings,
    PromptPlan,
    check_out,
    check_out_path,
    check_overrides,
    plan_prompts,
)
from orpo.iterate.report import (
    RoundRecord,
    compare,
    eval_record,
    no_gain,
    pairs_record,
    plot,
    table,
    write_summary,
)

__all__ = ["IterateSettings", "run_iterate", "table"]


@dataclass(frozen=True)
class Arm:
    """One line of rounds. ``folder``: where its rounds go; ``method``: its training method override
    (None: the recipe's); ``own_pairs``: it samples its own pairs each round (else round 1's only)."""

    name: str
    folder: Path
    method: str | None
    own_pairs: bool


class Iteration:
    """The state of one ``orpo iterate`` run: settings, prompts, judge, base model and every arm's rounds."""

    def __init__(self, settings: IterateSettings, plan: PromptPlan, scorer, metric: str, recipe, say):
        self.s = settings
        self.plan = plan
        self.scorer = scorer
        self.metric = metric
        self.say = say
        self.recipe_method = recipe.training_args().method
        self.adapter = recipe.adapter is not None
        args = recipe.training_args()
        # Every round trains at the learning rate the recipe resolves for its own model: a later round's
        # model is a folder, for which the recipe's default learning rate would differ (tiny:ARCH 1e-3,
        # a full fine-tune 5e-6).
        self.pinned = [f"training.learning_rate={args.learning_rate!r}"]
        import torch

        from orpo.evaluation.judged import AnswerSettings

        self.answer = AnswerSettings(
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
            bf16=bool(args.bf16) and not torch.cuda.is_available(),
        )
        self.recipe = recipe
        # How the base's prompts are rendered: as the recipe will train it (a run renders as it trained).
        from orpo.data.tokenize import Limits

        self.rendering = {
            "chat_template_mode": args.chat_template_mode,
            "limits": Limits.from_config(args),
            "tokenization": args.tokenization,
        }
        self.lower_is_better = metric in getattr(scorer, "lower_is_better", set())
        self.base = ""
        self.evals: dict[tuple[str, int], dict] = {}
        self.records: dict[str, list[RoundRecord]] = {}
        out = settings.out
        self.arms = [Arm("main", out, None, True)]
        if "steps" in settings.controls:
            self.arms.append(Arm("steps", out / "control-steps", None, False))
        if "sft" in settings.controls:
            self.arms.append(Arm("sft", out / "sft", "sft", True))

    # ---- paths ----
    def round_dir(self, arm: Arm, r: int) -> Path:
        main = self.arms[0]
        if r == 0 or (r == 1 and arm.name == "steps"):
            arm = main  # the base, and the steps arm's round 1, are the main arm's
        return arm.folder / f"round-{r}"

    def sampler(self, arm: Arm, r: int) -> str:
        """The model round r of ``arm`` samples from (and is judged as, for r - 1): the base, else the
        arm's round r-1 run."""
        return self.base if r == 1 else str(self.round_dir(arm, r - 1) / "run")

    def pairs_file(self, arm: Arm, r: int) -> Path:
        if not arm.own_pairs or r == 1:
            return self.round_dir(self.arms[0], 1 if not arm.own_pairs else r) / "pairs.jsonl"
        return self.round_dir(arm, r) / "pairs.jsonl"

    def start(self, arm: Arm, r: int) -> str:
        if r == 1 or self.s.start == "base":
            return self.base
        from orpo.iterate.stages import merged_model

        return merged_model(self.round_dir(arm, r - 1))

    def train_files(self, arm: Arm, r: int) -> list[Path]:
        if not arm.own_pairs:
            return [self.pairs_file(arm, 1)]
        first = {"all": 1, "last": max(1, r - 1), "none": r}[self.s.replay]
        files = [self.pairs_file(arm, k) for k in range(first, r + 1)]
        return [f for f in files if _pair_count(f) > 0]

    # ---- stages ----
    def evaluation(self, arm: Arm, r: int) -> dict:
        from orpo.iterate.stages import EVAL_FILE, evaluate

        key = (arm.name if r > 1 or (r == 1 and arm.name == "sft") else "main", r)
        if key not in self.evals:
            model = self.base if r == 0 else str(self.round_dir(arm, r) / "run")
            path = self.round_dir(arm, r) / EVAL_FILE
            if not path.is_file():
                self.say(f"{_label(arm, r)}: judging {len(self.plan.held_out)} held-out answers of {model}")
            self.evals[key] = evaluate(
                model, self.rendering, self.plan.held_out, self.scorer, path, self.answer
            )
        return self.evals[key]

    def run_round(self, arm: Arm, r: int, progress: bool) -> RoundRecord:
        from orpo.iterate.stages import round_pairs, train_round

        record = RoundRecord(round=r)
        if arm.own_pairs:
            path = self.pairs_file(arm, r)
            shared = arm.name != "main" and r == 1
            if not path.is_file():
                prompts = self.plan.window(r, self.s.max_prompts)
                self.say(
                    f"{_label(arm, r)}: sampling {len(prompts)} prompts x {self.s.samples} from {self.sampler(arm, r)}"
                )
            summary = round_pairs(
                self.s,
                self.sampler(arm, r),
                self.rendering,
                self.plan.window(r, self.s.max_prompts),
                path,
                self.s.seed + r - 1,
                progress,
                self.scorer,
            )
            record.pairs_file = str(path)
            record.pairs = pairs_record(summary, shared_from="main" if shared else None)
        data = self.train_files(arm, r)
        if not data:
            raise ValueError(
                f"{_label(arm, r)}: no pairs to train on (see {self.pairs_file(arm, r).with_suffix('.summary.json')})"
            )
        extra = list(self.pinned)
        if arm.method is not None:
            extra.append(f"training.method={arm.method}")
        if arm.name == "steps":
            steps = self.records["main"][r].train["steps"]
            if not steps or steps < 1:  # max_steps=0 would mean "train by epochs": no longer a control
                raise ValueError(
                    f"round {r}: the main arm's run records {steps} steps, so the steps control cannot match "
                    f"it; delete {self.round_dir(self.arms[0], r)} and rerun"
                )
            extra.append(f"training.max_steps={steps}")
        round_dir = self.round_dir(arm, r)
        if not (round_dir / "train.json").is_file():
            self.say(
                f"{_label(arm, r)}: training from {self.start(arm, r)} on {', '.join(str(d) for d in data)}"
            )
        record.train = _train_view(train_round(self.s, self.start(arm, r), data, round_dir, extra, progress))
        return record

    def finish_round(self, arm: Arm, r: int, record: RoundRecord) -> None:
        current = self.evaluation(arm, r)
        previous = self.evaluation(arm, r - 1)
        record.eval = eval_record(current, self.metric)
        record.win_rate = {"against": f"round {r - 1}", **compare(previous, current)}
        self.records[arm.name].append(record)

    def summary(self, stopped: str | None) -> dict:
        return {
            "settings": self.s.record(),
            "base": self.base,
            "metric": self.metric,
            "method": self.recipe_method,
            "judge": self.s.judge,
            "held_out_prompts": len(self.plan.held_out),
            "arms": {name: [r.row() for r in rounds] for name, rounds in self.records.items()},
            "stopped": stopped,
        }


def _train_view(record: dict) -> dict:
    return {k: record.get(k) for k in ("steps", "seconds", "resumed", "data", "start", "nonfinite_skipped")}


def _label(arm: Arm, r: int) -> str:
    return f"round {r}" if arm.name == "main" else f"{arm.name} round {r}"


def _pair_count(path: Path) -> int:
    summary = path.with_suffix(".summary.json")
    return json.loads(summary.read_text())["counts"]["pairs"] if summary.is_file() else 0


def _say(message: str) -> None:
    print(f"orpo iterate: {message}", file=sys.stderr, flush=True)


def prepare(settings: IterateSettings):
    """Every check that needs no model: flags, overrides, recipe, judge, prompts. Returns (recipe, plan,
    scorer, metric name)."""
    from orpo.evaluation.judges import ScorerOptions, parse_judge
    from orpo.evaluation.judges.pointwise import ScoreItem
    from orpo.run.recipe import load_recipe

    check_out_path(settings.out)
    check_overrides(settings.overrides)
    recipe = load_recipe(settings.recipe, list(settings.overrides))  # every field checked, nothing written
    method = recipe.training_args().method
    if "steps" in settings.controls and settings.rounds == 1:
        from orpo._log import notice

        notice(
            "--control steps with --rounds 1: the steps arm starts at round 2 (its round 1 is the main arm's)"
        )
    if "sft" in settings.controls and method == "sft":
        raise ValueError("--control sft: the recipe's method is already sft; drop the sft arm")
    spec = parse_judge(settings.judge, pointwise=True)
    if spec.kind.name == "openai":
        raise ValueError(
            "--judge openai: orpo iterate takes rules:... or reward:... judges; for an LLM judge run "
            "`orpo pairs` per round"
        )
    scorer = spec.scorer(ScorerOptions(metric=settings.metric))
    plan = plan_prompts(settings)
    # A free probe, as orpo pairs does: a judge that cannot score these held-out prompts fails now.
    probe = plan.held_out[0]
    scorer.score([ScoreItem(probe.id, probe.text, "", probe.reference)])
    metric = getattr(getattr(scorer, "judge", None), "metric", None) or "score"
    return recipe, plan, scorer, metric


def _resolved(recipe) -> dict:
    """The recipe as every round resolves it, without what iterate sets itself (the rerun check)."""
    data = recipe.to_dict()
    data.get("training", {}).pop("output_dir", None)
    data.get("data", {}).pop("train", None)
    return json.loads(json.dumps(data, default=str))


def run_iterate(settings: IterateSettings, progress: bool = True, say=_say) -> dict:
    """Run (or resume) every round of every arm; returns the summary (also OUT/summary.json)."""
    from orpo.checkpoints import run_lock
    from orpo.iterate.stages import ensure_base, open_round_model
    from orpo.run.recipe import TINY_PREFIX

    recipe, plan, scorer, metric = prepare(settings)
    it = Iteration(settings, plan, scorer, metric, recipe, say)
    with run_lock(settings.out):
        if not recipe.model.name.startswith(TINY_PREFIX):
            # A base that cannot be opened fails now, before OUT records settings a corrected rerun
            # would then be refused against (its tokenizer is enough to know; a .gguf is converted once).
            open_round_model(
                ensure_base(
                    recipe.model.name, recipe.model, settings.prompts, settings.split, 0, settings.out
                ),
                None,
                weights=False,
            )
        check_out(settings, _resolved(recipe))
        seed = recipe.training_args().seed
        it.base = ensure_base(
            recipe.model.name, recipe.model, settings.prompts, settings.split, seed, settings.out
        )
        base = RoundRecord(round=0, eval=eval_record(it.evaluation(it.arms[0], 0), metric))
        for arm in it.arms:
            it.records[arm.name] = [base]
        stopped = None
        for r in range(1, settings.rounds + 1):
            for arm in it.arms:
                if arm.name == "steps" and r == 1:
                    continue
                record = it.run_round(arm, r, progress)
                it.finish_round(arm, r, record)
                if arm.name == "main" and r == 1 and "steps" in settings.controls:
                    # The steps arm's round 1 is the main arm's.
                    it.records["steps"].append(it.records["main"][-1])
            write_summary(settings.out, it.summary(None))
            plot(settings.out, it.summary(None))
            last = it.records["main"][-1]
            if settings.until_no_gain and no_gain(
                it.evaluation(it.arms[0], r - 1), it.evaluation(it.arms[0], r)
            ):
                earlier = it.records["main"][-2].eval["metric"]
                better = "below" if it.lower_is_better else "above"
                stopped = (
                    f"round {r}'s {metric} {last.eval['metric']['mean']:.3f} is not {better} round {r - 1}'s "
                    f"interval [{earlier['ci_low']:.3f}, {earlier['ci_high']:.3f}] (--until-no-gain)"
                )
                break
        summary = it.summary(stopped)
        write_summary(settings.out, summary)
        plot(settings.out, summary)
    return summary
