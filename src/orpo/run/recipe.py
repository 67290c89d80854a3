"""The YAML run config of ``orpo train``: sections for model, adapter, quantisation, data, training.

Each section is a dataclass whose fields are documented once in ``metadata["help"]``; the
``training`` section is any ``ORPOConfig`` field. ``load_recipe`` reads a file (or the embedded
default), applies ``key=value`` overrides (``training.beta=0.2``, or just ``beta=0.2`` for a
training field) and validates every section with messages that name the offending value.

    model:        {name: tiny:llama, dtype: float32, attn_implementation: sdpa}
    adapter:      {type: lora, r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear}  # or null
    quantization: {bits: 4}                                                                 # or null
    data:         {train: path/or/builtin:codereview, eval: null, eval_fraction: 0.1}
    training:     {output_dir: runs/x, beta: 0.1, max_steps: 100, ...}
"""

from __future__ import annotations

import codecs
import copy
import difflib
import enum
import math
import re
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Union

import yaml

from orpo.config import ORPOConfig

DEFAULT_RECIPE = "default.yaml"
TINY_PREFIX = "tiny:"  # model.name of a tiny random model built from a config
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
TRAINING_FIELDS = frozenset(ORPOConfig.__dataclass_fields__)
# field -> smallest valid value: ranges TrainingArguments does not check itself.
TRAINING_MINIMUMS = {
    "learning_rate": 0.0,
    "num_train_epochs": 0.0,
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "max_grad_norm": 0.0,
    "weight_decay": 0.0,
    "warmup_steps": 0.0,
}


@dataclass
class ModelSection:
    name: str = field(
        default="tiny:llama",
        metadata={
            "help": "Hub name or local path of a causal LM; 'tiny:ARCH' builds a tiny random model "
            "(llama, qwen2, mistral, gemma, phi3) with a tokenizer trained on the training data."
        },
    )
    dtype: str = field(
        default="auto", metadata={"help": "Weights dtype: auto, float32, bfloat16, float16, float64."}
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "sdpa, eager, flash_attention_2 (CUDA only; falls back to sdpa on CPU)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    chat_template: str | None = field(
        default=None, metadata={"help": "Chat template (Jinja string or file) replacing the tokenizer's."}
    )
    tiny: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "For tiny:ARCH: hidden_size, num_layers, num_heads, num_kv_heads, vocab_size, family."
        },
    )

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r} is not one of {', '.join(DTYPES)}")


@dataclass
class AdapterSection:
    type: str = field(default="lora", metadata={"help": "lora or dora."})
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    target_modules: Any = field(
        default="all-linear", metadata={"help": "Module names to adapt, or 'all-linear'."}
    )

    def __post_init__(self):
        if self.type not in ("lora", "dora"):
            raise ValueError(f"adapter.type={self.type!r} must be 'lora' or 'dora' (or set adapter: null)")
        if self.r < 1:
            raise ValueError(f"adapter.r={self.r} must be >= 1")
        if self.alpha <= 0:
            raise ValueError(f"adapter.alpha={self.alpha} must be > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"adapter.dropout={self.dropout} must be in [0, 1)")


@dataclass
class QuantSection:
    bits: int = field(default=4, metadata={"help": "4 (QLoRA, NF4) or 8."})
    quant_type: str = field(default="nf4", metadata={"help": "4-bit type: nf4 or fp4."})
    double_quant: bool = field(default=True, metadata={"help": "Quantise the quantisation constants too."})
    compute_dtype: str = field(default="bfloat16", metadata={"help": "Dtype of 4-bit matmuls."})

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"quantization.bits={self.bits} must be 4 or 8 (or set quantization: null)")


