"""Shared fixtures: a tiny tokenizer trained once per session, tiny models, a learnable toy set."""

import os

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
