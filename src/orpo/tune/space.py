"""``--space`` specs of ``orpo tune``: which recipe fields a study chooses, and from what.

    learning_rate=log:1e-6..1e-3     float, log-uniform (bounds > 0)
    warmup_steps=0.0..0.2            float, uniform (a fraction of the steps)
    num_train_epochs=int:1..3        integer, uniform (an integer field is an integer range anyway)
    beta=0.05,0.1,0.2,0.5            categorical: two or more values, comma-separated
    adapter.r=int:log:4..64          integer, log-uniform

The field is any recipe field, by its dotted name (``adapter.r``, ``training.beta``) or, for a
training field, its short name (``beta``), exactly as ``orpo train``'s ``key=value`` overrides.
``check_space`` loads the recipe with every bound and every value, so a wrong field, a value of the
wrong type or one the field refuses is one line before the first trial. Without ``--space``, the
learning rate and the recipe's objective's knobs are searched (``default_space``); ``orpo compare
--tune`` searches that default per method, changed by its ``--tune-space`` specs (``method_spaces``).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from types import UnionType
from typing import Any, Union

import yaml

from orpo.config import ORPOConfig
from orpo.run.learning_rates import learning_rate_space
from orpo.run.recipe import SECTIONS, load_recipe

EXAMPLES = "e.g. learning_rate=log:1e-6..1e-3, beta=0.05,0.1,0.2, num_train_epochs=int:1..3"
# Without --space: the learning rate over the usual fine-tuning range (the table's `search` entry), and
# the recipe's objective's own knobs over their usual ranges (``Objective.search_space`` in the loss registry).
LEARNING_RATE_SPACE = learning_rate_space("search")


def default_space(method: str) -> list[str]:
    """The ``--space`` specs ``orpo tune`` searches when none is given, for objective ``method``."""
    from orpo.losses import get_objective

    return [LEARNING_RATE_SPACE, *get_objective(method).search_space]


@dataclass(frozen=True)
class Param:
    """One searched field: ``kind`` float | int | categorical; ``low``/``high`` for ranges."""

    name: str  # as overrides take it: `beta` for a training field, `adapter.r` otherwise
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    spec: str = ""  # the text it came from, for messages

    def distribution(self):
        """The Optuna distribution this parameter is sampled from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def override(self, value: Any) -> str:
        """``name=value`` for ``load_recipe``; floats in full precision (repr), so the run is the trial."""
        return f"{self.name}={value!r}" if isinstance(value, float) else f"{self.name}={value}"


def _canonical(key: str) -> list[str]:
    path = key.strip().split(".")
    if len(path) == 2 and path[0] == "training":
        path = path[1:]
    return path


def field_hint(path: list[str]):
    """The declared type of recipe field ``path`` (``['beta']`` or ``['adapter', 'r']``); None if unknown."""
    if len(path) == 1:
        return typing.get_type_hints(ORPOConfig).get(path[0])
    cls = SECTIONS.get(path[0])
    if cls is None or len(path) != 2 or path[1] not in {f.name for f in fields(cls)}:
        return None
    return typing.get_type_hints(cls)[path[1]]


def _is_int_field(hint) -> bool:
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, UnionType) else (hint,)
    numbers = [o for o in options if o in (int, float)]
    return numbers == [int]


def _number(text: str, where: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{where}: {text.strip()!r} is not a number ({EXAMPLES})") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: bounds must be finite numbers, got {text.strip()!r}")
    return value


def _choice(text: str) -> Any:
    """One categorical value as YAML reads it; `1e-3` (a string to YAML 1.1) becomes the number."""
    value = yaml.safe_load(text.strip()) if text.strip() else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if value is not None and not isinstance(value, (bool, int, float)):
        raise ValueError(f"categorical value {text.strip()!r} is not a number, string or boolean")
    return value


def parse_param(spec: str, flag: str = "--space", shown: str | None = None) -> Param:
    """One ``--space`` spec as a ``Param`` (the syntax only; ``check_space`` checks it against the recipe).

    ``flag`` and ``shown`` (the text as the user typed it, default ``spec``) name it in messages.
    """
    shown = spec if shown is None else shown
    where = f"{flag} {shown}"
    if "=" not in spec:
        raise ValueError(f"{where}: not FIELD=RANGE or FIELD=V1,V2,... ({EXAMPLES})")
    key, body = (part.strip() for part in spec.split("=", 1))
    path = _canonical(key)
    if not key or not body:
        raise ValueError(f"{where}: not FIELD=RANGE or FIELD=V1,V2,... ({EXAMPLES})")
    name = ".".join(path)
    if ".." not in body:
        if body.split(":")[0] in ("log", "int"):
            raise ValueError(f"{where}: {body.split(':', 1)[1]!r} is not a range LO..HI ({EXAMPLES})")
        if "," not in body:
            raise ValueError(
                f"{where}: one value is not a search space; give a range LO..HI or two or more "
                f"values ({EXAMPLES})"
            )
        try:
            choices = tuple(_choice(v) for v in body.split(","))
        except (ValueError, yaml.YAMLError) as err:
            raise ValueError(f"{where}: {str(err).splitlines()[0]}") from None
        if len(set(choices)) != len(choices):
            raise ValueError(f"{where}: a value is listed twice")
        return Param(name, "categorical", choices=choices, spec=shown)
    prefixes, _, bounds = body.rpartition(":")
    words = [w for w in prefixes.split(":") if w] if prefixes else []
    unknown = [w for w in words if w not in ("log", "int")]
    if unknown:
        raise ValueError(f"{where}: unknown prefix {unknown[0]!r} (log:, int: or int:log:)")
    lo_text, _, hi_text = bounds.partition("..")
    low, high = _number(lo_text, where), _number(hi_text, where)
    log, kind = "log" in words, "int" if "int" in words else "float"
    if kind == "float" and _is_int_field(field_hint(path)):
        kind = "int"  # an integer field searched over a range: integers of that range
    if kind == "int":
        if low != int(low) or high != int(high):
            raise ValueError(f"{where}: {name} is an integer; give integer bounds")
        low, high = int(low), int(high)
    if low >= high:
        raise ValueError(f"{where}: the low bound {low:g} must be below the high bound {high:g}")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range needs a low bound > 0, got {low:g}")
    return Param(name, kind, low=low, high=high, log=log, spec=shown)