@dataclass
class DataSection:
    train: Any = field(
        default="builtin:codereview",
        metadata={
            "help": "A source (file, folder, glob, save_to_disk folder, hub name, builtin:NAME) or a "
            "list of {path, split, subset, columns, limit, fraction, format}."
        },
    )
    eval: Any = field(
        default=None, metadata={"help": "Eval source(s); none: carve eval_fraction from train."}
    )
    split: str = field(default="train", metadata={"help": "Split of the train source."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split of the eval source (or of train's source)."}
    )
    eval_fraction: float | None = field(
        default=0.05,
        metadata={"help": "Held-out fraction when no eval source is given (0: no eval set)."},
    )
    eval_size: int | None = field(
        default=None,
        metadata={"help": "Held-out rows when no eval source is given; replaces eval_fraction when set."},
    )
    encoding: str = field(
        default="utf-8",
        metadata={"help": "Text encoding of local .jsonl/.json/.csv files (e.g. latin-1, cp1252)."},
    )
    columns: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Column mapping overriding detection, e.g. {prompt: input, system: system}."},
    )
    format: str | None = field(default=None, metadata={"help": "Force a layout instead of detecting it."})

    def __post_init__(self):
        if self.eval_fraction is not None and not 0 <= self.eval_fraction < 1:
            raise ValueError(f"data.eval_fraction={self.eval_fraction} must be in [0, 1)")
        if self.eval_size is not None and self.eval_size < 1:
            raise ValueError(f"data.eval_size={self.eval_size} must be >= 1 (or null to use eval_fraction)")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"data.encoding={self.encoding!r} is not a known text encoding") from None
        for name in ("train", "eval"):
            _check_sources(f"data.{name}", getattr(self, name))


def _check_sources(label: str, value: Any) -> None:
    """A source list's mappings use SourceSpec's keys and name a path; caught here, not mid-training.

    A YAML flow mapping written without a space after its colons (``{path:x,limit:64}``) is one key
    ``path:x,limit:64`` to YAML, hence the hint."""
    if not isinstance(value, list):
        return
    from orpo.data.load import SourceSpec

    known = [f.name for f in fields(SourceSpec)]
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            continue
        unknown = [k for k in item if k not in known]
        if unknown:
            hint = " (in YAML flow style put a space after each colon: {path: x, limit: 64})"
            raise ValueError(
                f"{label}[{i}]: unknown key {unknown[0]!r}; use {', '.join(known)}"
                + (hint if ":" in str(unknown[0]) else "")
            )
        if "path" not in item:
            raise ValueError(f"{label}[{i}]: a source needs a path (e.g. {{path: pairs.jsonl, limit: 500}})")


SECTIONS = {
    "model": ModelSection,
    "adapter": AdapterSection,
    "quantization": QuantSection,
    "data": DataSection,
}


@dataclass
class Recipe:
    model: ModelSection
    adapter: AdapterSection | None
    quantization: QuantSection | None
    data: DataSection
    training: dict[str, Any]

    def training_args(self) -> ORPOConfig:
        return ORPOConfig(**self.training)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = asdict(section) if section is not None else None
        out["training"] = dict(self.training)
        return out


