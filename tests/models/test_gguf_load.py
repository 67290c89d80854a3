"""A GGUF file as a model: dequantized once into the cache, then loaded from there; clear errors otherwise."""

from __future__ import annotations

import json

import pytest
import torch

from orpo.models.gguf import SOURCE_FILE, file_sha256, gguf_folder, is_gguf
from orpo.models.load import load_model, load_tokenizer


def test_is_gguf_by_suffix():
    assert is_gguf("x/SmolLM2.Q4_1.gguf") and is_gguf("MODEL.GGUF")
    assert not is_gguf("HuggingFaceTB/SmolLM2-135M") and not is_gguf("tiny:llama") and not is_gguf(None)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"no such GGUF file") as err:
        load_model(str(tmp_path / "nowhere.gguf"))
    assert "\n" not in str(err.value)


def test_unsupported_architecture_names_it(tmp_path, monkeypatch):
    """A GGUF whose architecture transformers cannot read: one line naming it, before any dequantization."""
    gguf = pytest.importorskip("gguf")
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), arch="notanarch")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 2).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"cannot read GGUF architecture 'notanarch'") as err:
        load_tokenizer(str(path))
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").glob("gguf/*"))  # nothing half-written is left


def test_real_file_converts_once_and_loads_as_a_plain_model(smollm2_gguf, smollm2):
    """The cached folder is keyed by the file's bytes, records its source, and loads with no GGUF
    quantization mark (so it saves, merges and exports like any model)."""
    assert smollm2.name == file_sha256(smollm2_gguf)[:16]
    source = json.loads((smollm2 / SOURCE_FILE).read_text())
    assert source["architecture"] == "llama" and source["sha256"].startswith(smollm2.name)
    assert gguf_folder(smollm2_gguf) == smollm2  # second call: the same folder, no new conversion
    assert len(list(smollm2.parent.glob(".*.partial"))) == 0
    model = load_model(str(smollm2_gguf), {"dtype": "float32"})
    assert getattr(model.config, "quantization_config", None) is None
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tok = load_tokenizer(str(smollm2_gguf))
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>system" in text
