"""Typed conversion: YAML values and ``key=value`` overrides become the fields' declared types.

YAML 1.1 reads ``5e-6`` as a string and a bare ``no`` as False; ``convert_field`` turns each value into
its field's declared type (``float``, ``int | None``, ...) or raises one line naming the field and what
it expects. ``parse_override`` reads ``training.beta=0.2`` (or ``beta=0.2``, a training field) and
``check_path`` refuses a section or field that does not exist, suggesting the nearest name.
"""

from __future__ import annotations

import difflib
import enum
import math
import typing
from dataclasses import fields
from types import UnionType
from typing import Any, Union

import yaml

from orpo.config import ORPOConfig
from orpo.run.recipe.origins import Origins
from orpo.run.recipe.schema import SECTIONS, TRAINING_FIELDS


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key=value`` -> (path, value); a one-field key is a training field when ORPOConfig has it."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value (e.g. training.beta=0.2)")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) == 1 and path[0] not in SECTIONS and path[0] != "training":
        path = ["training", *path]
    check_path(path, f"override {text!r}")
    if not raw.strip():
        return path, None
    try:
        return path, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        reason = str(err).splitlines()[0]
        raise ValueError(f"override {text!r}: the value is not valid YAML ({reason})") from None


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def check_path(path: list[str], origin: str) -> None:
    """Refuse a section or field that does not exist, naming where it came from and the nearest name."""
    section = path[0]
    if section not in SECTIONS and section != "training":
        known = [*SECTIONS, "training", *TRAINING_FIELDS]
        raise ValueError(
            f"{origin}: unknown key {section!r}{_suggest(section, known)} "
            f"(sections: {', '.join([*SECTIONS, 'training'])}; see `orpo train --help-config`)"
        )
    if len(path) < 2:
        return
    known = TRAINING_FIELDS if section == "training" else {f.name for f in fields(SECTIONS[section])}
    if path[1] not in known:
        raise ValueError(
            f"{origin}: unknown {section} field {path[1]!r}{_suggest(path[1], known)} "
            "(see `orpo train --help-config`)"
        )


def _describe(hint) -> str:
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
    args = typing.get_args(hint) if typing.get_origin(hint) in (Union, UnionType) else (hint,)
    parts = []
    for arg in args:
        if arg is type(None):
            parts.append("null")
        elif arg in names:
            parts.append(names[arg])
        elif typing.get_origin(arg) is dict or arg is dict:
            parts.append("a mapping")
        elif typing.get_origin(arg) is list or arg is list:
            parts.append("a list")
        else:
            parts.append(getattr(arg, "__name__", str(arg)))
    return " or ".join(dict.fromkeys(parts))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _convert_one(value: Any, hint) -> tuple[bool, Any]:
    """(converted?, value) of ``value`` as the single type ``hint``."""
    if hint is Any:
        return True, value
    if hint is type(None):
        return value is None, None
    if hint is bool:
        if isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return True, value.strip().lower() == "true"
        return False, None
    if hint is float:
        number = _number(value)
        return number is not None, number
    if hint is int:
        number = _number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            return False, None
        return True, int(number)
    if hint is str:
        if isinstance(value, str):
            return True, value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, None
    origin = typing.get_origin(hint) or hint
    if origin is typing.Literal:
        return value in typing.get_args(hint), value
    if isinstance(origin, type):
        if isinstance(value, origin):
            return True, value
        if issubclass(origin, enum.Enum) and isinstance(value, str):
            return True, value
        return False, None
    return True, value  # a typing construct we do not check: leave it to the field's own validation


def convert_field(name: str, value: Any, hint) -> Any:
    """``value`` as the declared type ``hint`` of field ``name``; ValueError naming what is expected."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    # Exact type first (so `1` stays an int for `int | float`), then conversions in declared order.
    for option in options:
        if option in (bool, int, float, str) and type(value) is option:
            return value
    for option in options:
        if option is str and len(options) > 1:
            continue  # only turn numbers into strings when a string is the one choice
        ok, converted = _convert_one(value, option)
        if ok:
            return converted
    if str in options and isinstance(value, str):
        return value
    raise ValueError(f"{name}={value!r} is not {_describe(hint)}")


# Fields whose YAML values are wider than their declared type: `resume_from_checkpoint: true` means
# "the newest complete checkpoint" (a path is the other form).
WIDER_TYPES = {"resume_from_checkpoint": bool | str | None}


def convert_section(prefix: str, cls, values: dict, origins: Origins) -> dict:
    """Each of ``values`` (fields of section ``prefix``, dataclass ``cls``) as its declared type; an error
    names the override or the file key that set the value."""
    hints = {**typing.get_type_hints(cls), **(WIDER_TYPES if cls is ORPOConfig else {})}
    out = {}
    for key, value in values.items():
        try:
            out[key] = convert_field(f"{prefix}.{key}", value, hints[key])
        except ValueError as err:
            raise ValueError(f"{origins.of(prefix, key)}: {err}") from None
    return out


def training_values(values: dict, origins: Origins) -> dict[str, Any]:
    """The ``training`` section's values as ``ORPOConfig`` takes them (YAML's readings undone, each
    converted to its field's type); their ranges are ``ORPOConfig``'s to check."""
    if not isinstance(values, dict):
        raise ValueError(f"{origins.of('training')}: `training` must be a mapping of fields, got {values!r}")
    training = dict(values)
    # YAML 1.1 reads a bare `no` as False; the strategy fields mean the string "no".
    for key in ("eval_strategy", "evaluation_strategy", "save_strategy", "logging_strategy"):
        if training.get(key) is False:
            training[key] = "no"
    if training.get("report_to") is False:
        training["report_to"] = "none"
    return convert_section("training", ORPOConfig, training, origins)
