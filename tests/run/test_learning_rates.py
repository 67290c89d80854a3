"""One table of learning rates (``orpo.run.learning_rates``) that every command reads: the numbers a
user sees are the ones each command had before the table."""

from __future__ import annotations

import pytest

from orpo.run.learning_rates import LEARNING_RATES, RECIPE_RATES, learning_rate, learning_rate_space


def test_each_command_reads_its_entry():
    from orpo.lab.bench.runner import BenchOptions
    from orpo.lab.demo import settings
    from orpo.tune import space

    assert space.LEARNING_RATE_SPACE == "learning_rate=log:1e-6..1e-3"
    assert space.default_space("orpo")[0] == "learning_rate=log:1e-6..1e-3"
    assert settings.LEARNING_RATE_SPACE == "learning_rate=log:1e-6..3e-3"
    assert settings.search_space("orpo")[0] == "learning_rate=log:1e-6..3e-3"
    assert settings.BASE_LEARNING_RATE == settings.DEFAULT_PARAMS["learning_rate"] == 1e-3
    real = settings.BASES["smollm2"]
    assert real.learning_rate_space == "learning_rate=log:1e-5..1e-3"
    assert settings.search_space("orpo", real)[0] == "learning_rate=log:1e-5..1e-3"
    assert BenchOptions().learning_rate == 1e-4


def test_the_recipe_rates_are_the_table_s():
    from orpo.run.recipe import ModelSection, recipe_defaults

    assert [learning_rate(name) for name in RECIPE_RATES] == [5e-6, 1e-4, 1e-3]
    tiny, hub = ModelSection(name="tiny:llama"), ModelSection(name="org/model")
    assert recipe_defaults(tiny, None, "r")["learning_rate"] == 1e-3
    assert recipe_defaults(hub, None, "r")["learning_rate"] == 5e-6


def test_every_entry_says_why_and_rates_and_ranges_are_not_mixed_up():
    for entry in LEARNING_RATES.values():
        assert entry.why and "{value}" not in entry.explained()
    with pytest.raises(ValueError, match="is a search range; use learning_rate_space"):
        learning_rate("search")
    with pytest.raises(ValueError, match="is one rate, not a search range"):
        learning_rate_space("tiny")


def test_the_table_imports_without_torch():
    """The CLI reads it at parse time (the demo's settings, the bench's options)."""
    import subprocess
    import sys

    code = "import sys, orpo.run.learning_rates, orpo.lab.demo.settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
