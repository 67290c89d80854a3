"""``generate_during_eval``: at every evaluation, greedy completions of a few fixed eval prompts.

The prompts are the first ``generate_during_eval_prompts`` rows of the (first) eval set, as the
trainer tokenised them (so exactly what the model is evaluated on). Each evaluation appends one line
per prompt to ``OUTPUT_DIR/generations.jsonl``::

    {"step": 40, "id": "0", "prompt": "<rendered prompt>", "completion": "...", "completion_tokens": 12,
     "finished": true}

and, when TensorBoard logging is on, adds them as a text table at that step (``eval/generations``).
``orpo.run.report`` shows them in ``report.html``. Only the main process generates.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from orpo.evaluation.generate import GenerationSettings, generate_ids

GENERATIONS_FILE = "generations.jsonl"


class GenerationsCallback(TrainerCallback):
    """Writes greedy completions of fixed eval prompts at each evaluation (see the module docstring)."""

    def __init__(self, trainer):
        self.trainer = trainer
        args = trainer.args
        self.path = Path(args.output_dir) / GENERATIONS_FILE
        self.settings = GenerationSettings(
            max_new_tokens=args.generate_during_eval_max_new_tokens,
            batch_size=args.generate_during_eval_prompts,
        )
        data = trainer.eval_dataset
        if isinstance(data, dict):
            data = next(iter(data.values()))
        n = min(args.generate_during_eval_prompts, len(data))
        self.prompt_ids: list[list[int]] = [list(ids) for ids in data.select(range(n))["prompt_input_ids"]]

    def _tensorboard_writer(self):
        from transformers.integrations import TensorBoardCallback

        for callback in self.trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                return callback.tb_writer
        return None

    def on_evaluate(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.prompt_ids:
            return
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        tokenizer = self.trainer.processing_class
        was_training = model.training
        model.eval()
        try:
            results = generate_ids(model, tokenizer, self.prompt_ids, self.settings)
        finally:
            model.train(was_training)
        records = []
        for i, (ids, samples) in enumerate(zip(self.prompt_ids, results)):
            new_ids, finished = samples[0]
            records.append(
                {
                    "step": state.global_step,
                    "id": str(i),
                    "prompt": tokenizer.decode(ids),
                    "completion": tokenizer.decode(new_ids, skip_special_tokens=True),
                    "completion_tokens": len(new_ids),
                    "finished": finished,
                }
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        writer = self._tensorboard_writer()
        if writer is not None:
            rows = "\n".join(
                f"| {r['id']} | {_cell(r['prompt'])} | {_cell(r['completion'])} |" for r in records
            )
            writer.add_text(
                "eval/generations", f"| id | prompt | completion |\n|---|---|---|\n{rows}", state.global_step
            )


def _cell(text: str) -> str:
    """Text for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", "<br>")
