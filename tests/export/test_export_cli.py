"""`orpo export` on a tiny trained LoRA run: merged folder, GGUF file equal to the merged model, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orpo.cli.main import main
from orpo.export.gguf_file import gguf_tensor_name, permute_for_rope_norm

gguf = pytest.importorskip("gguf")

FIXTURE = "tests/fixtures/data/prompt_strings.jsonl"
TINY_YAML = """
model: {{name: "tiny:llama", tiny: {{hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, vocab_size: 300}}}}
adapter: {{type: lora, r: 4, alpha: 8, dropout: 0.0}}
data: {{train: {data}, eval: {data}}}
training: {{output_dir: {out}, max_steps: 2, per_device_train_batch_size: 2, learning_rate: 1.0e-2,
           gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: "no", logging_steps: 1}}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    config = folder / "run.yaml"
    config.write_text(TINY_YAML.format(data=FIXTURE, out=folder / "run"))
    assert main(["train", str(config), "--no-progress"]) == 0
    return folder / "run"


def test_gguf_of_a_lora_run_holds_the_merged_weights(run_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    merged_dir = tmp_path / "merged"
    assert main(["export", str(run_dir), "--format", "merged", "--out", str(merged_dir)]) == 0
    path = tmp_path / "model.gguf"
    assert main(["export", str(run_dir), "--format", "gguf", "--dtype", "f32", "--out", str(path)]) == 0
    assert f"wrote {path} (f32" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    config = merged.config
    state = merged.state_dict()
    assert len(tensors) == len(state)  # untied: every parameter, lm_head included
    for hf_name, value in state.items():
        array = value.float().numpy()
        if ".q_proj." in hf_name:
            array = permute_for_rope_norm(array, config.num_attention_heads)
        if ".k_proj." in hf_name:
            array = permute_for_rope_norm(array, config.num_key_value_heads)
        t = tensors[gguf_tensor_name(hf_name)]
        np.testing.assert_array_equal(np.asarray(t.data).reshape(array.shape), array, err_msg=hf_name)
    # The adapter changed the weights: the file is not the base model's.
    base = AutoModelForCausalLM.from_pretrained(run_dir / "base_model")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.state_dict()[q], state[q])


def test_merge_alias_still_works(run_dir, tmp_path, capsys):
    assert main(["merge", str(run_dir), "--output", str(tmp_path / "m")]) == 0
    assert "merged adapter into base" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx", "--out", "{tmp}/x"], "--format 'onnx': use one of merged, gguf"),
        (["--format", "gguf", "--dtype", "q4", "--out", "{tmp}/x.gguf"], "--dtype 'q4': use one of f32, f16"),
        (["--format", "gguf", "--out", "{tmp}"], "is a folder; give the .gguf file to write"),
    ],
)
def test_bad_flags_fail_with_one_line(run_dir, tmp_path, capsys, args, message):
    capsys.readouterr()
    argv = ["export", str(run_dir), *[a.format(tmp=tmp_path) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_missing_run_fails_with_one_line(tmp_path, capsys):
    out = tmp_path / "x.gguf"
    assert main(["export", str(tmp_path / "nope"), "--format", "gguf", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not an orpo run folder (no such folder)" in err
    assert not out.exists()
