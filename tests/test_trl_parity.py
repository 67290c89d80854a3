"""Parity with TRL 1.16's experimental ORPOTrainer: same model, same batch, same eval metrics.

Skipped when `trl` is not installed (`pip install orpo[bench]`). `logits/*` differ by design: TRL
averages the logits over every position of the padded batch (prompt and padding included), we
average over the response positions only.
"""

import copy

import pytest
from datasets import Dataset

from helpers import toy_rows
from orpo import ORPOConfig, ORPOTrainer
from orpo.tiny import build_model, build_tokenizer

trl_orpo = pytest.importorskip("trl.experimental.orpo")

COMPARED = [
    "eval_loss",
    "eval_nll_loss",
    "eval_log_odds_ratio",
    "eval_log_odds_chosen",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_logps/chosen",
    "eval_logps/rejected",
]

CHAT_ROWS = [
    {
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris is the capital."}],
        "rejected": [{"role": "assistant", "content": "London, I think."}],
    },
    {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Add two and three."},
        ],
        "chosen": [{"role": "assistant", "content": "Five."}],
        "rejected": [{"role": "assistant", "content": "It is six, clearly."}],
    },
    {
        "prompt": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "how are you?"},
        ],
        "chosen": [{"role": "assistant", "content": "Fine, thanks for asking!"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    },
    {
        "prompt": [{"role": "user", "content": "Name a fruit."}],
        "chosen": [{"role": "assistant", "content": "An apple."}],
        "rejected": [{"role": "assistant", "content": "A carrot is a fruit."}],
    },
]


def _evaluate_both(model, tokenizer, rows, tmp_path, **fields):
    common = dict(
        per_device_eval_batch_size=2, report_to="none", bf16=False, use_cpu=True, max_length=256, **fields
    )
    ds = Dataset.from_list(rows)
    ours = ORPOTrainer(
        model=copy.deepcopy(model),
        args=ORPOConfig(output_dir=str(tmp_path / "ours"), **common),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tokenizer,
    )
    theirs = trl_orpo.ORPOTrainer(
        model=copy.deepcopy(model),
        args=trl_orpo.ORPOConfig(output_dir=str(tmp_path / "trl"), **common),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tokenizer,
    )
    return ours.evaluate(), theirs.evaluate()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_conversational_rows_match_trl(tmp_path, arch):
    corpus = [m["content"] for r in CHAT_ROWS for k in ("prompt", "chosen", "rejected") for m in r[k]] * 5
    tokenizer = build_tokenizer(corpus, vocab_size=300, with_bos=arch == "llama")
    model = build_model(tokenizer, arch, hidden_size=32, num_layers=2)
    ours, theirs = _evaluate_both(model, tokenizer, CHAT_ROWS, tmp_path)
    for key in COMPARED:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key


def test_plain_string_rows_match_trl_without_template(tmp_path, tokenizer):
    """String rows with a tokenizer that has no chat template: both sides use the raw text."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    model = build_model(tok, "llama", hidden_size=32, num_layers=2)
    ours, theirs = _evaluate_both(model, tok, toy_rows(8), tmp_path, beta=0.25)
    for key in COMPARED:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key


def test_pretemplated_string_rows_are_not_templated_twice(tmp_path, tokenizer):
    """The tutorials' rows: chat template already applied as text. We keep them as TRL does."""
    rows = []
    for row in CHAT_ROWS:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        full = [
            tokenizer.apply_chat_template(row["prompt"] + row[k], tokenize=False)
            for k in ("chosen", "rejected")
        ]
        rows.append({"prompt": prompt, "chosen": full[0][len(prompt) :], "rejected": full[1][len(prompt) :]})
    model = build_model(tokenizer, "llama", hidden_size=32, num_layers=2)
    ours, theirs = _evaluate_both(model, tokenizer, rows, tmp_path)
    for key in COMPARED:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key
