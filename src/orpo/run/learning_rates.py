"""The learning rates the commands use where the user gives none: one table, one entry per purpose.

``orpo train``'s recipe defaults (by kind of model), ``orpo tune``'s default search range, the demo's
base and its wider search range, and ``orpo bench`` read their rate here. An entry is one rate or a
``(low, high)`` log-uniform search range, with the reason it is what it is. The Python API
(``ORPOConfig``) keeps TRL's 1e-6 and does not read this table.

No heavy import: the CLI reads these at parse time (``orpo demo --help``, ``orpo bench --help``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LearningRate:
    """A rate (``value`` a float) or a log-uniform search range (``value`` a (low, high) pair), and why;
    ``{value}`` in ``why`` stands for the value as people write it (``explained``)."""

    value: float | tuple[float, float]
    why: str

    def shown(self) -> str:
        """``1e-3``, or ``1e-6..1e-3`` for a range."""
        if isinstance(self.value, tuple):
            return "..".join(short(x) for x in self.value)
        return short(self.value)

    def explained(self) -> str:
        return self.why.format(value=self.shown())


LEARNING_RATES: dict[str, LearningRate] = {
    # ---- `orpo train`: the default of a YAML recipe, by the kind of run (``RECIPE_RATES``)
    "full": LearningRate(
        5e-6,
        "A full fine-tune of a pretrained model: {value}, the low end of the 5e-6 to 1e-5 commonly used "
        "for preference fine-tuning of 1B-8B models (TRL's 1e-6 barely moves a model in a short run).",
    ),
    "adapter": LearningRate(
        1e-4,
        "LoRA/DoRA/QLoRA train low-rank matrices that start at zero, and take about 10-20x a full "
        "fine-tune's rate: {value}, the low end of the usual 1e-4 to 2e-4 (preference losses overshoot "
        "sooner than SFT).",
    ),
    # Also the demo's: its base and every run where no study chose the rate (a ~1M-parameter tiny Llama).
    "tiny": LearningRate(1e-3, "tiny:ARCH models start from random weights, as in pretraining: {value}."),
    # ---- the other commands
    "bench": LearningRate(
        1e-4,
        "`orpo bench` times TRL's steps and ours at the same rate, {value}: any rate that moves the "
        "weights without overflowing times the same, and the report states it.",
    ),
    "search": LearningRate(
        (1e-6, 1e-3),
        "`orpo tune` without --space searches {value}, log-uniform: the usual fine-tuning range, from "
        "TRL's default to the tiny-model rate.",
    ),
    "search_random_init": LearningRate(
        (1e-6, 3e-3),
        "The demo's studies search {value}: wider than `search` at the top (3x the `tiny` rate its base "
        "trains at), since the demo's model starts from random weights; from 1e-6, where a tuned SimPO "
        "landed in `orpo compare --tune`.",
    ),
    "search_lora": LearningRate(
        (1e-5, 1e-3),
        "The demo's studies on a pretrained model under LoRA (`orpo demo --base smollm2`) search {value}: "
        "a decade either side of the `adapter` rate. LoRA's matrices start at zero and take about 10x a "
        "full fine-tune's rate, and the demo's runs are a few dozen steps, in which the usual 1e-4..2e-4 "
        "may move the model too little for SFT and too far for a preference loss: the study decides.",
    ),
}
# The recipe defaults of `orpo train`, in the order --help-config explains them.
RECIPE_RATES = ("full", "adapter", "tiny")


def learning_rate(name: str) -> float:
    """The rate of entry ``name`` of ``LEARNING_RATES`` (a rate, not a search range)."""
    value = LEARNING_RATES[name].value
    if isinstance(value, tuple):
        raise ValueError(f"learning rate {name!r} is a search range; use learning_rate_space({name!r})")
    return value


def learning_rate_space(name: str) -> str:
    """The ``--space`` spec of search-range entry ``name``, e.g. ``learning_rate=log:1e-6..1e-3``."""
    value = LEARNING_RATES[name].value
    if not isinstance(value, tuple):
        raise ValueError(
            f"learning rate {name!r} is one rate, not a search range; use learning_rate({name!r})"
        )
    return f"learning_rate=log:{LEARNING_RATES[name].shown()}"


def short(x: float) -> str:
    """1e-3, not 0.001: learning rates as people write them (one significant digit)."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"
