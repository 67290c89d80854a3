"""The generator: prompts tokenised exactly as training tokenises them, batching that changes nothing,
resume, sampling, and the four kinds of model path (run, checkpoint, adapter folder, plain model)."""

import json
import shutil

import pytest

from orpo.cli.main import main
from orpo.data.tokenize import Limits
from orpo.evaluation.generate import GenerationSettings, generate_file, generate_ids, load_prompts, prompt_ids
from orpo.run.loading import kind_of, open_model

FIXTURE = "tests/fixtures/data/prompt_strings.jsonl"
CHAT = "tests/fixtures/data/chat_explicit.jsonl"

TINY_YAML = """
model: {{name: "tiny:llama", tiny: {{hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, vocab_size: 200}}}}
adapter: {{type: lora, r: 4, alpha: 8, dropout: 0.0}}
data: {{train: {data}, eval: {data}}}
training: {{output_dir: {out}, max_steps: 2, per_device_train_batch_size: 2, learning_rate: 1.0e-2,
           gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: steps, save_steps: 2,
           logging_steps: 1, max_prompt_length: 12, max_length: 64}}
"""


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("genrun")
    (folder / "run.yaml").write_text(TINY_YAML.format(data=FIXTURE, out=folder / "run"))
    assert main(["train", str(folder / "run.yaml"), "--no-progress"]) == 0
    return folder / "run"


@pytest.mark.parametrize("source", [FIXTURE, CHAT])
def test_prompt_ids_are_the_training_prompt_ids(run_dir, source):
    """Same tokenizer, same config (max_prompt_length 12 truncates these prompts from the left): the
    generator's prompt ids equal the prompt_input_ids the trainer builds for the same rows."""
    from orpo.data.pipeline import prepare_dataset
    from orpo.run.folder import run_recipe

    loaded = open_model(run_dir)
    config = run_recipe(run_dir).training_args()
    prepared, _ = prepare_dataset(
        __import__("orpo.data.load", fromlist=["load_source"]).load_source(source), loaded.tokenizer, config
    )
    ours = prompt_ids(
        load_prompts(source), loaded.tokenizer, loaded.chat_template_mode, loaded.limits, loaded.tokenization
    )
    assert ours == prepared["prompt_input_ids"]
    assert max(len(ids) for ids in ours) == 12  # truncation really happened


def test_batched_greedy_equals_one_prompt_at_a_time(run_dir):
    loaded = open_model(run_dir)
    prompts = load_prompts(FIXTURE) + load_prompts(CHAT)
    ids = prompt_ids(prompts, loaded.tokenizer, loaded.chat_template_mode, Limits())  # untruncated
    assert len({len(i) for i in ids}) > 1  # ragged: batches are left-padded
    batched = generate_ids(
        loaded.model, loaded.tokenizer, ids, GenerationSettings(max_new_tokens=6, batch_size=4)
    )
    single = generate_ids(
        loaded.model, loaded.tokenizer, ids, GenerationSettings(max_new_tokens=6, batch_size=1)
    )
    assert batched == single


def test_generate_file_resumes_after_a_kill(run_dir, tmp_path):
    loaded = open_model(run_dir)
    prompts = load_prompts(CHAT)
    settings = GenerationSettings(max_new_tokens=5, batch_size=2)
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert generate_file(loaded, prompts, settings, full) == (len(prompts), 0)
    lines = full.read_text().splitlines()
    part.write_text("\n".join(lines[:2]) + "\n")  # a run killed after two lines
    assert generate_file(loaded, prompts, settings, part) == (len(prompts) - 2, 2)
    by_id = lambda p: {r["id"]: r for r in map(json.loads, p.read_text().splitlines())}  # noqa: E731
    assert by_id(part) == by_id(full) and len(part.read_text().splitlines()) == len(prompts)
    record = json.loads(lines[0])
    assert set(record) == {
        "id",
        "sample",
        "prompt",
        "completion",
        "reference",
        "model",
        "settings",
        "prompt_tokens",
        "completion_tokens",
        "finished",
    }
    assert record["model"] == str(run_dir) and record["settings"]["max_new_tokens"] == 5
    assert 1 <= record["completion_tokens"] <= 5
    # Other settings into the same file: refused, naming both.
    with pytest.raises(ValueError, match="use another --out"):
        generate_file(loaded, prompts, GenerationSettings(max_new_tokens=6), part)


def test_sampling_is_seeded_and_gives_num_samples_lines(run_dir, tmp_path):
    loaded = open_model(run_dir)
    prompts = load_prompts(FIXTURE)
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        settings = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=seed, num_samples=2)
        generate_file(loaded, prompts, settings, tmp_path / f"{name}.jsonl")
        runs[name] = [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["sample"]) for r in runs["a"]) == sorted(
        (p.id, k) for p in prompts for k in range(2)
    )
    assert [r["completion"] for r in runs["a"]] == [r["completion"] for r in runs["b"]]
    assert [r["completion"] for r in runs["a"]] != [r["completion"] for r in runs["c"]]
    with pytest.raises(ValueError, match="identical"):
        GenerationSettings(num_samples=2)


def test_run_checkpoint_adapter_and_base_model_all_generate(run_dir, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(run_dir / name, adapter / name)
    checkpoint = run_dir / "checkpoint-2"
    base = run_dir / "base_model"
    assert [kind_of(p) for p in (run_dir, checkpoint, adapter, base)] == [
        "run",
        "checkpoint",
        "adapter",
        "model",
    ]
    texts = {}
    for name, path in (("run", run_dir), ("checkpoint", checkpoint), ("adapter", adapter), ("base", base)):
        out = tmp_path / f"{name}.jsonl"
        args = ["generate", str(path), "--prompts", FIXTURE, "--out", str(out), "--max-new-tokens", "6"]
        assert main([*args, "--no-progress"]) == 0
        texts[name] = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    # The checkpoint after the last step and a copy of the adapter hold the run's weights; the adapter
    # folder has no tokenizer or config and borrows the base's, so only its prompts can differ.
    assert texts["checkpoint"].keys() == texts["run"].keys() == texts["base"].keys()
    for i in texts["run"]:
        assert texts["checkpoint"][i]["completion"] == texts["run"][i]["completion"]
        assert texts["checkpoint"][i]["prompt_tokens"] == texts["run"][i]["prompt_tokens"]
    # `orpo eval` takes a checkpoint folder too.
    capsys.readouterr()
    assert main(["eval", str(checkpoint), "--data", FIXTURE, "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["eval_rewards/accuracies"] <= 1.0


def test_prompt_files_of_every_kind(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n")
    assert [p.text for p in load_prompts(str(tmp_path / "p.txt"))] == ["first prompt", "second prompt"]
    rows = [
        {"id": "x1", "instruction": "Add", "input": "2 and 3", "output": "5"},
        {
            "id": "x2",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        },
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    p, q = load_prompts(str(path))  # Alpaca-style and a conversation, one layout per row
    assert (p.id, p.text, p.reference) == ("x1", "Add\n\n2 and 3", "5")
    assert (q.id, q.messages, q.reference) == ("x2", [{"role": "user", "content": "hi"}], "hello")
    path.write_text(json.dumps({"id": 1, "text": "no prompt field"}) + "\n")
    with pytest.raises(ValueError, match="row 0: no prompt"):
        load_prompts(str(path))
