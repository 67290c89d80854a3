"""The GGUF file as llama.cpp itself reads it: same tokens, same logits as the transformers model.

Needs llama.cpp's Python binding (`pip install llama-cpp-python`, which builds llama.cpp from source in
about 10 minutes, so CI does not install it); skipped with that reason when it is absent. The tensor
names, shapes, types and metadata are checked without llama.cpp in test_gguf.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orpo.export.gguf_file import write_gguf
from orpo.models.tiny import build_model, build_tokenizer

pytestmark = pytest.mark.slow  # the slow tier (docs/development.md)

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python builds it, ~10 min)"
)

CORPUS = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b\n"] * 20
TEXT = "The lazy fox jumps. def add(a, b): return a"
# Non-default rope bases and kv heads < heads: a wrong rope permutation or base, or a wrong grouping of
# the kv heads, changes the logits.
ARCHS = {"llama": (64, 500000.0), "qwen2": (48, 1000000.0)}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CORPUS, vocab_size=300)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_llamacpp_reads_the_same_tokens_and_logits(arch, tokenizer, tmp_path):
    hidden, theta = ARCHS[arch]
    torch.manual_seed(0)
    model = build_model(
        tokenizer, arch, hidden_size=hidden, num_layers=2, num_heads=4, num_kv_heads=2, rope_theta=theta
    )
    path = write_gguf(model, tokenizer, tmp_path / f"{arch}.gguf", "f32")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=1)

    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids

    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)], dtype=np.float64)
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].double().numpy()
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() < 1e-3 * max(1.0, np.abs(ours).max())
    assert (theirs.argmax(-1) == ours.argmax(-1)).all()
