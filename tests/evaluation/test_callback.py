"""`generate_during_eval: true`: completions of fixed eval prompts at each evaluation, in the run folder,
TensorBoard and report.html."""

import json

import pytest
from transformers.integrations import TensorBoardCallback

from orpo.cli.main import main

FIXTURE = "tests/fixtures/data/prompt_strings.jsonl"
YAML = """
model: {{name: "tiny:llama", tiny: {{hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, vocab_size: 200}}}}
data: {{train: {data}, eval: {data}}}
training: {{output_dir: {out}, max_steps: 4, per_device_train_batch_size: 2, learning_rate: 1.0e-2,
           gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: "no", logging_steps: 1,
           eval_strategy: steps, eval_steps: 2, generate_during_eval: true, generate_during_eval_prompts: 2,
           generate_during_eval_max_new_tokens: 5}}
"""


@pytest.mark.slow
def test_generations_at_each_evaluation_land_in_the_run_folder_and_report(tmp_path):
    (tmp_path / "run.yaml").write_text(YAML.format(data=FIXTURE, out=tmp_path / "run"))
    assert main(["train", str(tmp_path / "run.yaml"), "--no-progress"]) == 0
    records = [json.loads(x) for x in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    # Evaluations: before training, steps 2 and 4 (eval_steps), 2 prompts each; the final evaluation
    # after training is the step-4 one (the schedule already evaluated the last step), not a repeat.
    steps = [r["step"] for r in records]
    assert steps == [0, 0, 2, 2, 4, 4]
    assert all(1 <= r["completion_tokens"] <= 5 for r in records)
    assert "What is the capital of France?" in records[0]["prompt"]
    report = (tmp_path / "run" / "report.html").read_text()
    assert "Generations during evaluation" in report and "What is the capital of France?" in report


def test_generations_go_to_tensorboard_when_it_is_on(tmp_path, tokenizer, rows):
    """TensorBoard is not installed here: a TensorBoardCallback whose writer records add_text calls."""
    from helpers import tiny_args
    from orpo import ORPOTrainer
    from orpo.models.tiny import build_model

    class Writer:
        texts = []

        def add_text(self, tag, text, step=None):
            self.texts.append((tag, text, step))

        def add_scalar(self, *args):
            pass

        def flush(self):
            pass

    board = object.__new__(TensorBoardCallback)  # its __init__ needs the tensorboard package
    board.tb_writer = Writer()
    args = tiny_args(
        tmp_path,
        generate_during_eval=True,
        generate_during_eval_prompts=3,
        generate_during_eval_max_new_tokens=4,
    )
    trainer = ORPOTrainer(
        model=build_model(tokenizer, "llama", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1),
        args=args,
        train_dataset=rows,
        eval_dataset=rows[:6],
        processing_class=tokenizer,
    )
    trainer.callback_handler.callbacks.append(board)
    trainer.evaluate()
    ((tag, text, step),) = [t for t in Writer.texts if t[0] == "eval/generations"]
    assert tag == "eval/generations" and step == 0 and text.count("\n| ") == 3
    assert (tmp_path / "out" / "generations.jsonl").read_text().count("\n") == 3
