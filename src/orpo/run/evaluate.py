"""Preference metrics of a trained run (or one of its checkpoints) on a dataset: ``orpo eval``'s logic.

The run's own training config (method, beta, lengths, chat template mode) scores the data, through
the same trainer ``orpo train`` builds (``orpo.run.build.new_trainer``). Nothing is written to the
run folder: the Trainer's output goes to a temporary folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from orpo.config import ORPOConfig
from orpo.data.load import load_source
from orpo.engine.refpass import is_peft
from orpo.losses import get_objective
from orpo.run.build import new_trainer
from orpo.run.callbacks import quiet
from orpo.run.folder import run_recipe
from orpo.run.loading import kind_of, open_model, open_reference


def evaluate_run(
    run_dir: str | Path, source: str, split: str = "train", ref_model: str | None = None
) -> dict[str, float]:
    """``ORPOTrainer.evaluate`` of the run's model on ``source`` (its ``split``).

    Methods with a reference score against the run's starting model (``orpo.run.loading.open_reference``),
    never against a copy of the trained one (whose rewards would all be 0).
    """
    path = Path(run_dir)
    is_checkpoint = path.is_dir() and kind_of(path) == "checkpoint"
    # A checkpoint has no config.yaml of its own: its run's config says how it was trained.
    run = path.parent if is_checkpoint else path
    recipe = run_recipe(run)
    loaded = open_model(path)
    reference = None
    needs_reference = get_objective(recipe.training_args().method).needs_reference
    if needs_reference and (ref_model or not is_peft(loaded.model)):
        reference = open_reference(run, ref_model)
    rows = load_source(source, split=split)
    with tempfile.TemporaryDirectory(prefix="orpo-eval-") as tmp:
        args = ORPOConfig(
            **{**recipe.training, "output_dir": tmp, "report_to": "none", "gradient_checkpointing": False}
        )
        trainer = new_trainer(
            args, loaded.tokenizer, loaded.model, None, rows, data=recipe.data, ref_model=reference
        )
        quiet(trainer)  # stdout must hold only our output
        return trainer.evaluate()
