"""`orpo compare [CONFIG.yaml] --methods sft,orpo,dpo,simpo --grid training.beta=0.1,0.5,1.0`."""

from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Train the same recipe once per method and per grid value (same model, data, budget and seed; each
run in its own process, so peak memory is measured per run), each into <output_dir>/<run>, then
print one table and write <output_dir>/compare.md, compare.json and compare_logps.png (held-out
chosen and rejected log-probs over training, one pair of lines per run).

Eval loss is each method's own objective and is not comparable across methods, so the table shows
peak memory, time per pair (the reference pass separately), the eval NLL, preference accuracy and
the held-out mean log-probs of chosen and rejected responses at the end. Where the data has a task
judge (builtin:codereview has rules:codereview; --judge rules:FILE.py for your own), each run also
answers the first --judge-prompts eval prompts greedily and a second table shows the judge's metrics
with 95% bootstrap intervals over those prompts. --baseline trl adds TRL's own trainer for every
method it has (ORPO, DPO/IPO/hinge, SimPO and CPO, SFT, KTO) on the same model and data.
The recipe needs an eval set (data.eval, data.eval_split or data.eval_fraction > 0). Without a
config, the embedded default recipe (builtin code-review task) is used.

--tune N first gives each method N trials of an `orpo tune` study on the eval data (each trial the
recipe as given, so the same max_steps for all), then compares each method at its best values:
  space      the learning rate (log:1e-6..1e-3) and the method's own knobs over their usual ranges
             (orpo: beta log:0.05..1.0; dpo: beta log:0.01..0.5; simpo: beta 2..10 and simpo_gamma
             0.3..1.6; ...). --tune-space FIELD=RANGE changes a field for every method,
             --tune-space METHOD:FIELD=RANGE for one method; beta and the other loss knobs only the
             second way (beta is lambda for ORPO, a temperature for SimPO, a KL weight for DPO)
  objective  one metric that means the same for every method: the judge's pairwise metric on the
             first --judge-prompts eval prompts where the data has a judge (builtin:codereview: f1),
             else eval_nll_loss (NLL of the chosen responses, measured alike for all; eval_loss is
             each method's own loss, preference accuracy its own implicit reward); --tune-objective
  then       each method's best values are trained again as an ordinary run (so its row measures
             memory and time like the others) and a last table shows the values chosen per method,
             the objective and the trials complete/pruned/failed. --baseline trl runs TRL's trainer
             with the values chosen for ours. The compared numbers are on the eval data the values
             were chosen on: keep a test split apart for an unbiased figure.
Studies live in <output_dir>/tune-<run>/study.db: a killed `orpo compare --tune` resumes them, and a
rerun with the same N runs no new trial (the comparison runs are trained again).

  orpo compare --list-methods
  orpo compare my.yaml --methods sft,orpo,dpo,simpo max_steps=200
  orpo compare --methods orpo --grid training.beta=0.1,0.5,1.0
  orpo compare my.yaml --methods orpo,dpo:precomputed,dpo:model --baseline trl
  orpo compare --methods orpo,dpo,simpo --tune 8 --tune-space dpo:beta=log:0.05..0.5 max_steps=200
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train one recipe with several methods or settings and compare them",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML run config (default: the embedded default recipe)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    p.add_argument(
        "--methods",
        nargs="?",
        const="",
        default="sft,orpo,dpo,simpo",
        help="comma-separated methods (default sft,orpo,dpo,simpo), METHOD:MODE for a reference mode "
        "(dpo:precomputed); no value: list them",
    )
    p.add_argument("--list-methods", action="store_true", help="list the registered methods and exit")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="sweep a field over values (repeatable: the runs are the product), e.g. training.beta=0.1,0.5,1.0",
    )
    p.add_argument("--baseline", choices=["trl"], help="also run TRL's trainer for every method TRL has")
    p.add_argument(
        "--judge",
        default="auto",
        metavar="SPEC",
        help="rules:codereview, rules:FILE.py, auto (the data's own judge, if any; default) or none",
    )
    p.add_argument(
        "--judge-prompts",
        type=int,
        default=100,
        metavar="N",
        help="eval prompts each run answers for the judge (default 100)",
    )
    p.add_argument(
        "--tune",
        type=int,
        metavar="N",
        help="first choose each method's learning rate and knobs on the eval data, N trials per method",
    )
    p.add_argument(
        "--tune-space",
        action="append",
        default=[],
        metavar="[METHOD:]FIELD=RANGE",
        help="with --tune: a searched range for every method (learning_rate=log:1e-5..1e-3) or for one "
        "(dpo:beta=log:0.05..0.5); as orpo tune --space, repeatable",
    )
    p.add_argument(
        "--tune-objective",
        metavar="METRIC",
        help="with --tune: the metric the studies choose on (default: the judge's, e.g. "
        "judge:rules:codereview:f1, else eval_nll_loss)",
    )
    p.add_argument("--progress", action="store_true", help="show each run's progress bar")
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--json", action="store_true", help="print compare.json instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orpo.lab.compare.plan import list_methods, parse_grid, parse_methods

    if args.list_methods or args.methods == "":
        print(list_methods())
        return 0
    # Deferred: the launcher and the trainers' callbacks import transformers, which takes seconds.
    from orpo.cli.train import recipe_and_overrides
    from orpo.lab.compare.run import run_compare
    from orpo.lab.compare.tables import format_table

    config, overrides = recipe_and_overrides(args.config, args.overrides)
    methods = parse_methods(args.methods)
    grid = parse_grid(args.grid)
    tune = None
    if args.tune is None and (args.tune_space or args.tune_objective):
        raise ValueError("--tune-space and --tune-objective need --tune N (the trials per method)")
    if args.tune is not None:
        try:
            import optuna  # noqa: F401  (deferred: compare without --tune starts without it)
        except ModuleNotFoundError:
            raise ValueError("orpo compare --tune needs Optuna: pip install 'orpo[tune]'") from None
        from orpo.lab.compare.tuned import TuneRequest

        tune = TuneRequest(trials=args.tune, space=args.tune_space, objective=args.tune_objective)
    report = run_compare(
        config,
        overrides,
        methods,
        grid,
        args.baseline,
        progress=args.progress,
        judge=args.judge,
        judge_prompts=args.judge_prompts,
        tune=tune,
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report["runs"]))
        print("written: " + ", ".join(report["files"]), file=sys.stderr)
    return 0
