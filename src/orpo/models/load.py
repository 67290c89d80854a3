"""Load and prepare the policy model: from a name (a Hub id, a folder, a ``.gguf`` file), quantised (QLoRA), wrapped with PEFT adapters.

One model in memory: ORPO needs no reference model. Everything here is a thin layer over
transformers and PEFT; the choices it makes are the ones a CPU or GPU user expects:
- a CUDA-only attention implementation on a machine without CUDA falls back to SDPA with a notice;
- a k-bit model is prepared with ``prepare_model_for_kbit_training`` before adapters are added;
- gradient checkpointing with frozen embeddings gets input gradients enabled, else no gradient flows;
- dropout is disabled when asked (ORPO's log-probs should not be noisy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel

from orpo._log import notice
from orpo.models.gguf import gguf_folder, is_gguf

CUDA_ONLY_ATTENTION = ("flash_attention_2", "flash_attention_3")
# A name ending so is a weights file on disk, never a Hub name.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")


def missing_local_path(name: str) -> str | None:
    """ "no such local path NAME" when ``name`` is not on disk and was meant as a local path (it
    starts with ``.``, ``/`` or ``~``, has a backslash or two slashes, ends in a weights file's
    suffix, or its parent folder exists here); None otherwise (on disk, or a Hub name such as
    ``org/model``). Without it, transformers looks the typo up on the Hub and reports a network error."""
    path = Path(name)
    if path.exists():
        return None
    local = (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") >= 2
        or name.endswith(MODEL_FILE_SUFFIXES)
        or (str(path.parent) != "." and path.parent.is_dir())
    )
    return f"no such local path {name}" if local else None


def load_cause(name: str, err: BaseException) -> str:
    """One line on why ``name`` did not load: a name not on disk was also tried on the Hub, so say both."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if Path(name).exists():
        return first
    return f"no local folder {name} here, and as a Hugging Face Hub name: {first}"


def _resolve_dtype(value: Any) -> Any:
    if value is None or value == "auto" or isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, value, None) if isinstance(value, str) else None
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ValueError(
        f"dtype={value!r} is not a floating-point torch dtype name (float32, bfloat16, float16, float64) "
        "or 'auto'"
    )


def load_model(
    name: str, init_kwargs: dict[str, Any] | None = None, trust_remote_code: bool = False
) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` with CPU-safe defaults; kwargs as TRL's model_init_kwargs."""
    if is_gguf(name):
        name = str(gguf_folder(name))
    kwargs = dict(init_kwargs or {})
    if "torch_dtype" in kwargs:  # old name, still in many tutorials
        kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
    kwargs["dtype"] = _resolve_dtype(kwargs.get("dtype", "auto"))
    kwargs.setdefault("trust_remote_code", trust_remote_code)
    has_cuda = torch.cuda.is_available()
    if kwargs.get("attn_implementation") in CUDA_ONLY_ATTENTION and not has_cuda:
        notice(f"attn_implementation={kwargs['attn_implementation']!r} needs a CUDA GPU; using 'sdpa'")
        kwargs["attn_implementation"] = "sdpa"
    quant = kwargs.get("quantization_config")
    if isinstance(quant, dict):
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant)
    if has_cuda:
        kwargs.setdefault("device_map", "auto")
    missing = missing_local_path(name)
    if missing is not None:
        raise ValueError(f"cannot load model {name!r}: {missing}")
    try:
        return AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as err:
        raise ValueError(f"cannot load model {name!r}: {load_cause(name, err)}") from err


def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None):
    if is_gguf(name):
        name = str(gguf_folder(name))
    missing = missing_local_path(name)
    if missing is not None:
        raise ValueError(f"cannot load tokenizer {name!r}: {missing}")
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    except OSError as err:
        raise ValueError(f"cannot load tokenizer {name!r}: {load_cause(name, err)}") from err


def ensure_pad_token(tokenizer, model: torch.nn.Module | None = None) -> None:
    """Give a tokenizer without a pad token its EOS as pad (padding is masked, so its id is irrelevant)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def is_kbit(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_model(model: torch.nn.Module, args, peft_config=None) -> torch.nn.Module:
    """Add adapters, k-bit preparation and checkpointing hooks as ``args`` and ``peft_config`` ask."""
    gradient_checkpointing = bool(args.gradient_checkpointing)
    if peft_config is not None:
        from peft import PeftConfig, get_peft_model, prepare_model_for_kbit_training

        if not isinstance(peft_config, PeftConfig):
            raise ValueError(
                f"peft_config must be a peft.PeftConfig (e.g. LoraConfig), got {type(peft_config).__name__}"
            )
        if hasattr(model, "peft_config"):
            raise ValueError(
                "the model already has PEFT adapters and a peft_config was given too; merge the adapters "
                "first or pass no peft_config"
            )
        if is_kbit(model):
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            )
        elif gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, peft_config)
    elif gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    if args.disable_dropout:
        disable_dropout(model)
    return model
