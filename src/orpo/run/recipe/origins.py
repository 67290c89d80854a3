"""Where each value of a recipe came from, so that an error names it: a ``key=value`` override, a key of
the file (``FILE:LINE (section.field)``), or a default.

A check that involves several fields (``max_prompt_length`` against ``max_length``) is traced field by
field: ``Origins.blame`` finds the fields a message names and says where each was set.
"""

from __future__ import annotations

import re

import yaml


class Origins:
    """Where each value came from, for error messages: an override, a key of the file (with its line),
    else a default."""

    def __init__(self, source: str, lines: dict[tuple[str, ...], int]):
        self.source = source
        self.lines = lines  # (section,) or (section, field) -> line of the key in the file (1-based)
        self.overrides: dict[tuple[str, ...], str] = {}

    def at(self, *key: str) -> str:
        """``FILE:LINE`` of a key of the file (the file alone when the line is unknown)."""
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else self.source

    def set_by(self, *key: str) -> str | None:
        """The override or the file key that set ``key`` (or its whole section), None for a default."""
        for n in range(len(key), 0, -1):
            if key[:n] in self.overrides:
                return self.overrides[key[:n]]
        if key in self.lines:
            return f"{self.at(*key)} ({'.'.join(key)})"
        return None

    def of(self, *key: str) -> str:
        return self.set_by(*key) or self.source

    def blame(self, section: str, message: str, known) -> str:
        """The origins of the fields of ``section`` that a validation ``message`` names.

        A check may involve several fields (``max_prompt_length`` against ``max_length``): each field
        named as ``field=`` (or ``section.field=``), or named bare when the recipe set it, is traced to
        the override or file key that set it, or said to be the default. A message naming no field
        falls back to the file and the section's overrides: the check read them all.
        """
        named: dict[str, int] = {}  # field -> where the message first names it
        for m in re.finditer(rf"(?<![\w.])(?:{section}\.)?(\w+)=", message):
            named.setdefault(m.group(1), m.start())
        for m in re.finditer(r"\w+", message):  # "--load_best_model_at_end requires ...": no value
            if self.set_by(section, m.group(0)):
                named.setdefault(m.group(0), m.start())
        fields_named = sorted((f for f in named if f in known), key=named.get)
        origins = [self.set_by(section, f) for f in fields_named]
        if any(origins):
            return " and ".join(o or f"the default of {section}.{f}" for o, f in zip(origins, fields_named))
        overrides = [o for key, o in self.overrides.items() if key[0] == section]
        return f"{self.source} with {', '.join(overrides)}" if overrides else self.source


def qualify(section: str, message: str, known) -> str:
    """``message`` with each ``field=`` of ``section`` written ``section.field=``, as a recipe names every
    field (``ORPOConfig`` says ``beta=-1.0``; in a recipe that is ``training.beta=-1.0``)."""
    return re.sub(
        r"(?<![\w.-])(\w+)=",
        lambda m: f"{section}.{m.group(0)}" if m.group(1) in known else m.group(0),
        message,
    )


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """(section,) and (section, field) -> the line (1-based) of that key in a YAML text."""
    lines: dict[tuple[str, ...], int] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        section = str(key.value)
        lines[(section,)] = key.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                lines[(section, str(sub.value))] = sub.start_mark.line + 1
    return lines
