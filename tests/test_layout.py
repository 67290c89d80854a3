"""The house: the drop-in import stays lean, and every module imports on its own."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import orpo


def test_the_drop_in_import_loads_no_recipe_or_experiment_code():
    """`from orpo import ORPOTrainer` is what a TRL user runs: it must not pull the YAML recipe layer
    (``orpo.run``) or the experiments (``orpo.lab``), which would tie the library to the CLI."""
    code = (
        "import sys\n"
        "from orpo import ORPOConfig, ORPOTrainer\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('orpo.run', 'orpo.lab', 'orpo.cli'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


MODULES = sorted(m.name for m in pkgutil.walk_packages(orpo.__path__, "orpo."))


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    importlib.import_module(name)
