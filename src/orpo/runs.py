"""Compatibility name of ``orpo.run_folder`` for modules not yet updated (cli/eval.py, cli/generate.py).

Import from ``orpo.run_folder``; this module goes once nothing imports it.
"""

from orpo.run_folder import METRICS, adapter_base, is_adapter_run, load_run, run_recipe

__all__ = ["METRICS", "adapter_base", "is_adapter_run", "load_run", "run_recipe"]
