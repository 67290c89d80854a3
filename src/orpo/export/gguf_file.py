"""Write a Hugging Face causal LM (Llama, Mistral, Qwen2) as a GGUF file for llama.cpp and Ollama.

The ``gguf`` package (llama.cpp's gguf-py) gives the file writer and the Q8_0 quantiser; the mapping
from Hugging Face names and config to GGUF tensors and keys is ours, written to match what llama.cpp's
``convert_hf_to_gguf.py`` writes for these architectures:

    Hugging Face                                   GGUF                       type (f16/bf16/q8_0 runs)
    model.embed_tokens.weight                      token_embd.weight          target type
    model.layers.N.input_layernorm.weight          blk.N.attn_norm.weight     f32 (1-D)
    model.layers.N.self_attn.q_proj.weight         blk.N.attn_q.weight        target type, rows permuted (llama)
    model.layers.N.self_attn.k_proj.weight         blk.N.attn_k.weight        target type, rows permuted (llama)
    model.layers.N.self_attn.v_proj.weight         blk.N.attn_v.weight        target type
    model.layers.N.self_attn.{q,k,v}_proj.bias     blk.N.attn_{q,k,v}.bias    f32 (Qwen2 only)
    model.layers.N.self_attn.o_proj.weight         blk.N.attn_output.weight   target type
    model.layers.N.post_attention_layernorm.weight blk.N.ffn_norm.weight      f32 (1-D)
    model.layers.N.mlp.gate_proj.weight            blk.N.ffn_gate.weight      target type
    model.layers.N.mlp.up_proj.weight              blk.N.ffn_up.weight        target type
    model.layers.N.mlp.down_proj.weight            blk.N.ffn_down.weight      target type
    model.norm.weight                              output_norm.weight         f32 (1-D)
    lm_head.weight                                 output.weight              target type; absent when tied

Dtypes, as the converter does: 1-D tensors and biases stay f32; 2-D weights take the target type; a
q8_0 weight whose rows are not a multiple of 32 values (one Q8_0 block) falls back to f16. Tied
embeddings write no ``output.weight`` (llama.cpp then uses ``token_embd`` for the output head).

Q/K permutation. Hugging Face's Llama applies rotary embeddings "rotate-half" style: dimension i of a
head is paired with dimension i + d/2. llama.cpp's ``llama`` architecture uses rope type NORM, which
pairs adjacent dimensions (2i, 2i+1). The converter therefore reorders the output rows of q_proj (per
head) and k_proj (per key/value head) so that row order (0, d/2, 1, d/2+1, ...) becomes adjacent pairs:
``W.reshape(n_head, 2, d/2, in).swapaxes(1, 2).reshape(out, in)``. Mistral is converted as ``llama``
and gets the same permutation. ``qwen2`` runs with rope type NEOX (rotate-half, like Hugging Face), so
the converter leaves its weights unpermuted, and so do we. ``tests/export`` checks the permuted q/k
give the same attention scores under adjacent-pair rotary as the originals under rotate-half.

Tokenizer: GPT-2-style byte-level BPE (Llama 3, Qwen2, GPT-2 and the tiny tokenizers of ``orpo.models.tiny``)
as the converter's ``_set_vocab_gpt2`` writes it: ``tokenizer.ggml.model = "gpt2"``, ``pre`` (which
pre-tokenizer regex llama.cpp applies, recognised from tokenizer.json), ``tokens`` (id order; ids the
model has but the tokenizer lacks become ``[PAD{id}]``), ``token_type`` (added special tokens CONTROL,
other added tokens USER_DEFINED, the rest NORMAL, missing ids UNUSED), ``merges``, the bos / eos / pad /
unk ids, ``add_bos_token`` / ``add_eos_token`` and ``chat_template`` (the last five through gguf-py's
``SpecialVocab``, as the converter does). SentencePiece-style BPE in tokenizer.json (metaspace, byte
fallback: Llama 2, Mistral, ``orpo.models.tiny``'s "sentencepiece" family) as the converter's
``_set_vocab_llama_hf``: ``tokenizer.ggml.model = "llama"``, tokens, scores and types (BYTE for
``<0xXX>``) read by gguf-py's ``LlamaHfVocab``. Other tokenizer models (Unigram, WordPiece, a bare
``tokenizer.model`` without tokenizer.json) are refused.

Rope: ``rope_theta`` -> ``rope.freq_base``; linear scaling -> ``rope.scaling.type/factor``; Llama 3.1's
"llama3" scaling -> a ``rope_freqs.weight`` tensor of per-frequency factors (``llama3_rope_factors``),
as the converter writes it. Not covered: other rope scalings (yarn, dynamic, longrope), mixture-of-
experts and every other architecture; each is refused up front with a one-line error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

DTYPES = ("f32", "f16", "bf16", "q8_0")
_QTYPE = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
_FILE_TYPE = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
Q8_0_BLOCK = 32  # values per Q8_0 block

# transformers model_type -> (GGUF architecture, permute q/k for rope type NORM)
SUPPORTED_ARCHITECTURES = {"llama": ("llama", True), "mistral": ("llama", True), "qwen2": ("qwen2", False)}

# tokenizer.json pre-tokenizer -> llama.cpp's tokenizer.ggml.pre name.
_GPT2_BYTELEVEL = "gpt-2"  # a bare ByteLevel pre-tokenizer with its built-in GPT-2 regex
_SPLIT_PATTERNS = {
    # Llama 3
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
    # Qwen2
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
}

_LAYER_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GLOBAL_TENSORS = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


@dataclass(frozen=True)
class Architecture:
    """What the GGUF file needs from a transformers config, checked and resolved once."""

    name: str  # GGUF architecture
    permute_qk: bool
    n_head: int
    n_head_kv: int
    head_dim: int
    tied: bool


def architecture(config) -> Architecture:
    """The GGUF architecture of ``config``; ValueError naming the problem when it cannot be exported."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF export supports {sorted(SUPPORTED_ARCHITECTURES)} models; this one is {model_type!r} "
            "(export it with --format merged and convert it with llama.cpp's convert_hf_to_gguf.py)"
        )
    rope = rope_parameters(config)
    supported = ("default", "linear", "llama3") if model_type == "llama" else ("default", "linear")
    if rope["rope_type"] not in supported:
        raise ValueError(
            f"GGUF export does not support rope type {rope['rope_type']!r} for {model_type} (supported: "
            f"{', '.join(supported)}); export with --format merged and convert with llama.cpp's "
            "convert_hf_to_gguf.py"
        )
    name, permute = SUPPORTED_ARCHITECTURES[model_type]
    n_head = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    return Architecture(
        name=name,
        permute_qk=permute,
        n_head=n_head,
        n_head_kv=getattr(config, "num_key_value_heads", None) or n_head,
        head_dim=head_dim,
        tied=bool(getattr(config, "tie_word_embeddings", False)),
    )


