"""The demo's base stage: deterministic per seed, cached by its settings, retrained when they change."""

import dataclasses

import pytest

from orpo.engine.refpass import model_fingerprint
from orpo.lab.demo.base import base_settings, settings_key, train_base
from orpo.lab.demo.settings import SIZES
from orpo.tasks.codereview.generator import P_MISS, make_splits

QUICK = SIZES["quick"]


def _splits(seed: int):
    return make_splits(QUICK.n_train, QUICK.n_val, QUICK.n_test, seed)


def _fingerprint(base) -> str:
    return model_fingerprint(base.load()[1], skip_adapter=False)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return root, train_base(QUICK, 0, _splits(0), root)


def test_same_seed_trains_the_same_weights(first, tmp_path):
    _, base = first
    again = train_base(QUICK, 0, _splits(0), tmp_path)  # another cache root: really trained again
    assert not base.cached and not again.cached
    assert again.key == base.key
    assert _fingerprint(again) == _fingerprint(base)
    other = train_base(QUICK, 1, _splits(1), tmp_path)
    assert other.key != base.key and _fingerprint(other) != _fingerprint(base)


def test_a_rerun_with_the_same_settings_reuses_the_cache(first):
    root, base = first
    reused = train_base(QUICK, 0, _splits(0), root)
    assert reused.cached and reused.path == base.path and reused.corpus == base.corpus


def test_changing_any_setting_changes_the_key_and_trains_anew(first):
    root, base = first
    changed = train_base(QUICK, 0, _splits(0), root, p_miss=P_MISS / 2)
    assert not changed.cached and changed.path != base.path
    assert changed.corpus["miss_rate"] != base.corpus["miss_rate"]
    # Every budget field the weights depend on is in the key.
    for field, value in (("n_base", 40), ("base_epochs", 2), ("hidden_size", 48), ("batch_size", 4)):
        other = dataclasses.replace(QUICK, **{field: value})
        assert settings_key(base_settings(other, 0)) != base.key, field


def test_the_corpus_is_counted_and_kept_beside_the_weights(first):
    _, base = first
    corpus = base.corpus
    assert corpus["reviews"] == QUICK.n_base
    assert corpus["miss_rate"] == corpus["missed"] / corpus["violations"]
    assert (base.path / "base.json").is_file() and (base.path / "config.json").is_file()
