"""The demo's written rulebook: the team standards a code review must enforce.

The demo reproduces, at toy scale, the code-review case study reported for ORPO: a reviewer
is fine-tuned on pairs whose chosen review finds every violation of these rules and whose
rejected review misses one or makes a false comment. The rules are few and syntactic on
purpose, so that a model of a few million parameters can learn to spot them.

A `Violation` is one rule broken on one line; the generator (generator.py) produces them
and the judge (`judge.py`) scores reviews against them.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES: tuple[str, ...] = ("critical", "major", "minor")
"""Severity levels, most severe first."""


@dataclass(frozen=True)
class Rule:
    """One team standard.

    Attributes:
        id: short identifier used in reviews, e.g. ``"R2"``.
        name: the short phrase a review writes after the id, e.g. ``"eval on input"``.
        severity: one of ``SEVERITIES``; "critical" misses are what the demo measures most.
        description: what the rule forbids, for humans.
    """

    id: str
    name: str
    severity: str
    description: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.id}: severity {self.severity!r} is not one of {SEVERITIES}")


@dataclass(frozen=True)
class Violation:
    """Rule ``rule_id`` is broken on line ``line`` (1-based) of a snippet."""

    rule_id: str
    line: int


RULES: tuple[Rule, ...] = (
    Rule("R1", "function name not snake_case", "minor", "Function names are lower_snake_case."),
    Rule("R2", "eval on input", "critical", "Never call eval() or exec() on input data."),
    Rule("R3", "shell=True", "critical", "Never run subprocess with shell=True."),
    Rule("R4", "hard-coded secret", "critical", "Secrets come from the environment, never literals."),
    Rule("R5", "bare except", "major", "Catch named exceptions; a bare `except:` hides bugs."),
    Rule("R6", "mutable default", "major", "Default arguments are immutable (use None, not [] or {})."),
)

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}


def severity_rank(rule_id: str) -> int:
    """0 for critical, 1 for major, 2 for minor: sort by it to put the worst first."""
    return SEVERITIES.index(RULES_BY_ID[rule_id].severity)
