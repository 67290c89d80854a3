"""The demo's ORPOConfig (``settings.orpo_config``) is built through the recipe, as `orpo train`
builds its own, and is field for field the config the demo built by hand before: the demo's caches
are keyed by a hash of its ``to_dict()``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orpo.lab.demo import settings
from orpo.lab.demo.settings import orpo_config, scoring_config


def _by_hand(method, *, seed, epochs, params, batch_size, output_dir, eval_steps, engine="auto"):
    """The demo's config as it was built before the recipe built it (the reference, kept verbatim)."""
    from orpo.config import ORPOConfig

    return ORPOConfig(
        output_dir=str(output_dir),
        method=method,
        **{"learning_rate": 1e-3, "beta": 0.1, "simpo_gamma": 0.5, **params},
        precompute_ref_log_probs=True,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        num_train_epochs=epochs,
        per_device_train_batch_size=settings.batch_of(method, batch_size),
        per_device_eval_batch_size=50,
        nll_on_prompt=True,
        tokenization="orpo",
        engine=engine,
        max_length=256,
        bf16=True,
        gradient_checkpointing=False,
        eval_strategy="no" if eval_steps is None else "steps",
        eval_steps=eval_steps,
        logging_steps=eval_steps or 10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
    )


def _key(config) -> str:
    """What the demo hashes: ``to_dict()`` as JSON (ints and floats keep their types: 2 is not 2.0)."""
    return json.dumps(config.to_dict(), default=str, sort_keys=True)


CASES = [
    ("orpo", dict(seed=0, epochs=2, params={}, batch_size=32, output_dir=Path("."), eval_steps=None)),
    (
        "kto",
        dict(
            seed=1,
            epochs=2,
            params={"learning_rate": 3e-4, "beta": 0.2},
            batch_size=8,
            output_dir=Path("o"),
            eval_steps=5,
        ),
    ),
    (
        "simpo",
        dict(
            seed=2,
            epochs=1,
            params={"learning_rate": 1e-5, "beta": 2.0, "simpo_gamma": 1.0},
            batch_size=4,
            output_dir=Path("r"),
            eval_steps=3,
            engine="padded",
        ),
    ),
    (
        "sft",
        dict(
            seed=0,
            epochs=4,
            params={"learning_rate": 1e-3},
            batch_size=32,
            output_dir=Path("s/run"),
            eval_steps=None,
        ),
    ),
    ("dpo", dict(seed=0, epochs=2, params={"beta": 0.5}, batch_size=16, output_dir=Path("d"), eval_steps=10)),
    (
        "ipo",
        dict(
            seed=3, epochs=2, params={}, batch_size=16, output_dir=Path("d"), eval_steps=None, engine="packed"
        ),
    ),
]


