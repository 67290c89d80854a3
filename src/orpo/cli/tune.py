"""`orpo tune [CONFIG.yaml] --space SPEC... --trials N --objective METRIC`: fields chosen on validation."""

from __future__ import annotations

import argparse
import sys

HELP = """\
Choose recipe fields (learning rate, beta, epochs, any field) on the validation split with an Optuna
study: each trial is an ordinary `orpo train` run folder (tune folder/trial-NNNN/), trained in a fresh
process, scored by --objective on the recipe's eval data after training (never on a test split).
Evaluations during training (eval_steps) feed the pruner, which stops unpromising trials early.
The default objective is eval_nll_loss, the NLL of the chosen responses on the eval data: every
method logs it alike and beta does not change it, so it works with the default space. A judge
objective (judge:rules:codereview:f1) scores greedy answers to the first --judge-prompts eval
prompts once, after training; its trials are not pruned. eval_loss is refused when the space holds
beta or another loss knob (the loss itself changes with them), and so is a knob the method does
not read (sft reads no beta).

Search space, one --space per field (dotted name, or the short name of a training field):
  learning_rate=log:1e-6..1e-3   log-uniform        warmup_steps=0.0..0.2   uniform
  num_train_epochs=int:1..3      integers           beta=0.05,0.1,0.2,0.5   one of these values
Every bound and value is checked against the recipe before the first trial. Without --space: the
learning rate over log:1e-6..1e-3 and the method's own knobs over their usual ranges (orpo: beta
log:0.05..1.0; simpo: beta 2..10 and simpo_gamma 0.3..1.6; dpo: beta log:0.01..0.5; ...).

--trials N is the study's total: a rerun with the same N runs nothing new, and a tune killed midway
resumes where it stopped (a trial whose process died is not counted and is run again with new
values). A diverged trial (NaN) is recorded as failed with its reason and the study goes on.
The tune folder (--out, default runs/tune-CONFIG/) receives study.db, best.yaml (the recipe with
the chosen values: `orpo train runs/tune-NAME/best.yaml`), trials.csv, history.png, params.png,
curves.png and report.html. `optuna-dashboard sqlite:///runs/tune-NAME/study.db` opens the study
in a web page (pip install optuna-dashboard).

Several processes or machines share one study with --storage (postgresql://..., mysql://..., or a
journal file on a shared disk) and --study NAME: each runs trials until the study holds N.
Exit status: 0 with a best trial, 1 when no trial finished (all failed or pruned), 2 for a bad
command line, recipe or space, or a trial that failed for a reason every trial would hit.

  orpo tune --space learning_rate=log:1e-4..3e-3 --trials 8
  orpo tune --space learning_rate=log:1e-4..3e-3 --space beta=0.05,0.1,0.2,0.5 --trials 8 \\
      --objective judge:rules:codereview:f1
  orpo tune my.yaml --space warmup_steps=0.0..0.2 --trials 20 --objective eval_rewards/accuracies
  orpo tune my.yaml --space learning_rate=log:1e-6..1e-4 --trials 30 \\
      --storage postgresql://user:pw@db/orpo --study lr-sweep     # the same line on each machine
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="choose learning rate, beta or any field on the validation split (Optuna)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML run config (default: the embedded default)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every trial")
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="FIELD=RANGE",
        help="a searched field: FIELD=log:LO..HI, FIELD=LO..HI, FIELD=int:LO..HI or FIELD=V1,V2,... "
        "(repeatable; default: the learning rate and the method's own knobs, see above)",
    )
    p.add_argument("--trials", type=int, required=True, metavar="N", help="trials in the study in all")
    p.add_argument(
        "--objective",
        default="eval_nll_loss",
        metavar="METRIC",
        help="eval metric to choose on, as the runs log it (default eval_nll_loss; e.g. "
        "eval_rewards/accuracies), or a judge's metric on greedy answers to the eval prompts: "
        "judge:rules:codereview:f1",
    )
    p.add_argument(
        "--judge-prompts",
        type=int,
        default=100,
        metavar="N",
        help="eval prompts each trial answers for a judge:... objective (default 100)",
    )
    p.add_argument(
        "--direction",
        choices=["auto", "minimize", "maximize"],
        default="auto",
        help="auto (default): minimize losses and NLLs, maximize accuracies, margins, f1, recall, precision",
    )
    p.add_argument(
        "--pruner",
        choices=["hyperband", "median", "none"],
        default="hyperband",
        help="stop unpromising trials at an evaluation (default hyperband; median; none)",
    )
    p.add_argument("--out", metavar="DIR", help="tune folder (default runs/tune-CONFIG/)")
    p.add_argument("--storage", metavar="URL", help="shared storage: an RDB URL or a journal file path")
    p.add_argument(
        "--study", metavar="NAME", help="study name in the storage (default: the tune folder's name)"
    )
    p.add_argument(
        "--keep",
        choices=["best", "all", "none"],
        default="best",
        help="trial folders kept at the end (default best)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import optuna  # noqa: F401  (deferred: the other commands start without it)
    except ModuleNotFoundError:
        print("orpo: error: orpo tune needs Optuna: pip install 'orpo[tune]'", file=sys.stderr)
        return 2
    from orpo.cli.train import recipe_and_overrides
    from orpo.run.recipe import load_recipe
    from orpo.tune.results import write_outputs
    from orpo.tune.space import default_space, parse_space
    from orpo.tune.study import TuneSettings, run_study

    config, overrides = recipe_and_overrides(args.config, args.overrides)
    space = args.space
    if not space:
        method = load_recipe(config, overrides).training.get("method", "orpo")
        space = default_space(method)
        print(f"tune: searching {' '.join(space)} (the defaults for method={method})", file=sys.stderr)
    settings = TuneSettings(
        config=config,
        overrides=overrides,
        params=parse_space(space),
        trials=args.trials,
        objective=args.objective,
        direction=args.direction,
        pruner=args.pruner,
        out=args.out,
        storage=args.storage,
        study=args.study,
        keep=args.keep,
        judge_prompts=args.judge_prompts,
    )
    done = run_study(settings, say=lambda line: print(line, file=sys.stderr))
    written = write_outputs(done["study"], settings, done["out"])
    print(written["table"])
    if written["best"] is None:
        print("orpo: error: no trial finished, so there is no best value (see trials.csv)", file=sys.stderr)
        return 1
    print(written["best_line"])
    print(f"written: {', '.join(map(str, written['files']))}", file=sys.stderr)
    return 0
