"""Parity with TRL 1.16's DPOTrainer: same policy, same separate reference model, same pairs, same
eval metrics, for each loss TRL shares with us (sigmoid = dpo, ipo, hinge).

String rows with a tokenizer without chat template: TRL tokenises prompt and prompt + response and
takes the response after their common prefix; our tokenizer (whitespace pre-tokenised) splits at the
same place, so both sides score identical token sequences. Skipped when `trl` is not installed.
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
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_logps/chosen",
    "eval_logps/rejected",
]


@pytest.fixture(scope="module")
def policy_and_reference(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    policy = build_model(tok, "llama", hidden_size=32, num_layers=2, seed=1)
    reference = build_model(tok, "llama", hidden_size=32, num_layers=2, seed=2)
    return tok, policy, reference


@pytest.mark.parametrize(
    ("method", "loss_type", "beta"), [("dpo", "sigmoid", 0.3), ("ipo", "ipo", 0.5), ("hinge", "hinge", 0.2)]
)
def test_evaluate_matches_trl_dpo_with_separate_reference(
    tmp_path, policy_and_reference, method, loss_type, beta
):
    tok, policy, reference = policy_and_reference
    ds = Dataset.from_list(toy_rows(8, seed=3))
    common = dict(per_device_eval_batch_size=4, report_to="none", bf16=False, use_cpu=True, beta=beta)
    ours = ORPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=ORPOConfig(output_dir=str(tmp_path / "ours"), method=method, max_length=128, **common),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tok,
    ).evaluate()
    theirs = trl.DPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=trl.DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=[loss_type], max_length=128, **common),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tok,
    ).evaluate()
    for key in COMPARED:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key
    assert ours["eval_rewards/margins"] != 0.0  # policy and reference differ: a real comparison


def test_two_training_steps_match_trl_dpo(tmp_path, policy_and_reference):
    """Gradients included: after two optimizer steps on the same batches, the held-out DPO metrics
    still agree with TRL's (same sampler seed, so the same pairs in the same order)."""
    tok, policy, reference = policy_and_reference
    ds = Dataset.from_list(toy_rows(8, seed=3))
    common = dict(
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        report_to="none",
        bf16=False,
        use_cpu=True,
        beta=0.3,
        gradient_checkpointing=False,
        save_strategy="no",
        max_length=128,
        seed=0,
    )
    trainers = [
        ORPOTrainer(
            model=copy.deepcopy(policy),
            ref_model=copy.deepcopy(reference),
            args=ORPOConfig(output_dir=str(tmp_path / "ours"), method="dpo", **common),
            train_dataset=ds,
            eval_dataset=ds,
            processing_class=tok,
        ),
        trl.DPOTrainer(
            model=copy.deepcopy(policy),
            ref_model=copy.deepcopy(reference),
            args=trl.DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=["sigmoid"], **common),
            train_dataset=ds,
            eval_dataset=ds,
            processing_class=tok,
        ),
    ]
    before = trainers[0].evaluate()["eval_loss"]
    ours, theirs = [(t.train(), t.evaluate())[1] for t in trainers]
    assert abs(ours["eval_loss"] - before) > 1e-3  # the steps moved the policy: a real comparison
    for key in COMPARED:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-4), key
