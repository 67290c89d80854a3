"""The odds-ratio loss against hand-computed values (derivations in the docstrings)."""

import math

import pytest
import torch

from orpo.losses import log1mexp, log_odds, odds_ratio_loss


def test_odds_ratio_loss_hand_computed():
    """logp_w = -0.5, logp_l = -2.0:
    log_odds_w = -0.5 - ln(1 - e^-0.5) = -0.5 - ln(0.3934693) = -0.5 + 0.9327521 = 0.4327521
    log_odds_l = -2.0 - ln(1 - e^-2.0) = -2.0 - ln(0.8646647) = -2.0 + 0.1454135 = -1.8545865
    diff = 2.2873387;  L_OR = ln(1 + e^-diff) = ln(1 + 0.1015300) = 0.0967059
    """
    losses, metrics = odds_ratio_loss(torch.tensor([-0.5]), torch.tensor([-2.0]))
    assert losses.item() == pytest.approx(0.0967059, abs=1e-6)
    assert metrics["log_odds_chosen"].item() == pytest.approx(2.2873386, abs=1e-6)
    assert metrics["log_odds_ratio"].item() == pytest.approx(-0.0967059, abs=1e-6)


def test_equal_logps_give_ln2():
    """Equal log-probs: diff = 0, L_OR = -ln sigmoid(0) = ln 2, whatever the value."""
    losses, _ = odds_ratio_loss(torch.tensor([-0.1, -3.0, -40.0]), torch.tensor([-0.1, -3.0, -40.0]))
    torch.testing.assert_close(losses, torch.full((3,), math.log(2.0)))


def test_preferring_rejected_costs_more_than_ln2():
    losses, _ = odds_ratio_loss(torch.tensor([-3.0]), torch.tensor([-1.0]))
    assert losses.item() > math.log(2.0)


@pytest.mark.parametrize("x", [-1e-7, -1e-4, -0.3, -math.log(2.0), -0.7, -5.0, -30.0, -80.0])
def test_log1mexp_matches_float64(x):
    """log(1 - e^x) in float32 against float64 math on both sides of the -ln 2 branch (float64
    itself uses the accurate form on each side)."""
    expected = math.log1p(-math.exp(x)) if x < -math.log(2.0) else math.log(-math.expm1(x))
    got = log1mexp(torch.tensor([x], dtype=torch.float32)).item()
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-30)


def test_naive_formula_loses_precision_where_ours_does_not():
    """Near 0 the naive log(1 - exp(x)) in float32 is off by percent; the stable one is exact."""
    x = torch.tensor([-1e-6])
    naive = torch.log(1 - torch.exp(x)).item()
    exact = math.log(-math.expm1(-1e-6))
    assert abs(naive - exact) > 1e-3
    assert log1mexp(x).item() == pytest.approx(exact, rel=1e-6)


def test_extreme_logps_stay_finite_with_finite_grads():
    """logp = 0 exactly (p rounds to 1) and logp = -1e4 give finite loss and gradients, never NaN."""
    chosen = torch.tensor([0.0, -1e-9, -1e4, 0.0], requires_grad=True)
    rejected = torch.tensor([0.0, -1e4, 0.0, -1e-30], requires_grad=True)
    losses, metrics = odds_ratio_loss(chosen, rejected)
    losses.sum().backward()
    for t in (losses, chosen.grad, rejected.grad, metrics["log_odds_chosen"]):
        assert torch.isfinite(t).all()
    assert losses[1].item() == pytest.approx(0.0, abs=1e-6)  # chosen almost sure, rejected impossible
    assert losses[2].item() > 1e3  # the reverse is penalised ~linearly in the log-odds gap


def test_log_odds_is_float32_for_bf16_input():
    assert log_odds(torch.tensor([-0.5], dtype=torch.bfloat16)).dtype == torch.float32


def test_gradient_matches_closed_form():
    """d L_OR / d logp_w = -sigmoid(-diff) * d log_odds_w / d logp_w, with
    d log_odds / d logp = 1 + e^logp / (1 - e^logp) = 1 / (1 - p)."""
    w = torch.tensor([-0.5], dtype=torch.float64, requires_grad=True)
    l_ = torch.tensor([-2.0], dtype=torch.float64)
    odds_ratio_loss(w, l_)[0].sum().backward()
    diff = 2.2873386
    expected = -(1 / (1 + math.exp(diff))) * (1 / (1 - math.exp(-0.5)))
    assert w.grad.item() == pytest.approx(expected, rel=1e-5)