def _parse_override(text: str) -> tuple[list[str], Any]:
    """``key=value`` -> (path, value); a one-field key is a training field when ORPOConfig has it."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value (e.g. training.beta=0.2)")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) == 1 and path[0] not in SECTIONS and path[0] != "training":
        path = ["training", *path]
    _check_path(path, f"override {text!r}")
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


def _check_path(path: list[str], origin: str) -> None:
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


# ---- typed conversion: YAML gives strings for `5e-6`; fields are converted to their declared types


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


class _Origins:
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


# Fields whose YAML values are wider than their declared type: `resume_from_checkpoint: true` means
# "the newest complete checkpoint" (a path is the other form).
WIDER_TYPES = {"resume_from_checkpoint": bool | str | None}


def _convert_section(prefix: str, cls, values: dict, origins: _Origins) -> dict:
    hints = {**typing.get_type_hints(cls), **(WIDER_TYPES if cls is ORPOConfig else {})}
    out = {}
    for key, value in values.items():
        try:
            out[key] = convert_field(f"{prefix}.{key}", value, hints[key])
        except ValueError as err:
            raise ValueError(f"{origins.of(prefix, key)}: {err}") from None
    return out


def _section(name: str, cls, value, origins: _Origins):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{origins.of(name)}: `{name}` must be a mapping of fields, got {value!r}")
    converted = _convert_section(name, cls, value, origins)
    try:
        return cls(**converted)
    except ValueError as err:
        known = {f.name for f in fields(cls)}
        raise ValueError(f"{origins.blame(name, str(err), known)}: {err}") from None


def _training(values: dict, origins: _Origins, defaults: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"{origins.of('training')}: `training` must be a mapping of fields, got {values!r}")
    training = dict(values)
    # YAML 1.1 reads a bare `no` as False; the strategy fields mean the string "no".
    for key in ("eval_strategy", "evaluation_strategy", "save_strategy", "logging_strategy"):
        if training.get(key) is False:
            training[key] = "no"
    if training.get("report_to") is False:
        training["report_to"] = "none"
    for key, value in defaults.items():
        training.setdefault(key, value)
    training = _convert_section("training", ORPOConfig, training, origins)
    for key, low in TRAINING_MINIMUMS.items():
        value = training.get(key)
        if value is not None and value < low:
            raise ValueError(f"{origins.of('training', key)}: training.{key}={value!r} must be >= {low}")
    return training


# ---- what a YAML run gets for the training fields it leaves out
#
# The Python API keeps TRL's defaults, so that a TRL script behaves the same after changing its import.
# A YAML recipe is our CLI, not a TRL script: where TRL's defaults make a short run learn nothing
# visible (learning rate 1e-6, a log every 10 steps, output in ./trainer_output), it gets defaults
# that train. `orpo train --help-config` lists them with TRL's.

LEARNING_RATE_TINY = 1e-3
LEARNING_RATE_ADAPTER = 1e-4
LEARNING_RATE_FULL = 5e-6
LOGGING_RATIO = 0.02


def _short(x: float) -> str:
    """1e-3, not 0.001: learning rates as people write them."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


@dataclass(frozen=True)
class RecipeDefault:
    """A training field's default in a YAML recipe, where it departs from the Python API's."""

    shown: str  # the default as --help-config shows it
    why: str


RECIPE_DEFAULTS = {
    "learning_rate": RecipeDefault(
        f"{_short(LEARNING_RATE_TINY)} for tiny:ARCH models, {_short(LEARNING_RATE_ADAPTER)} with an adapter "
        f"(LoRA, DoRA, QLoRA), {_short(LEARNING_RATE_FULL)} for a full fine-tune",
        f"Peak learning rate of AdamW. A full fine-tune of a pretrained model: {_short(LEARNING_RATE_FULL)}, "
        "the low end of the 5e-6 to 1e-5 commonly used for preference fine-tuning of 1B-8B models (TRL's "
        "1e-6 barely moves a model in a short run). LoRA/DoRA/QLoRA train low-rank matrices that start at "
        f"zero, and take about 10-20x a full fine-tune's rate: {_short(LEARNING_RATE_ADAPTER)}, the low end "
        "of the usual 1e-4 to 2e-4 (preference losses overshoot sooner than SFT). tiny:ARCH models start "
        f"from random weights, as in pretraining: {_short(LEARNING_RATE_TINY)}.",
    ),
    "output_dir": RecipeDefault(
        "runs/<the config file's name without .yaml>",
        "The run folder: one per recipe, so that two recipes never write into each other's folder.",
    ),
    "logging_steps": RecipeDefault(
        f"{LOGGING_RATIO}, a fraction of the run's steps: about {round(1 / LOGGING_RATIO)} logs per run, "
        f"every step in runs of up to {round(1 / LOGGING_RATIO)} steps",
        "Log metrics every N optimizer steps, or this fraction of the run's steps when < 1 (TRL's 10 "
        "gives a short run one log or none: no loss curve to look at).",
    ),
    "tokenization": RecipeDefault(
        "'orpo'",
        "Our tokenisation (chat template on string rows for chat models, BOS as the tokenizer adds it, "
        "no token across the prompt/response boundary); 'trl' gives TRL 1.16's exact tokens, the Python "
        "API's default so that a TRL script gets TRL's tokens.",
    ),
}


