"""Every registered objective against hand-computed values (derivations in the docstrings), and the
registry's contract."""

import math

import pytest
import torch

from orpo.losses import NLL_WEIGHT, OBJECTIVES, Knobs, PairLogps, get_objective

# One pair used throughout: chosen summed log-prob -1 over 2 tokens (mean -0.5), rejected -8 over
# 4 tokens (mean -2); reference summed log-probs -2 (chosen) and -6 (rejected).
X = PairLogps(
    chosen_sum_logps=torch.tensor([-1.0]),
    rejected_sum_logps=torch.tensor([-8.0]),
    chosen_lengths=torch.tensor([2]),
    rejected_lengths=torch.tensor([4]),
    ref_chosen_sum_logps=torch.tensor([-2.0]),
    ref_rejected_sum_logps=torch.tensor([-6.0]),
)


def loss(name: str, **knobs) -> float:
    value, _ = get_objective(name).pair_losses(X, Knobs(**knobs))
    return value.item()


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_reference_free_objectives():
    """orpo = beta * L_OR(-0.5, -2.0) = 0.25 * 0.0967059 (tests/losses/test_orpo.py derives L_OR);
    simpo = -ln sigmoid(2 * (-0.5 + 2) - 0.5) = softplus(-2.5);
    cpo = -ln sigmoid(0.1 * (-1 + 8)) = softplus(-0.7); sft has no pair term."""
    assert loss("orpo", beta=0.25) == pytest.approx(0.25 * 0.0967059, abs=1e-6)
    assert loss("simpo", beta=2.0, simpo_gamma=0.5) == pytest.approx(softplus(-2.5), abs=1e-6)
    assert loss("cpo", beta=0.1) == pytest.approx(softplus(-0.7), abs=1e-6)
    assert loss("sft", beta=0.1) == 0.0


def test_dpo_hand_computed():
    """Log-ratios: chosen -1 - (-2) = 1, rejected -8 - (-6) = -2; h = 3.
    beta 0.1: L = -ln sigmoid(0.3) = softplus(-0.3) = 0.5543552.
    label_smoothing 0.2: L = 0.8 * softplus(-0.3) + 0.2 * softplus(0.3) = 0.8*0.5543552 + 0.2*0.8543552
    = 0.6143552."""
    assert loss("dpo", beta=0.1) == pytest.approx(0.5543552, abs=1e-6)
    assert loss("dpo", beta=0.1, label_smoothing=0.2) == pytest.approx(0.6143552, abs=1e-6)


def test_ipo_hand_computed():
    """Per-token log-ratios: chosen 1 / 2 = 0.5, rejected -2 / 4 = -0.5; h = 1.
    beta 0.25: target 1 / (2 * 0.25) = 2; L = (1 - 2)^2 = 1. beta 1: target 0.5, L = 0.25."""
    assert loss("ipo", beta=0.25) == pytest.approx(1.0, abs=1e-6)
    assert loss("ipo", beta=1.0) == pytest.approx(0.25, abs=1e-6)


def test_hinge_hand_computed():
    """h = 3. beta 0.1: max(0, 1 - 0.3) = 0.7; beta 0.5: max(0, 1 - 1.5) = 0."""
    assert loss("hinge", beta=0.1) == pytest.approx(0.7, abs=1e-6)
    assert loss("hinge", beta=0.5) == 0.0


def test_reference_metrics_as_trl_dpo():
    """rewards = beta * summed log-ratio: chosen 0.1 * 1, rejected 0.1 * -2; margin 0.3; accuracy 1;
    logps/* summed policy log-probs; mean_logps/* length-normalised."""
    _, m = get_objective("dpo").pair_losses(X, Knobs(beta=0.1))
    expected = {
        "rewards/chosen": 0.1,
        "rewards/rejected": -0.2,
        "rewards/margins": 0.3,
        "rewards/accuracies": 1.0,
        "logps/chosen": -1.0,
        "logps/rejected": -8.0,
        "mean_logps/chosen": -0.5,
        "mean_logps/rejected": -2.0,
    }
    for key, value in expected.items():
        assert m[key].item() == pytest.approx(value, abs=1e-6), key


def test_reference_free_metrics_are_orpo_metrics():
    """rewards = beta * mean log-prob (TRL's ORPO): chosen 0.5 * -0.5, rejected 0.5 * -2."""
    for name in ("orpo", "sft", "simpo", "cpo"):
        _, m = get_objective(name).pair_losses(X, Knobs(beta=0.5))
        assert m["rewards/chosen"].item() == pytest.approx(-0.25), name
        assert m["rewards/rejected"].item() == pytest.approx(-1.0), name
        assert m["logps/chosen"].item() == pytest.approx(-0.5), name
        assert "log_odds_ratio" in m, name


def test_gradients_flow_to_policy_not_reference():
    chosen = torch.tensor([-1.0], requires_grad=True)
    ref = torch.tensor([-2.0], requires_grad=True)
    x = PairLogps(
        chosen, torch.tensor([-8.0]), torch.tensor([2]), torch.tensor([4]), ref, torch.tensor([-6.0])
    )
    value, _ = get_objective("dpo").pair_losses(x, Knobs(beta=0.1))
    value.sum().backward()
    # dL/dchosen = -beta * sigmoid(-beta h) = -0.1 * sigmoid(-0.3)
    assert chosen.grad.item() == pytest.approx(-0.1 / (1 + math.exp(0.3)), abs=1e-6)


def test_registry_contract():
    assert list(OBJECTIVES) == ["orpo", "sft", "simpo", "cpo", "dpo", "ipo", "hinge", "kto"]
    assert {n for n, o in OBJECTIVES.items() if o.needs_reference} == {"dpo", "ipo", "hinge", "kto"}
    assert NLL_WEIGHT == {
        "orpo": 1.0,
        "sft": 1.0,
        "simpo": 0.0,
        "cpo": 1.0,
        "dpo": 0.0,
        "ipo": 0.0,
        "hinge": 0.0,
        "kto": 0.0,
    }
    for name, objective in OBJECTIVES.items():
        assert objective.__doc__ and objective.beta_means and objective.summary, name
    with pytest.raises(ValueError, match="method='ppo' is not one of orpo, sft"):
        get_objective("ppo")


def test_reference_objective_without_reference_is_a_clear_error():
    x = PairLogps(X.chosen_sum_logps, X.rejected_sum_logps, X.chosen_lengths, X.rejected_lengths)
    with pytest.raises(ValueError, match="needs reference log-probs"):
        get_objective("dpo").pair_losses(x, Knobs(beta=0.1))


def test_config_validates_method_against_registry(tmp_path):
    from orpo import ORPOConfig

    with pytest.raises(ValueError, match="method='ppo' is not one of"):
        ORPOConfig(output_dir=str(tmp_path), method="ppo", use_cpu=True)
    with pytest.raises(ValueError, match="label_smoothing=0.5"):
        ORPOConfig(output_dir=str(tmp_path), method="dpo", label_smoothing=0.5, use_cpu=True)
    assert ORPOConfig(output_dir=str(tmp_path), method="ipo", use_cpu=True).method == "ipo"
