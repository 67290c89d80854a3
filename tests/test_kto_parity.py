"""Parity with TRL 1.16's KTOTrainer: same policy, same separate reference model, same data, same eval
metrics within 1e-5, on both engines and with the reference in memory or precomputed.

The policy (seed 2) sits above the reference (seed 1) on the mismatched KL samples, so the KL estimate
is positive and enters the loss unclamped; the other order clamps it at 0 (both are checked). One eval
batch (TRL's KL pairs are built in blocks of per_device_train_batch_size, ours too, so a batch of 8
holds every pairing). Skipped when `trl` is not installed.
"""

import copy

import pytest
from datasets import Dataset

from helpers import toy_rows
from orpo import ORPOConfig, ORPOTrainer
from orpo.models.tiny import build_model

trl = pytest.importorskip("trl")

COMPARED = [
    "eval_loss",
    "eval_kl",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/margins",
    "eval_logps/chosen",
    "eval_logps/rejected",
    "eval_logits/chosen",
    "eval_logits/rejected",
]


@pytest.fixture(scope="module")
def models(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok, {seed: build_model(tok, "llama", hidden_size=32, num_layers=2, seed=seed) for seed in (1, 2)}


def unpaired_rows() -> list[dict]:
    """Seven examples, five desirable: unequal kinds, so the weights matter."""
    rows = toy_rows(7, seed=5)
    return [
        {"prompt": r["prompt"], "completion": r["chosen"], "label": i not in (1, 4)}
        for i, r in enumerate(rows)
    ]


def evaluate_both(tmp_path, tok, policy, reference, data, **fields):
    ds = Dataset.from_list(data)
    common = dict(
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        report_to="none",
        bf16=False,
        use_cpu=True,
        max_length=128,
    )
    common.update({k: v for k, v in fields.items() if k != "engine"})
    ours = ORPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=ORPOConfig(
            output_dir=str(tmp_path / "ours"), method="kto", engine=fields.get("engine", "auto"), **common
        ),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tok,
    ).evaluate()
    theirs = trl.KTOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=trl.KTOConfig(output_dir=str(tmp_path / "trl"), **common),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tok,
    ).evaluate()
    return ours, theirs


def assert_same(ours: dict, theirs: dict) -> None:
    mismatched = {
        k: (ours.get(k), theirs[k]) for k in COMPARED if ours.get(k) != pytest.approx(theirs[k], abs=1e-5)
    }
    assert not mismatched, mismatched


@pytest.mark.parametrize("engine", ["packed", "padded"])
@pytest.mark.parametrize("precompute", [False, True])
def test_evaluate_matches_trl_kto_on_pairs(tmp_path, monkeypatch, models, engine, precompute):
    """A paired file: each chosen desirable, each rejected undesirable, as TRL unpairs it."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    tok, m = models
    ours, theirs = evaluate_both(
        tmp_path,
        tok,
        m[2],
        m[1],
        toy_rows(4, seed=3),
        beta=0.3,
        engine=engine,
        precompute_ref_log_probs=precompute,
    )
    assert_same(ours, theirs)
    assert theirs["eval_kl"] > 0.1  # the KL term is live, not clamped


def test_evaluate_matches_trl_kto_unpaired_weighted_and_clamped(tmp_path, models):
    """Unpaired rows, five desirable and two undesirable, weights != 1; policy and reference swapped, so
    the KL estimate is negative and clamped to 0 on both sides."""
    tok, m = models
    ours, theirs = evaluate_both(
        tmp_path, tok, m[1], m[2], unpaired_rows(), beta=0.2, desirable_weight=0.4, undesirable_weight=1.3
    )
    assert_same(ours, theirs)
    assert theirs["eval_kl"] == 0.0 and theirs["eval_rewards/margins"] != 0.0


def test_two_training_steps_match_trl_kto(tmp_path, models):
    """Gradients included: two SGD steps on the same batches (sequential sampling, as TRL requires),
    then the held-out metrics agree with TRL's."""
    tok, m = models
    ds = Dataset.from_list(toy_rows(8, seed=3))
    common = dict(
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_steps=2,
        learning_rate=0.05,
        optim="sgd",
        report_to="none",
        bf16=False,
        use_cpu=True,
        beta=0.3,
        gradient_checkpointing=False,
        save_strategy="no",
        max_length=128,
        train_sampling_strategy="sequential",
        seed=0,
    )
    trainers = [
        ORPOTrainer(
            model=copy.deepcopy(m[2]),
            ref_model=copy.deepcopy(m[1]),
            args=ORPOConfig(output_dir=str(tmp_path / "ours"), method="kto", **common),
            train_dataset=ds,
            eval_dataset=ds,
            processing_class=tok,
        ),
        trl.KTOTrainer(
            model=copy.deepcopy(m[2]),
            ref_model=copy.deepcopy(m[1]),
            args=trl.KTOConfig(output_dir=str(tmp_path / "trl"), **common),
            train_dataset=ds,
            eval_dataset=ds,
            processing_class=tok,
        ),
    ]
    before = trainers[0].evaluate()["eval_loss"]
    ours, theirs = [(t.train(), t.evaluate())[1] for t in trainers]
    assert abs(ours["eval_loss"] - before) > 1e-3  # the steps moved the policy: a real comparison
    assert_same(ours, theirs)


def test_evaluate_matches_trl_kto_on_conversations(tmp_path, tokenizer):
    """Unpaired conversational rows (prompt messages, completion a list of one assistant message) through
    the chat template, as TRL tokenises them."""
    models = {
        seed: build_model(tokenizer, "llama", hidden_size=32, num_layers=2, seed=seed) for seed in (1, 2)
    }
    rows = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "completion": [{"role": "assistant", "content": r["chosen"]}],
            "label": i % 3 != 1,
        }
        for i, r in enumerate(toy_rows(6, seed=11))
    ]
    ours, theirs = evaluate_both(tmp_path, tokenizer, models[2], models[1], rows, beta=0.3)
    assert_same(ours, theirs)