def recipe_defaults(model: ModelSection, adapter: AdapterSection | None, stem: str) -> dict[str, Any]:
    """The values of ``RECIPE_DEFAULTS`` for a recipe with this model and adapter, read from ``stem``.yaml."""
    if model.name.startswith(TINY_PREFIX):
        learning_rate = LEARNING_RATE_TINY
    elif adapter is not None:
        learning_rate = LEARNING_RATE_ADAPTER
    else:
        learning_rate = LEARNING_RATE_FULL
    return {
        "learning_rate": learning_rate,
        "output_dir": f"runs/{stem}",
        "logging_steps": LOGGING_RATIO,
        "tokenization": "orpo",
    }


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
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


def load_recipe(path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML run config (None: the embedded default) and apply ``key=value`` overrides.

    Every value is converted to its field's declared type and checked (``ORPOConfig`` included)
    here, before anything is written: a bad config fails with one line and leaves no run folder.
    Training fields left out get ``RECIPE_DEFAULTS``.
    """
    if path is None:
        text = resources.files("orpo.resources").joinpath(DEFAULT_RECIPE).read_text()
        source, stem = "<embedded default>", Path(DEFAULT_RECIPE).stem
    else:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no such config file: {path}")
        text, source, stem = path.read_text(), str(path), path.stem
    try:
        raw = yaml.safe_load(text) or {}
        lines = _key_lines(text)
    except yaml.YAMLError as err:
        raise _yaml_error(source, err) from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"{source}: the top level must be a mapping with model/adapter/quantization/data/training"
        )
    raw = copy.deepcopy(raw)
    origins = _Origins(source, lines)
    for key, value in raw.items():
        _check_path([key], origins.at(str(key)))
        if isinstance(value, dict):
            for name in value:
                _check_path([key, str(name)], origins.at(str(key), str(name)))
    for item in overrides:
        keys, value = _parse_override(item)
        node = raw
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
        origins.overrides[tuple(keys[:2])] = f"override {item!r}"
    model = _section("model", ModelSection, raw.get("model", {}), origins) or ModelSection()
    adapter = _section("adapter", AdapterSection, raw.get("adapter"), origins)
    recipe = Recipe(
        model=model,
        adapter=adapter,
        quantization=_section("quantization", QuantSection, raw.get("quantization"), origins),
        data=_section("data", DataSection, raw.get("data", {}), origins) or DataSection(),
        training=_training(raw.get("training") or {}, origins, recipe_defaults(model, adapter, stem)),
    )
    try:
        recipe.training_args()
    except (TypeError, ValueError) as err:
        message = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
        raise ValueError(f"{origins.blame('training', message, TRAINING_FIELDS)}: {message}") from None
    return recipe


def _default_of(f) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def describe_fields() -> str:
    """Reference of every YAML field with its help string and the default a YAML recipe gets
    (for ``orpo train --help-config``); training fields whose recipe default differs from the Python
    API's (TRL's) are marked with TRL's value."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"{name}:")
        for f in fields(cls):
            lines.append(f"  {f.name} (default {_default_of(f)!r}): {f.metadata.get('help', '')}")
    by_name = {f.name: f for f in fields(ORPOConfig)}
    lines.append(
        "training: any ORPOConfig field (transformers' TrainingArguments plus the ORPO fields below). A YAML "
        "recipe gets the Python API's defaults, which are TRL's, except where marked [TRL: ...]:"
    )
    for name, default in RECIPE_DEFAULTS.items():
        api = _default_of(by_name[name])
        api = "trainer_output" if name == "output_dir" and api is None else api
        lines.append(f"  {name} (default {default.shown}) [TRL: {api!r}]: {default.why}")
    for f in fields(ORPOConfig):
        if f.name in ORPOConfig.__annotations__ and f.metadata.get("help") and f.name not in RECIPE_DEFAULTS:
            lines.append(f"  {f.name} (default {f.default!r}): {f.metadata['help']}")
    return "\n".join(lines)