@pytest.mark.parametrize(("method", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_the_config_through_the_recipe_is_the_one_built_by_hand(method, kwargs):
    ours, before = orpo_config(method, **kwargs), _by_hand(method, **kwargs)
    assert type(ours) is type(before)
    assert _key(ours) == _key(before)


def test_a_scoring_config_is_unchanged_too():
    assert _key(scoring_config("kto", 8, Path("o"))) == _key(
        _by_hand("kto", seed=0, epochs=1, params={}, batch_size=8, output_dir=Path("o"), eval_steps=None)
    )


def test_a_bad_knob_gets_the_config_s_one_line_error():
    with pytest.raises(ValueError, match=r"^learning_rate=-0\.1 must be >= 0\.0$"):
        orpo_config("orpo", **{**CASES[0][1], "params": {"learning_rate": -0.1}})


# Every stage's cache key of the tiny base's default size, as the demo computed them before the real-model
# base existed (`--base smollm2`): adding it must not retrain, resample or retune anything of the tiny demo.
TINY_DEFAULT_BASE_KEY = "b7c0881734c233a5"
TINY_DEFAULT_PAIRS_KEY = "9bc0a0b0c34ebaca"  # with max_new_tokens 40


def _tiny_base():
    from orpo.lab.demo.base import Base, base_settings, settings_key

    bs = base_settings(settings.SIZES["default"], 0)
    return Base(path=Path("x"), key=settings_key(bs), settings=bs, cached=True, corpus={}, seconds=0.0)


def test_the_tiny_base_and_pairs_keep_their_cache_keys():
    from orpo.lab.demo.base import settings_key
    from orpo.lab.demo.pairs import pairs_settings

    base = _tiny_base()
    assert base.key == TINY_DEFAULT_BASE_KEY
    assert settings_key(pairs_settings(base, settings.SIZES["default"], 40)) == TINY_DEFAULT_PAIRS_KEY


def test_the_tiny_studies_keep_their_settings():
    """A study's key hashes these settings: the same fields, space, budget and training config as before."""
    from orpo.lab.demo.tune import TuneData, tune_settings

    size = settings.SIZES["default"]
    data = TuneData([[1]] * size.n_val, [None] * size.n_val, 40)
    for method in settings.METHODS:
        got = tune_settings(method, "src", _tiny_base(), size, data, "packed")
        assert list(got) == [
            "version",
            "method",
            "base",
            "pairs",
            "space",
            "trials",
            "rows_per_step",
            "training",
            "n_val",
            "max_new_tokens",
            "objective",
            "pruner",
        ]
        assert got["space"][0] == "learning_rate=log:1e-6..3e-3" and got["trials"] == 4
        assert got["training"]["max_length"] == 256 and got["base"] == TINY_DEFAULT_BASE_KEY


def test_the_tiny_sizes_compare_all_six_methods():
    assert all(size.methods == settings.METHODS for size in settings.SIZES.values())
    assert settings.BASES["tiny"].sizes is settings.SIZES


def test_the_real_model_keys_every_stage_apart_from_the_tiny_one():
    """SmolLM2's base key hashes its file and how the demo uses it; its studies search their own learning
    rates with LoRA at a longer max_length, so no stage can reuse a tiny cache entry."""
    from orpo.lab.demo.base import Base, pretrained_settings, settings_key
    from orpo.lab.demo.tune import TuneData, tune_settings

    spec = settings.BASES["smollm2"]
    ps = pretrained_settings(spec, "0" * 64, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert ps["adapter"]["r"] == 16 and ps["adapter"]["target_modules"] == "all-linear"
    assert ps["system_prompt"].startswith("You review Python code") and ps["max_length"] == 512
    assert settings_key(pretrained_settings(spec, "1" * 64, "x.gguf")) != settings_key(ps)
    base = Base(
        path=Path("x"), key=settings_key(ps), settings=ps, cached=True, corpus=None, seconds=0.0, spec=spec
    )
    size = spec.sizes["default"]
    data = TuneData([[1]] * size.n_val, [None] * size.n_val, 40)
    real = tune_settings("orpo", "src", base, size, data, "packed")
    tiny = tune_settings("orpo", "src", _tiny_base(), settings.SIZES["default"], data, "packed")
    assert real["space"][0] == "learning_rate=log:1e-5..1e-3" != tiny["space"][0]
    assert real["training"]["max_length"] == 512 and real["base"] != tiny["base"]
    assert settings_key(real) != settings_key(tiny)


def test_every_real_model_size_compares_at_least_sft_orpo_and_dpo():
    for size in settings.BASES["smollm2"].sizes.values():
        assert {"sft", "orpo", "dpo"} <= set(size.methods)
        assert size.n_base == 0  # no base stage


def test_a_size_the_base_does_not_have_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^demo size 'full' is not one of smollm2's \(quick, default\)"):
        settings.BASES["smollm2"].size("full")
    with pytest.raises(ValueError, match=r"demo size methods \('sft', 'rlhf'\)"):
        settings.DemoSize(
            n_train=1,
            n_val=1,
            n_test=1,
            epochs=1,
            batch_size=1,
            samples=2,
            trials=1,
            n_seeds=1,
            n_curve_points=1,
            methods=("sft", "rlhf"),
        )
