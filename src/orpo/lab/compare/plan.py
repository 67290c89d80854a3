"""What ``orpo compare`` runs: the methods and grid from the command line, the runs they make, the judge.

runs = methods x grid values; a method may name its reference mode: dpo:precomputed,
       dpo:adapter, dpo:model (see ``orpo.engine.refpass``); bare dpo uses the adapter-disabled base
       when the recipe has an adapter, else a frozen copy of the initial model
judge = where the eval prompts have a task judge (data.eval, or data.train when the eval set is
        carved from it: builtin:codereview -> rules:codereview), or ``judge="rules:FILE.py"``;
        checked here, before any run starts
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from orpo.engine.refpass import MODES as REF_MODES
from orpo.evaluation.judges import parse_judge
from orpo.lab.trl_baseline import TRL_TRAINERS
from orpo.losses import OBJECTIVES

# Eval prompts a task judge scores per run by default.
JUDGE_PROMPTS = 100


@dataclass
class RunSpec:
    """One run of a comparison: a label, the recipe overrides that make it, how to train it."""

    label: str
    method: str
    overrides: list[str]
    ref_mode: str | None = None
    impl: str = "orpo"

    @property
    def slug(self) -> str:
        keep = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.label)
        return keep.strip("_")


def list_methods() -> str:
    from orpo.losses import OBJECTIVES, describe

    modes = ", ".join(REF_MODES)
    with_ref = ", ".join(name for name, o in OBJECTIVES.items() if o.needs_reference)
    return f"{describe()}\nReference modes ({with_ref}): METHOD:MODE with MODE one of {modes}."


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
        runs.append(RunSpec(label=label, method=method, overrides=overrides, ref_mode=mode))
        if baseline == "trl" and method in TRL_TRAINERS:
            runs.append(
                RunSpec(label=f"{label} (trl)", method=method, overrides=overrides, ref_mode=mode, impl="trl")
            )
    return runs


# The task judge of each builtin data source (``--judge auto``).
TASK_JUDGES = {"builtin:codereview": "rules:codereview"}


def _source_paths(sources) -> list[str]:
    """The paths of a recipe's ``data.train`` or ``data.eval``: a path, or a list of paths and
    ``{path: ...}`` mappings."""
    items = sources if isinstance(sources, list) else [sources]
    return [str(s.get("path") if isinstance(s, dict) else s) for s in items]


def task_judge(data) -> str | None:
    """The judge of the prompts a run answers for judging: the eval prompts, so the eval source's
    task judge (``data.eval``; the train source when the eval set is carved from it). Every source
    must share it: None otherwise (the pairs -> compare workflow trains on a user's pairs file and
    evaluates on builtin:codereview, whose judge then applies)."""
    sources = _source_paths(data.eval if data.eval is not None else data.train)
    judges = {TASK_JUDGES.get(path) for path in sources}
    return judges.pop() if len(judges) == 1 else None


def resolve_judge(judge: str | None, data) -> str | None:
    """The rules judge a comparison scores with (see ``run_compare``), checked before any run starts;
    ``data`` is the recipe's data section (``auto``: its ``task_judge``)."""
    if judge is None or judge == "none":
        return None
    if judge == "auto":
        return task_judge(data)
    spec = parse_judge(judge)
    if spec.kind.name != "rules":
        raise ValueError(
            f"--judge {judge}: compare scores each run on its own, so it takes a rules judge "
            "(rules:codereview or rules:FILE.py), auto or none; compare two runs pairwise with `orpo judge`"
        )
    spec.scorer()  # a missing file or a file without judge() is a one-line error now, not after training
    return judge
