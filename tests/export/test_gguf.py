"""GGUF export (orpo.export.gguf_file) read back with gguf-py's own reader.

Each written file is checked against the model it came from: every parameter present under llama.cpp's
name (taken from gguf-py's ``TensorNameMap``, llama.cpp's own table, not from our mapping), with the
shape in GGML order and the type the converter would choose; values equal to the model's (f32, f16,
bf16 exactly; q8_0 after dequantisation within half a quantisation step per block); metadata and
tokenizer keys equal to the config's and tokenizer's.
"""

from __future__ import annotations

import json
import math
from functools import cache

import numpy as np
import pytest
import torch

from orpo.export.gguf_file import architecture, permute_for_rope_norm, write_gguf
from orpo.models.tiny import build_model, build_tokenizer

gguf = pytest.importorskip("gguf")

CORPUS = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b\n"] * 20
F32 = gguf.GGMLQuantizationType.F32
F16 = gguf.GGMLQuantizationType.F16
EXPECTED_TYPE = {
    "f32": F32,
    "f16": F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
GGUF_ARCH = {"llama": gguf.MODEL_ARCH.LLAMA, "mistral": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}
# hidden 48 makes rows of 48 values in the attention and up/gate projections: not a whole number of
# Q8_0 blocks (32), so those fall back to f16 as in llama.cpp's converter.
MODELS = {"llama": 64, "mistral": 64, "qwen2": 48}
# Non-default rope bases, so the freq_base check cannot pass on a default.
ROPE_THETA = {"llama": 500000.0, "mistral": 1000000.0, "qwen2": 1000000.0}


@cache
def tokenizer():
    return build_tokenizer(CORPUS, vocab_size=300)


@cache
def model(arch: str):
    return build_model(
        tokenizer(),
        arch,
        hidden_size=MODELS[arch],
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        rope_theta=ROPE_THETA[arch],
    )


@cache
def written(arch: str, dtype: str, folder: str):
    path = write_gguf(model(arch), tokenizer(), f"{folder}/{arch}-{dtype}.gguf", dtype)
    return gguf.GGUFReader(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("gguf"))


def field(reader, key: str):
    return reader.fields[key].contents()


def expected_tensors(arch: str) -> dict[str, np.ndarray]:
    """llama.cpp name -> the model's values (q/k rows permuted for the llama architecture)."""
    m = model(arch)
    names = gguf.get_tensor_name_map(GGUF_ARCH[arch], m.config.num_hidden_layers)
    out = {}
    for hf_name, tensor in m.state_dict().items():
        if m.config.tie_word_embeddings and hf_name == "lm_head.weight":
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        array = tensor.float().numpy()
        if GGUF_ARCH[arch] == gguf.MODEL_ARCH.LLAMA and ".q_proj." in hf_name:
            array = permute_for_rope_norm(array, m.config.num_attention_heads)
        if GGUF_ARCH[arch] == gguf.MODEL_ARCH.LLAMA and ".k_proj." in hf_name:
            array = permute_for_rope_norm(array, m.config.num_key_value_heads)
        out[name] = array
    return out


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("arch", list(MODELS))
def test_every_tensor_has_llamacpp_name_shape_type_and_values(folder, arch, dtype):
    reader = written(arch, dtype, folder)
    expected = expected_tensors(arch)
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(expected)
    for name, values in expected.items():
        t = tensors[name]
        assert [int(n) for n in t.shape] == list(reversed(values.shape)), name
        if values.ndim == 1 or name.endswith(".bias"):
            want_type = F32
        elif dtype == "q8_0" and values.shape[-1] % 32:
            want_type = F16
        else:
            want_type = EXPECTED_TYPE[dtype]
        assert t.tensor_type == want_type, name
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(values.shape)
        if want_type == F32:
            np.testing.assert_array_equal(got, values, err_msg=name)
        elif want_type == F16:
            np.testing.assert_array_equal(got, values.astype(np.float16).astype(np.float32), err_msg=name)
        elif want_type == gguf.GGMLQuantizationType.BF16:
            bf16 = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
            np.testing.assert_array_equal(got, bf16, err_msg=name)
        else:
            # Q8_0: per block of 32 values, scale d = max|x| / 127 stored in f16 and x ~ d * round(x / d):
            # error at most d/2 from rounding plus the f16 rounding of d (relative 2^-11) times 127.
            blocks = values.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127
            bound = step * (0.5 + 127 * 2**-11) + 1e-12
            assert np.all(np.abs(got.reshape(-1, 32) - blocks) <= bound), name
            assert not np.array_equal(got, values)  # really quantised


def test_tied_embeddings_write_no_output_tensor(folder):
    assert model("qwen2").config.tie_word_embeddings
    assert "output.weight" not in {t.name for t in written("qwen2", "f32", folder).tensors}
    assert "output.weight" in {t.name for t in written("llama", "f32", folder).tensors}


@pytest.mark.parametrize("arch", list(MODELS))
def test_metadata_matches_the_config(folder, arch):
    reader = written(arch, "q8_0", folder)
    config = model(arch).config
    prefix = "llama" if arch in ("llama", "mistral") else "qwen2"
    assert field(reader, "general.architecture") == prefix
    head_dim = config.hidden_size // config.num_attention_heads
    expected = {
        f"{prefix}.context_length": config.max_position_embeddings,
        f"{prefix}.embedding_length": config.hidden_size,
        f"{prefix}.block_count": config.num_hidden_layers,
        f"{prefix}.feed_forward_length": config.intermediate_size,
        f"{prefix}.attention.head_count": config.num_attention_heads,
        f"{prefix}.attention.head_count_kv": config.num_key_value_heads,
        f"{prefix}.rope.dimension_count": head_dim,
        f"{prefix}.vocab_size": config.vocab_size,
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q8_0),
    }
    for key, value in expected.items():
        assert field(reader, key) == value, key
    assert config.rope_parameters["rope_theta"] == ROPE_THETA[arch]
    assert math.isclose(field(reader, f"{prefix}.rope.freq_base"), ROPE_THETA[arch], rel_tol=1e-6)
    assert math.isclose(
        field(reader, f"{prefix}.attention.layer_norm_rms_epsilon"), config.rms_norm_eps, rel_tol=1e-6
    )


