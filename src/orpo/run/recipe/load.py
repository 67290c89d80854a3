"""Building a ``Recipe``: from a YAML file (or the embedded default) with ``key=value`` overrides
(``load_recipe``), or from Python values (``recipe_from``, the demo's runs).

Either way the training fields left out get ``RECIPE_DEFAULTS`` (``eval_steps`` without a strategy
implies ``eval_strategy: steps``) and every value is checked by its
section's dataclass or by ``ORPOConfig``; a file's errors also say where the value came from
(``FILE:LINE (section.field)``, ``override 'key=value'``, or the default).
"""

from __future__ import annotations

import copy
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from orpo.run.recipe.convert import check_path, convert_section, parse_override, training_values
from orpo.run.recipe.defaults import imply_eval_strategy, recipe_defaults
from orpo.run.recipe.origins import Origins, key_lines, qualify
from orpo.run.recipe.schema import (
    TRAINING_FIELDS,
    AdapterSection,
    DataSection,
    ModelSection,
    QuantSection,
    Recipe,
)

DEFAULT_RECIPE = "default.yaml"


def load_recipe(path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML run config (None: the embedded default) and apply ``key=value`` overrides.

    Every value is converted to its field's declared type and checked (``ORPOConfig`` included)
    here, before anything is written: a bad config fails with one line and leaves no run folder.
    Training fields left out get ``RECIPE_DEFAULTS``.
    """
    text, source, stem = _read(path)
    try:
        raw = yaml.safe_load(text) or {}
        lines = key_lines(text)
    except yaml.YAMLError as err:
        raise _yaml_error(source, err) from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"{source}: the top level must be a mapping with model/adapter/quantization/data/training"
        )
    origins = Origins(source, lines)
    _check_keys(raw, origins)
    raw = _with_overrides(copy.deepcopy(raw), overrides, origins)
    return _build(raw, origins, stem)


def recipe_from(
    training: dict[str, Any],
    *,
    model: ModelSection | None = None,
    adapter: AdapterSection | None = None,
    quantization: QuantSection | None = None,
    data: DataSection | None = None,
    stem: str = "python",
) -> Recipe:
    """A recipe built from Python values, as ``load_recipe`` builds one from a file: the training fields
    left out get ``RECIPE_DEFAULTS`` for this model and adapter (the run folder ``runs/<stem>``).

    The values are taken as given: they are typed already, so none is converted (an int stays an int
    where YAML's would become the field's float). ``training_args()`` checks them all (``ORPOConfig``).
    """
    model = model or ModelSection()
    values = dict(training)
    imply_eval_strategy(values)
    for key, value in recipe_defaults(model, adapter, stem).items():
        values.setdefault(key, value)
    return Recipe(
        model=model, adapter=adapter, quantization=quantization, data=data or DataSection(), training=values
    )


def _read(path: str | Path | None) -> tuple[str, str, str]:
    """(text, source as errors name it, stem the run folder is named after) of a recipe file."""
    if path is None:
        text = resources.files("orpo.resources").joinpath(DEFAULT_RECIPE).read_text()
        return text, "<embedded default>", Path(DEFAULT_RECIPE).stem
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such config file: {path}")
    return path.read_text(), str(path), path.stem


def _check_keys(raw: dict, origins: Origins) -> None:
    """Every section and field of the file exists (else the nearest name, with the key's line)."""
    for key, value in raw.items():
        check_path([key], origins.at(str(key)))
        if isinstance(value, dict):
            for name in value:
                check_path([key, str(name)], origins.at(str(key), str(name)))


def _with_overrides(raw: dict, overrides: list[str], origins: Origins) -> dict:
    """``raw`` with each ``key=value`` applied in order, each remembered as its value's origin."""
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
        origins.overrides[tuple(keys[:2])] = f"override {item!r}"
    return raw


def _build(raw: dict, origins: Origins, stem: str) -> Recipe:
    """The recipe of a file's values: each section converted and checked, then the training fields."""
    model = _section("model", ModelSection, raw.get("model", {}), origins) or ModelSection()
    adapter = _section("adapter", AdapterSection, raw.get("adapter"), origins)
    quantization = _section("quantization", QuantSection, raw.get("quantization"), origins)
    data = _section("data", DataSection, raw.get("data", {}), origins) or DataSection()
    training = training_values(raw.get("training") or {}, origins)
    imply_eval_strategy(training)
    for key, value in recipe_defaults(model, adapter, stem).items():
        training.setdefault(key, value)
    recipe = Recipe(model=model, adapter=adapter, quantization=quantization, data=data, training=training)
    try:
        recipe.training_args()
    except (TypeError, ValueError) as err:
        message = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
        where = origins.blame("training", message, TRAINING_FIELDS)
        raise ValueError(f"{where}: {qualify('training', message, TRAINING_FIELDS)}") from None
    return recipe


def _section(name: str, cls, value, origins: Origins):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{origins.of(name)}: `{name}` must be a mapping of fields, got {value!r}")
    converted = convert_section(name, cls, value, origins)
    try:
        return cls(**converted)
    except ValueError as err:
        known = {f.name for f in fields(cls)}
        raise ValueError(f"{origins.blame(name, str(err), known)}: {err}") from None


def _yaml_error(source: str, err: yaml.YAMLError) -> ValueError:
    """``FILE:LINE:COL: not valid YAML: problem (context)``, as compilers and editors point at a spot."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or problem is None:
        return ValueError(f"{source}: not valid YAML ({str(err).splitlines()[0]})")
    message = f"{source}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}"
    context, where = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and where is not None:
        message += f" ({context} that starts at {where.line + 1}:{where.column + 1})"
    if "\\t" in problem:
        message += "; indent with spaces, not tabs"
    return ValueError(message)
