"""Shared fixtures: a tiny tokenizer trained once per session, tiny models, a learnable toy set."""

import os

import pytest

from helpers import toy_rows

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


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