def test_tokenizer_keys_match_the_tokenizer(folder):
    reader = written("llama", "f16", folder)
    tok = tokenizer()
    by_id = {i: t for t, i in tok.get_vocab().items()}
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens == [by_id[i] for i in range(len(tok))]
    types = field(reader, "tokenizer.ggml.token_type")
    specials = {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    assert {i for i, kind in enumerate(types) if kind == gguf.TokenType.CONTROL} == specials
    assert all(kind == gguf.TokenType.NORMAL for i, kind in enumerate(types) if i not in specials)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [
        " ".join(m) if isinstance(m, list) else m for m in merges
    ]
    assert len(merges) > 10
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert field(reader, "tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert field(reader, "tokenizer.ggml.padding_token_id") == tok.pad_token_id
    assert field(reader, "tokenizer.ggml.add_bos_token") is True
    assert field(reader, "tokenizer.chat_template") == tok.chat_template


def _rotate_half_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Hugging Face's rotary embedding: dimension i pairs with i + d/2. x: (T, d)."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angles = positions[:, None] * inv[None]  # (T, d/2)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    rotated = torch.cat([-x[:, d // 2 :], x[:, : d // 2]], -1)
    return x * cos + rotated * sin


def _adjacent_pair_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """llama.cpp's rope type NORM: dimensions (2i, 2i+1) rotate together. x: (T, d)."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions[:, None] * inv[None]  # (T, d/2)
    even, odd = x[:, 0::2], x[:, 1::2]
    out = torch.empty_like(x)
    out[:, 0::2] = even * angles.cos() - odd * angles.sin()
    out[:, 1::2] = even * angles.sin() + odd * angles.cos()
    return out


def test_qk_permutation_makes_llamacpp_rope_give_the_same_attention_scores():
    """Why q/k are permuted for ``llama``: the scores q_t . k_s after rotate-half RoPE on the Hugging
    Face weights equal those after adjacent-pair RoPE on the permuted weights; unpermuted, they do not."""
    torch.manual_seed(0)
    n_head, n_kv, d, hidden, steps = 4, 2, 8, 32, 6
    wq, wk = (
        torch.randn(n_head * d, hidden, dtype=torch.float64),
        torch.randn(n_kv * d, hidden, dtype=torch.float64),
    )
    x = torch.randn(steps, hidden, dtype=torch.float64)
    positions = torch.arange(steps, dtype=torch.float64)
    pq = torch.from_numpy(permute_for_rope_norm(wq.numpy(), n_head))
    pk = torch.from_numpy(permute_for_rope_norm(wk.numpy(), n_kv))

    def scores(q_weight, k_weight, rope, head):
        q = rope((x @ q_weight.T)[:, head * d : (head + 1) * d], positions, 10000.0)
        kv = head // (n_head // n_kv)
        k = rope((x @ k_weight.T)[:, kv * d : (kv + 1) * d], positions, 10000.0)
        return q @ k.T

    for head in range(n_head):
        reference = scores(wq, wk, _rotate_half_rope, head)
        torch.testing.assert_close(scores(pq, pk, _adjacent_pair_rope, head), reference)
        assert not torch.allclose(scores(wq, wk, _adjacent_pair_rope, head), reference)


def test_unsupported_architecture_and_dtype_are_refused(tmp_path):
    gemma = build_model(tokenizer(), "gemma", hidden_size=32, num_layers=1)
    with pytest.raises(ValueError, match=r"GGUF export supports \['llama', 'mistral', 'qwen2'\].*'gemma'"):
        architecture(gemma.config)
    with pytest.raises(ValueError, match=r"--dtype 'q4_k'.*f32, f16, bf16, q8_0"):
        write_gguf(model("llama"), tokenizer(), tmp_path / "x.gguf", "q4_k")


def test_sentencepiece_style_tokenizer_is_written_as_llama_vocab(tmp_path):
    """Metaspace BPE with byte fallback (Llama 2 / Mistral style): model "llama", every id's token text,
    256 BYTE tokens, a score per token, special tokens CONTROL, no merges."""
    sp = build_tokenizer(CORPUS, vocab_size=100, family="sentencepiece")
    m = build_model(sp, "mistral", hidden_size=32, num_layers=1)
    reader = gguf.GGUFReader(write_gguf(m, sp, tmp_path / "sp.gguf", "f16"))
    assert field(reader, "tokenizer.ggml.model") == "llama"
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    by_id = {i: t for t, i in sp.get_vocab().items()}
    assert tokens == [by_id[i] for i in range(len(sp))]
    assert types.count(gguf.TokenType.BYTE) == 256
    assert all(types[sp.convert_tokens_to_ids(f"<0x{b:02X}>")] == gguf.TokenType.BYTE for b in range(256))
    assert types[sp.eos_token_id] == gguf.TokenType.CONTROL
    assert len(field(reader, "tokenizer.ggml.scores")) == len(sp)
    assert "tokenizer.ggml.merges" not in reader.fields
    assert field(reader, "tokenizer.ggml.bos_token_id") == sp.bos_token_id


def test_llama3_rope_scaling_is_written_as_rope_freqs(tmp_path):
    """Llama 3.1's rope scaling: a ``rope_freqs.weight`` tensor whose factors are the ratio of the plain
    rotary frequencies to the ones transformers' own "llama3" rope initialiser computes."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256,
    }
    m = build_model(
        tokenizer(), "llama", hidden_size=64, num_layers=1, rope_theta=500000.0, rope_scaling=scaling
    )
    reader = gguf.GGUFReader(write_gguf(m, tokenizer(), tmp_path / "l31.gguf", "f16"))
    (freqs,) = [t for t in reader.tensors if t.name == "rope_freqs.weight"]
    head_dim = m.config.hidden_size // m.config.num_attention_heads
    assert freqs.tensor_type == F32 and [int(n) for n in freqs.shape] == [head_dim // 2]
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](m.config, "cpu")
    plain = 1.0 / (500000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    np.testing.assert_allclose(np.asarray(freqs.data), (plain / scaled.double()).numpy(), rtol=1e-6)
    assert {1.0, 8.0} <= set(np.round(np.asarray(freqs.data), 4).tolist())  # both ends of the blend occur


def test_other_rope_scaling_is_refused():
    config = build_model(tokenizer(), "qwen2", hidden_size=32, num_layers=1).config
    config.rope_parameters = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    with pytest.raises(ValueError, match=r"rope type 'yarn' for qwen2"):
        architecture(config)
