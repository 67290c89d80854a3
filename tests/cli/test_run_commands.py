"""`orpo eval / generate / merge / compare` on one tiny LoRA run, and `orpo.run.loading.open_model`."""

import json

import pytest
import torch

from orpo.cli.main import main

FIXTURE = "tests/fixtures/data/prompt_strings.jsonl"

TINY_YAML = """
model: {{name: "tiny:llama", tiny: {{hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, vocab_size: 200}}}}
adapter: {{type: lora, r: 4, alpha: 8, dropout: 0.0}}
data: {{train: {data}, eval: {data}}}
training: {{output_dir: {out}, max_steps: 2, per_device_train_batch_size: 2, learning_rate: 1.0e-2,
           gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: "no", logging_steps: 1}}
"""


def _yaml(folder):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(TINY_YAML.format(data=FIXTURE, out=folder / "run"))
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    assert main(["train", str(_yaml(folder)), "--no-progress"]) == 0
    return folder / "run"


def test_eval_json_reports_preference_metrics(run_dir, capsys):
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data", FIXTURE, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in (
        "eval_loss",
        "eval_nll_loss",
        "eval_rewards/margins",
        "eval_logps/chosen",
        "eval_logps/rejected",
    ):
        assert key in metrics, key
    assert 0.0 <= metrics["eval_rewards/accuracies"] <= 1.0
    # ORPO: loss = NLL + beta * L_OR with L_OR > 0, so the objective exceeds the NLL.
    assert metrics["eval_loss"] > metrics["eval_nll_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("adapter", [True, False], ids=["lora", "full"])
def test_eval_of_a_dpo_run_scores_against_the_starting_model(tmp_path, capsys, adapter):
    """DPO's reward is beta * (log pi(y|x) - log pi_ref(y|x)). Scored against a copy of the trained
    model it would be 0 for every pair; `orpo eval` must use the model the run started from (the
    adapter disabled; for a full run RUN/base_model/ or --ref-model), as training did. Expected: the
    run's own final evaluation on the same eval rows (summary.json `after`)."""
    path = _yaml(tmp_path)
    text = path.read_text().replace("learning_rate: 1.0e-2,", "learning_rate: 1.0e-2, method: dpo,")
    if not adapter:
        text = text.replace("adapter: {type: lora, r: 4, alpha: 8, dropout: 0.0}\n", "")
    path.write_text(text)
    assert main(["train", str(path), "--no-progress"]) == 0
    run = tmp_path / "run"
    after = json.loads((run / "summary.json").read_text())["after"]
    assert abs(after["eval_rewards/chosen"]) > 1e-4  # the run moved away from its start
    capsys.readouterr()
    assert main(["eval", str(run), "--data", FIXTURE, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins", "eval_loss"):
        assert metrics[key] == pytest.approx(after[key], abs=1e-5), key
    if adapter:
        return
    # A full run without its saved start needs --ref-model, said in one line.
    (run / "base_model").rename(tmp_path / "start")
    assert main(["eval", str(run), "--data", FIXTURE]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and "--ref-model PATH" in err and "\n" not in err
    assert main(["eval", str(run), "--data", FIXTURE, "--json", "--ref-model", str(tmp_path / "start")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval_rewards/chosen"] == pytest.approx(after["eval_rewards/chosen"], abs=1e-5)


def test_generate_prints_a_response(run_dir, capsys):
    capsys.readouterr()
    args = ["generate", str(run_dir), "--prompt", "What is the capital of France?", "--max-new-tokens", "5"]
    assert main([*args, "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert "What is the capital of France?" in result["prompt"] and isinstance(result["response"], str)
    assert main(["generate", str(run_dir), "--data", FIXTURE, "--rows", "2", "--max-new-tokens", "3"]) == 0


def test_merge_gives_the_adapter_models_logits(run_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from orpo.run.loading import open_model

    out = tmp_path / "merged"
    assert main(["merge", str(run_dir), "--output", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    loaded = open_model(run_dir)
    adapted, tok = loaded.model, loaded.tokenizer
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = tok("The capital of France is Paris.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected, got = adapted(input_ids=ids).logits, merged(input_ids=ids).logits
    # The adapter must have moved the model, else this comparison proves nothing.
    with torch.no_grad(), adapted.disable_adapter():
        assert (adapted(input_ids=ids).logits - expected).abs().max() > 1e-4
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # A non-empty output folder is refused unless --force.
    capsys.readouterr()
    assert main(["merge", str(run_dir), "--output", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["merge", str(run_dir), "--output", str(out), "--force"]) == 0


@pytest.mark.slow
def test_compare_trains_each_method(tmp_path, capsys):
    capsys.readouterr()
    assert main(["compare", str(_yaml(tmp_path)), "--methods", "orpo,sft", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["methods"]) == ["orpo", "sft"]
    for row in report["methods"].values():
        assert 0.0 <= row["eval_rewards/accuracies"] <= 1.0 and row["train_seconds"] > 0
    assert json.loads((tmp_path / "run" / "compare.json").read_text()) == report
    assert (tmp_path / "run" / "orpo" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "sft" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "{tmp}", "--data", FIXTURE], "not an orpo run folder"),
        (["generate", "{tmp}/nope", "--prompt", "hi"], "not an orpo run folder"),
        (["merge", "{tmp}", "--output", "{tmp}/out"], "not an orpo run folder"),
        (["compare", "{tmp}/x.yaml", "--methods", "orpo,ppo"], "unknown method 'ppo'"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, capsys, argv, message):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and message in err and "\n" not in err
