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
