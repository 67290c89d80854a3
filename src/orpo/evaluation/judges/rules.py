"""``rules:FILE.py`` judge: a Python function scores each completion; B wins an item on a chosen metric.

The file defines ``judge(prompt, completion, reference) -> dict[str, float]`` (task metrics of one
completion; ``reference`` is the line's reference answer or None). Optional module attributes:
``LOWER_IS_BETTER`` (metric names where less is better, e.g. error counts) and ``PAIRWISE_METRIC``
(the metric that decides wins; default: the first key ``judge`` returns; ``--metric`` overrides).

``rules:codereview`` is the builtin code-review judge (``orpo.tasks.codereview.judge``): the reference is the
chosen review, whose findings are the snippet's true violations.

B wins an item when its pairwise metric is better; ``pointwise`` gives one completion's value of it
on its own (negated for a lower-is-better metric, so higher is always better). Per model, every metric
is reported as a mean over items with a bootstrap 95% interval.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from orpo.evaluation.judges.base import Item, Verdict
from orpo.evaluation.stats import bootstrap_interval

BUILTIN = {"codereview": "orpo.evaluation.judges.codereview"}


def load_rules(spec: str):
    """The module of ``rules:SPEC``: a builtin name or a path to a .py file defining ``judge``."""
    if spec in BUILTIN:
        module = importlib.import_module(BUILTIN[spec])
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(
                f"rules:{spec}: no such file; give a .py file defining judge(prompt, completion, reference) "
                f"or a builtin ({', '.join(BUILTIN)})"
            )
        loader_spec = importlib.util.spec_from_file_location(f"orpo_rules_{path.stem}", path)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    if not callable(getattr(module, "judge", None)):
        raise ValueError(f"rules:{spec} defines no function judge(prompt, completion, reference) -> dict")
    return module


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _where(err: BaseException, module) -> str:
    """``FILE, line N`` of the deepest frame of ``err`` in the rules file (else the file alone)."""
    path = getattr(module, "__file__", None) or "?"
    line = None
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}, line {line}" if line is not None else path


class RulesJudge:
    """Scores A's and B's completion of each item with the rule function; compares one metric."""

    kind = "rules"

    def __init__(self, spec: str, metric: str | None = None):
        self.spec = spec
        self.module = load_rules(spec)
        self.metric = metric or getattr(self.module, "PAIRWISE_METRIC", None)
        self.lower_is_better = set(getattr(self.module, "LOWER_IS_BETTER", ()))
        self.scores: dict[str, list[dict[str, float]]] = {"A": [], "B": []}

    def score(self, item: Item, completion: str) -> dict[str, float]:
        """The rule function's metrics of one completion of ``item``; one-line errors on bad returns."""
        try:
            result = self.module.judge(item.prompt, completion, item.reference)
        except Exception as err:  # the user's rule failed on this item: name where, not our traceback
            raise ValueError(
                f"rules:{self.spec}: judge() raised {type(err).__name__}: {_first_line(err)} on id {item.id} "
                f"({_where(err, self.module)}); fix the rule or the row"
            ) from err
        if not isinstance(result, dict) or not result:
            raise ValueError(
                f"rules:{self.spec}: judge() returned {result!r} for id {item.id}; return a dict of metrics"
            )
        bad = {
            k: v for k, v in result.items() if not isinstance(v, (int, float, bool)) or not math.isfinite(v)
        }
        if bad:
            raise ValueError(
                f"rules:{self.spec}: judge() returned non-numeric metrics {bad} for id {item.id}"
            )
        return {k: float(v) for k, v in result.items()}

    def value(self, metrics: dict[str, float]) -> float:
        """The pairwise metric of one completion's ``metrics``, negated when lower is better, so that a
        higher value is always the better completion."""
        self.metric = self.metric or next(iter(metrics))
        if self.metric not in metrics:
            raise ValueError(
                f"rules:{self.spec}: no metric {self.metric!r}; judge() returns {sorted(metrics)}"
            )
        value = metrics[self.metric]
        return 0.0 - value if self.metric in self.lower_is_better else value  # 0.0 - 0.0 is 0.0, not -0.0

    def pointwise(self, prompt: str, completion: str, reference: str | None, *, item_id: str = "?") -> float:
        """One completion's score on its own (higher is better; see ``value``): what ``judge`` compares."""
        return self.value(self.score(Item(item_id, prompt, completion, completion, reference), completion))

    def judge(self, items: list[Item]) -> list[Verdict]:
        verdicts = []
        for item in items:
            a, b = self.score(item, item.a), self.score(item, item.b)
            diff = self.value(b) - self.value(a)
            self.scores["A"].append(a)
            self.scores["B"].append(b)
            winner = "B" if diff > 0 else "A" if diff < 0 else "tie"
            verdicts.append(Verdict(item.id, winner, {"A": a, "B": b}))
        return verdicts

    def per_model(self) -> dict[str, dict[str, dict[str, float]]]:
        """model -> metric -> {mean, ci_low, ci_high} over the items judged."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for model, rows in self.scores.items():
            metrics = {}
            for name in rows[0] if rows else []:
                values = np.array([r[name] for r in rows])
                low, high = bootstrap_interval(values)
                metrics[name] = {"mean": float(values.mean()), "ci_low": low, "ci_high": high}
            out[model] = metrics
        return out

    def settings(self) -> dict:
        return {
            "kind": "rules",
            "rules": self.spec,
            "metric": self.metric,
            "higher_is_better": self.metric not in self.lower_is_better,
        }
