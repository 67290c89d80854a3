"""The recipe's schema: its sections, each field documented once in ``metadata["help"]``.

    model:        {name: tiny:llama, dtype: float32, attn_implementation: sdpa}
    adapter:      {type: lora, r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear}  # or null
    quantization: {bits: 4}                                                                 # or null
    data:         {train: path/or/builtin:codereview, eval: null, eval_fraction: 0.1}
    training:     {output_dir: runs/x, beta: 0.1, max_steps: 100, ...}

Each section is a dataclass that checks its own values; the ``training`` section is any
``ORPOConfig`` field, checked by ``ORPOConfig`` itself (``Recipe.training_args``).
"""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from orpo.config import ORPOConfig

TINY_PREFIX = "tiny:"  # model.name of a tiny random model built from a config
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
TRAINING_FIELDS = frozenset(ORPOConfig.__dataclass_fields__)


@dataclass
class ModelSection:
    name: str = field(
        default="tiny:llama",
        metadata={
            "help": "Hub name or local path of a causal LM, or a .gguf file (llama.cpp / Ollama; "
            "dequantized once and cached); 'tiny:ARCH' builds a tiny random model "
            "(llama, qwen2, mistral, gemma, phi3) with a tokenizer trained on the training data."
        },
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "A .gguf file inside the folder `name` (as transformers' gguf_file); the same as "
            "name: FOLDER/FILE.gguf, which is what the resolved config records."
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
        if self.gguf_file is not None:
            if not self.gguf_file.lower().endswith(".gguf"):
                raise ValueError(f"model.gguf_file={self.gguf_file!r} is not a .gguf file name")
            # One spelling from here on: every loader takes a .gguf path as the model name.
            self.name, self.gguf_file = str(Path(self.name) / self.gguf_file), None


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
    """A whole run config: the four sections, and the training fields as ``ORPOConfig`` takes them."""

    model: ModelSection
    adapter: AdapterSection | None
    quantization: QuantSection | None
    data: DataSection
    training: dict[str, Any]

    def training_args(self) -> ORPOConfig:
        """The run's ``ORPOConfig``; building it checks every training field (``ORPOConfig.__post_init__``)."""
        return ORPOConfig(**self.training)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = asdict(section) if section is not None else None
        out["training"] = dict(self.training)
        return out
