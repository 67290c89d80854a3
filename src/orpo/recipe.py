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

import copy
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from orpo.config import ORPOConfig

DEFAULT_RECIPE = "default.yaml"


@dataclass
class ModelSection:
    name: str = field(
        default="tiny:llama",
        metadata={
            "help": "Hub name or local path of a causal LM; 'tiny:ARCH' builds a tiny random model "
            "(llama, qwen2, mistral, gemma, phi3) with a tokenizer trained on the training data."
        },
    )
    dtype: str = field(default="auto", metadata={"help": "Weights dtype: auto, float32, bfloat16, float16."})
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
    eval_fraction: float = field(
        default=0.05, metadata={"help": "Held-out fraction when no eval source is given."}
    )
    columns: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Column mapping overriding detection, e.g. {prompt: input, system: system}."},
    )
    format: str | None = field(default=None, metadata={"help": "Force a layout instead of detecting it."})


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
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value (e.g. training.beta=0.2)")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) == 1:
        path = ["training", *path] if path[0] in ORPOConfig.__dataclass_fields__ else path
    return path, yaml.safe_load(raw) if raw.strip() else None


def _section(name: str, cls, value):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be a mapping of fields, got {value!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"`{name}` has unknown field(s) {unknown}; known: {sorted(known)}")
    return cls(**value)


def load_recipe(path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML run config (None: the embedded default) and apply ``key=value`` overrides."""
    if path is None:
        text = resources.files("orpo.resources").joinpath(DEFAULT_RECIPE).read_text()
        source = "<embedded default>"
    else:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no such config file: {path}")
        text, source = path.read_text(), str(path)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"{source}: the top level must be a mapping with model/adapter/quantization/data/training"
        )
    raw = copy.deepcopy(raw)
    for item in overrides:
        keys, value = _parse_override(item)
        node = raw
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
    unknown = sorted(set(raw) - set(SECTIONS) - {"training"})
    if unknown:
        raise ValueError(
            f"{source}: unknown section(s) {unknown}; expected model, adapter, quantization, data, training"
        )
    training = dict(raw.get("training") or {})
    # YAML 1.1 reads a bare `no` as False; the strategy fields mean the string "no".
    for key in ("eval_strategy", "evaluation_strategy", "save_strategy", "logging_strategy"):
        if training.get(key) is False:
            training[key] = "no"
    if training.get("report_to") is False:
        training["report_to"] = "none"
    bad = sorted(set(training) - set(ORPOConfig.__dataclass_fields__))
    if bad:
        raise ValueError(f"{source}: unknown training field(s) {bad}; see `orpo train --help-config`")
    return Recipe(
        model=_section("model", ModelSection, raw.get("model", {})) or ModelSection(),
        adapter=_section("adapter", AdapterSection, raw.get("adapter")),
        quantization=_section("quantization", QuantSection, raw.get("quantization")),
        data=_section("data", DataSection, raw.get("data", {})) or DataSection(),
        training=training,
    )


def describe_fields() -> str:
    """Reference of every YAML field with its help string (for ``orpo train --help-config``)."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"{name}:")
        for f in fields(cls):
            default = (
                f.default
                if f.default is not MISSING
                else (f.default_factory() if f.default_factory is not MISSING else None)
            )
            lines.append(f"  {f.name} (default {default!r}): {f.metadata.get('help', '')}")
    lines.append("training: any ORPOConfig field, including:")
    for f in fields(ORPOConfig):
        if f.name in ORPOConfig.__annotations__ and f.metadata.get("help"):
            lines.append(f"  {f.name} (default {f.default!r}): {f.metadata['help']}")
    return "\n".join(lines)