def _refuse_twice(params: list[Param], flag: str) -> None:
    seen: dict[str, str] = {}
    for p in params:
        if p.name in seen:
            raise ValueError(f"{flag} {p.spec}: {p.name} is already searched by {flag} {seen[p.name]}")
        seen[p.name] = p.spec


def parse_space(specs: list[str], flag: str = "--space") -> list[Param]:
    """Every ``--space`` spec parsed; a field searched twice is refused."""
    params = [parse_param(s, flag) for s in specs]
    _refuse_twice(params, flag)
    return params


def check_space(params: list[Param], config: str | None, overrides: list[str], flag: str = "--space") -> None:
    """Load the recipe with each bound and each value of every parameter (the others at the base
    recipe's values): the recipe's own checks (field names, types, minimums, ``ORPOConfig``) then
    speak for the space, one line naming the spec."""
    for p in params:
        values = p.choices if p.kind == "categorical" else (p.low, p.high)
        for value in values:
            try:
                load_recipe(config, [*overrides, p.override(value)])
            except ValueError as err:
                reason = str(err).strip().splitlines()[0]
                raise ValueError(f"{flag} {p.spec}: {reason}") from None


def loss_knobs() -> set[str]:
    """Fields that change the loss itself: the method and every objective's knobs (beta included)."""
    from orpo.losses import OBJECTIVES

    return {"method", "beta", *(k for o in OBJECTIVES.values() for k in o.knobs)}


def knobs_read(method: str) -> tuple[str, ...]:
    """The loss knobs objective ``method`` reads: ``beta`` (unless the registry says it is unused, as
    for SFT, whose loss is the NLL alone) and its own ``knobs``."""
    from orpo.losses import get_objective

    objective = get_objective(method)
    beta = () if objective.beta_means.startswith("unused") else ("beta",)
    return (*beta, *objective.knobs)


def refuse_unread(params: list[Param], method: str, flag: str = "--space") -> None:
    """Refuse a searched loss knob that objective ``method`` does not read: its trials would train the
    same model again and again, and the chosen value would mean nothing."""
    knobs = loss_knobs() - {"method"}
    reads = knobs_read(method)
    for p in params:
        if p.name in knobs and p.name not in reads:
            them = (
                f"it reads {', '.join(reads)}"
                if reads
                else "its loss reads no knob: search the learning rate or other training fields"
            )
            raise ValueError(f"{flag} {p.spec}: {method} does not read {p.name} ({them})")


def method_spaces(methods: list[str], specs: list[str], flag: str = "--tune-space") -> dict[str, list[Param]]:
    """The space of each method of ``orpo compare --tune``: ``default_space(method)``, in which the
    specs replace a field's range or add a field.

        FIELD=RANGE          every method (the learning rate, warmup, any field that means the same
                             for each); a loss knob is refused here: beta is lambda for ORPO, a
                             temperature for SimPO, the KL weight for DPO, with ranges apart
        METHOD:FIELD=RANGE   that method only (wins over FIELD=RANGE); the method must be compared
                             and read the field

    The syntax and its one-line errors are ``parse_param``'s; a field given twice at one level is refused.
    """
    knobs = loss_knobs()
    every: list[Param] = []
    scoped: dict[str, list[Param]] = {m: [] for m in methods}
    for spec in specs:
        key = spec.partition("=")[0]
        method, scope, _ = key.partition(":")
        inner = spec.partition(":")[2] if scope else spec
        p = parse_param(inner, flag, shown=spec)
        if p.name == "method":
            raise ValueError(
                f"{flag} {spec}: the method is what compare varies (--methods), not a searched field"
            )
        if not scope:
            if p.name in knobs:
                mine = ", ".join(f"{m}:{inner}" for m in methods)
                raise ValueError(
                    f"{flag} {spec}: {p.name} means something else for each method; give it per method ({mine})"
                )
            every.append(p)
            continue
        method = method.strip().lower()
        if method not in scoped:
            raise ValueError(
                f"{flag} {spec}: {method!r} is not a compared method (--methods {','.join(methods)})"
            )
        refuse_unread([p], method, flag)
        scoped[method].append(p)
    _refuse_twice(every, flag)
    spaces = {}
    for method in methods:
        _refuse_twice(scoped[method], flag)
        params = {p.name: p for p in parse_space(default_space(method))}
        params.update({p.name: p for p in [*every, *scoped[method]]})
        spaces[method] = list(params.values())
    return spaces