def rope_parameters(config) -> dict:
    """``rope_type``, ``rope_theta`` and scaling fields: transformers 5 keeps them in ``rope_parameters``,
    older configs in ``rope_theta`` + ``rope_scaling``."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", None) or 10000.0)
    params["rope_type"] = params.get("rope_type", params.get("type")) or "default"
    return params


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """(head_dim / 2,) float32: Llama 3.1's per-frequency rope scaling, the ``rope_freqs`` tensor.

    Frequencies whose wavelength is shorter than ``original_max_position_embeddings / high_freq_factor``
    keep factor 1, longer than ``... / low_freq_factor`` get ``factor``, and those between are blended
    smoothly (the "llama3" rope type of transformers; llama.cpp multiplies each wavelength by this).
    """
    theta, factor = float(rope["rope_theta"]), float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelengths = 2 * np.pi / freqs
    smooth = (old_context / wavelengths - low) / (high - low)
    between = 1 / ((1 - smooth) / factor + smooth)
    factors = np.where(
        wavelengths < old_context / high, 1.0, np.where(wavelengths > old_context / low, factor, between)
    )
    return factors.astype(np.float32)


def permute_for_rope_norm(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a q/k projection (``(n_head * d, ...)``) from rotate-half to adjacent-pair order.

    Within each head, row ``j`` of the first half and row ``j`` of the second half become rows 2j and
    2j+1 (module docstring).
    """
    out = weight.shape[0]
    # (out, ...) -> (n_head, 2, d/2, ...) -> (n_head, d/2, 2, ...) -> (out, ...)
    return (
        weight.reshape(n_head, 2, out // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def gguf_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's name of a Hugging Face parameter (``model.layers.3.mlp.up_proj.weight`` ->
    ``blk.3.ffn_up.weight``); None for a parameter this mapping does not know."""
    stem, _, suffix = hf_name.rpartition(".")
    if stem in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[stem]}.{suffix}"
    parts = stem.split(".")
    if parts[:2] == ["model", "layers"] and len(parts) > 3 and parts[2].isdigit():
        target = _LAYER_TENSORS.get(".".join(parts[3:]))
        if target is not None:
            return f"blk.{parts[2]}.{target}.{suffix}"
    return None


def _tensor_type(name: str, array: np.ndarray, dtype: str) -> gguf.GGMLQuantizationType:
    if array.ndim <= 1 or not name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    if dtype == "q8_0" and array.shape[-1] % Q8_0_BLOCK:
        return gguf.GGMLQuantizationType.F16
    return _QTYPE[dtype]


def gguf_tensors(model, arch: Architecture, dtype: str):
    """Yield (GGUF name, data to write, GGML type) for every parameter of ``model``, in state-dict order."""
    for hf_name, tensor in model.state_dict().items():
        if arch.tied and hf_name == "lm_head.weight":
            continue
        name = gguf_tensor_name(hf_name)
        if name is None:
            raise ValueError(f"GGUF export: no llama.cpp name for the parameter {hf_name!r} of this model")
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if arch.permute_qk and hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            array = permute_for_rope_norm(array, arch.n_head)
        if arch.permute_qk and hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            array = permute_for_rope_norm(array, arch.n_head_kv)
        qtype = _tensor_type(name, array, dtype)
        data = array if qtype == gguf.GGMLQuantizationType.F32 else gguf.quants.quantize(array, qtype)
        yield name, data, qtype


# ---------------------------------------------------------------------------------------------
# Tokenizer


def _bpe_pre(tokenizer_json: dict) -> str:
    """llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json; ValueError if unknown."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "Split":
            pattern = (step.get("pattern") or {}).get("Regex")
            if pattern in _SPLIT_PATTERNS:
                return _SPLIT_PATTERNS[pattern]
            raise ValueError(
                f"GGUF export: the tokenizer's pre-tokenizer regex {pattern!r} is not one llama.cpp knows by "
                f"name here ({sorted(_SPLIT_PATTERNS.values())} or GPT-2's); convert with llama.cpp's "
                "convert_hf_to_gguf.py"
            )
    if any(step.get("type") == "ByteLevel" and step.get("use_regex", True) for step in steps):
        return _GPT2_BYTELEVEL
    raise ValueError(
        f"GGUF export: unrecognised pre-tokenizer {pre.get('type')!r}; supported are GPT-2-style byte-level "
        "BPE tokenizers (GPT-2, Llama 3, Qwen2)"
    )


class _PairSeparatorNotice(logging.Filter):
    """gguf-py's "Unknown separator token '<s>' in TemplateProcessing<pair>", dropped.

    It reads the tokenizer's template for a *pair* of sequences (``<s> A <s> B``, as Llama 2, Llama 3
    and orpo's tiny tokenizers have it: BOS before each) to decide whether a separator token goes between
    two inputs. BOS is not the separator it knows, so it warns, and writes no separator, which is right:
    a causal LM is given one sequence, never a pair (llama.cpp's converter prints the same warning for
    these tokenizers and writes the same keys).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unknown separator token")


@contextlib.contextmanager
def _without_pair_separator_notice():
    logger, notice = logging.getLogger("gguf.vocab"), _PairSeparatorNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def _write_tokenizer(writer: gguf.GGUFWriter, tokenizer, n_vocab: int) -> None:
    """The ``tokenizer.*`` keys: byte-level BPE as the converter's ``_set_vocab_gpt2``, SentencePiece-style
    BPE (metaspace + byte fallback, Llama 2 / Mistral) as its ``_set_vocab_llama_hf``."""
    with tempfile.TemporaryDirectory(prefix="orpo-gguf-tok-") as folder, _without_pair_separator_notice():
        tokenizer.save_pretrained(folder)
        tokenizer_json = json.loads((Path(folder) / "tokenizer.json").read_text(encoding="utf-8"))
        model = tokenizer_json.get("model") or {}
        byte_level = "ByteLevel" in json.dumps(tokenizer_json.get("pre_tokenizer"))
        if model.get("type") == "BPE" and byte_level:
            _write_gpt2_vocab(writer, tokenizer, n_vocab, _bpe_pre(tokenizer_json))
            gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)
        elif model.get("type") == "BPE" and model.get("byte_fallback"):
            _write_llama_vocab(writer, gguf.LlamaHfVocab(Path(folder)), n_vocab)
            gguf.SpecialVocab(folder, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)
        else:
            raise ValueError(
                "GGUF export supports BPE tokenizers (byte-level: GPT-2, Llama 3, Qwen2; SentencePiece-style "
                f"with byte fallback: Llama 2, Mistral); this one is {model.get('type')!r}"
            )


def _write_gpt2_vocab(writer: gguf.GGUFWriter, tokenizer, n_vocab: int, pre: str) -> None:
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)


def _write_llama_vocab(writer: gguf.GGUFWriter, vocab, n_vocab: int) -> None:
    """Tokens, scores and types (BYTE for ``<0xXX>``) from gguf-py's reading of tokenizer.json; ids the
    model has beyond the tokenizer become ``[PAD{id}]`` (UNUSED)."""
    tokens, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(kind)
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)


# ---------------------------------------------------------------------------------------------
# The file


def write_gguf(model, tokenizer, path: str | Path, dtype: str = "f16", name: str | None = None) -> Path:
    """Write ``model`` (a merged transformers causal LM) and ``tokenizer`` to the GGUF file ``path``."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: GGUF export writes one of {', '.join(DTYPES)}")
    config = model.config
    arch = architecture(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, arch.name)
    writer.add_type("model")
    writer.add_name(name or path.stem)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(arch.n_head)
    writer.add_head_count_kv(arch.n_head_kv)
    rope = rope_parameters(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    if getattr(config, "head_dim", None):
        writer.add_key_length(arch.head_dim)
        writer.add_value_length(arch.head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(arch.head_dim)
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_file_type(_FILE_TYPE[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write_tokenizer(writer, tokenizer, config.vocab_size)
    if rope["rope_type"] == "llama3":
        # As the converter: the scaling lives in a tensor, not in rope.scaling.* keys.
        writer.add_tensor(
            "rope_freqs.weight",
            llama3_rope_factors(rope, arch.head_dim),
            raw_dtype=gguf.GGMLQuantizationType.F32,
        )
    for tensor_name, data, qtype in gguf_tensors(model, arch, dtype):
        writer.add_tensor(tensor_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
