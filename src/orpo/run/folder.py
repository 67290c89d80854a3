"""Reading a finished run back: its recipe, whether it holds an adapter, and what evaluation reports.

Used by ``orpo eval``, ``generate``, ``export`` and ``compare``; models are opened by
``orpo.run.loading``. The folder's layout and write guarantees live in ``orpo.checkpoints``.
"""

from __future__ import annotations

from pathlib import Path

from orpo.checkpoints import CONFIG_FILE
from orpo.run.recipe import Recipe, load_recipe

# (key of ORPOTrainer.evaluate, label): what `orpo eval` and `orpo compare` report.
METRICS = (
    ("eval_loss", "loss (method objective)"),
    ("eval_nll_loss", "NLL of chosen"),
    ("eval_rewards/accuracies", "preference accuracy"),
    ("eval_rewards/margins", "reward margin"),
    ("eval_rewards/chosen", "reward chosen"),
    ("eval_rewards/rejected", "reward rejected"),
    ("eval_logps/chosen", "log-prob chosen"),
    ("eval_logps/rejected", "log-prob rejected"),
)


def _not_a_run(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is not an orpo run folder ({why}); pass the training.output_dir of an `orpo train` run"
    )


def run_recipe(run_dir: str | Path) -> Recipe:
    """The resolved recipe the run was trained with (``RUN/config.yaml``)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise _not_a_run(path, "no such folder")
    if not (path / CONFIG_FILE).is_file():
        raise _not_a_run(path, f"no {CONFIG_FILE}")
    return load_recipe(path / CONFIG_FILE)


def is_adapter_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "adapter_config.json").is_file()
