"""KTO (orpo.losses.kto) against hand-computed values; derivations in the docstrings."""

import math

import pytest
import torch

from orpo.config import ORPOConfig
from orpo.losses import Knobs, PairLogps, get_objective


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def batch(kl_policy: list[float], kl_ref: list[float], **fields) -> PairLogps:
    """Four examples: completion log-ratios r = [-2+3, -5+4, -3+3, -4+6] = [1, -1, 0, 2], labels
    desirable, undesirable, desirable, undesirable; the KL samples' log-probs as given."""
    return PairLogps(
        chosen_sum_logps=torch.tensor([-2.0, -5.0, -3.0, -4.0], requires_grad=True),
        rejected_sum_logps=torch.tensor(kl_policy, requires_grad=True),
        chosen_lengths=torch.tensor([2, 5, 3, 4]),
        rejected_lengths=torch.tensor([1, 2, 3, 4]),
        ref_chosen_sum_logps=torch.tensor([-3.0, -4.0, -3.0, -6.0]),
        ref_rejected_sum_logps=torch.tensor(kl_ref),
        labels=torch.tensor([True, False, True, False]),
        **fields,
    )


KNOBS = Knobs(beta=0.5, desirable_weight=2.0, undesirable_weight=0.5)


def test_kto_hand_computed():
    """KL log-ratios [-4+5, -2+4, -5+4, -3+3] = [1, 2, -1, 0]: z_0 = 0.5. beta 0.5, lambda_D 2, lambda_U 0.5:
    row 0 (desirable, r=1):    2   * (1 - sigmoid(0.5 * (1 - 0.5)))  = 2 * (1 - sigmoid(0.25))  = 0.8756470
    row 1 (undesirable, r=-1): 0.5 * (1 - sigmoid(0.5 * (0.5 + 1)))  = 0.5 * (1 - sigmoid(0.75)) = 0.1604107
    row 2 (desirable, r=0):    2   * (1 - sigmoid(-0.25))                                    = 1.1243530
    row 3 (undesirable, r=2):  0.5 * (1 - sigmoid(0.5 * (0.5 - 2))) = 0.5 * (1 - sigmoid(-0.75)) = 0.3395893
    Rewards beta * r: desirable [0.5, 0] (mean 0.25), undesirable [-0.5, 1] (mean 0.25); margin 0."""
    x = batch([-4.0, -2.0, -5.0, -3.0], [-5.0, -4.0, -4.0, -3.0])
    losses, m = get_objective("kto").pair_losses(x, KNOBS)
    expected = [
        2 * (1 - sigmoid(0.25)),
        0.5 * (1 - sigmoid(0.75)),
        2 * (1 - sigmoid(-0.25)),
        0.5 * (1 - sigmoid(-0.75)),
    ]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx([0.8756470, 0.1604107, 1.1243530, 0.3395893], abs=1e-6)
    assert m["kl"].tolist() == pytest.approx([0.5])
    assert m["rewards/chosen"].tolist() == pytest.approx([0.5, 0.0])
    assert m["rewards/rejected"].tolist() == pytest.approx([-0.5, 1.0])
    assert get_objective("kto").summary_metrics({"rewards/chosen": 0.25, "rewards/rejected": -0.5}) == {
        "rewards/margins": 0.75
    }
    assert m["logps/chosen"].tolist() == [-2.0, -3.0]  # summed, as TRL's
    assert m["logps/rejected"].tolist() == [-5.0, -4.0]
    assert m["mean_logps/chosen"].tolist() == pytest.approx([-1.0, -1.0])
    # z_0 carries no gradient: the KL samples' log-probs get none.
    losses.sum().backward()
    assert x.rejected_sum_logps.grad is None or not x.rejected_sum_logps.grad.any()
    assert x.chosen_sum_logps.grad.abs().min() > 0


def test_kto_negative_kl_is_clamped_to_zero():
    """KL log-ratios [-1, -2, -1, 0]: mean -1, clamped to z_0 = 0. Row 0: 2 * (1 - sigmoid(0.5)) =
    0.7550813; row 1: 0.5 * (1 - sigmoid(0.5)) = 0.1887703 (r = -1: beta (0 - r) = 0.5)."""
    x = batch([-6.0, -6.0, -5.0, -3.0], [-5.0, -4.0, -4.0, -3.0])
    losses, m = get_objective("kto").pair_losses(x, KNOBS)
    assert m["kl"].tolist() == [0.0]
    assert losses[:2].tolist() == pytest.approx([0.7550813, 0.1887703], abs=1e-6)


def test_kto_reference_point_from_the_trainer_wins():
    """The trainer averages the batch statistic over processes and passes it in: z_0 = max(0, 2.0)."""
    x = batch([-4.0, -2.0, -5.0, -3.0], [-5.0, -4.0, -4.0, -3.0], reference_point=torch.tensor(2.0))
    losses, m = get_objective("kto").pair_losses(x, KNOBS)
    assert m["kl"].tolist() == [2.0]
    assert losses[0].item() == pytest.approx(2 * (1 - sigmoid(0.5 * (1 - 2))), abs=1e-6)
    assert get_objective("kto").reference_point(x).item() == pytest.approx(0.5)


def test_kto_one_kind_only_logs_no_margin():
    x = batch([-4.0, -2.0, -5.0, -3.0], [-5.0, -4.0, -4.0, -3.0])
    x = PairLogps(**{**x.__dict__, "labels": torch.tensor([True, True, True, True])})
    _, m = get_objective("kto").pair_losses(x, KNOBS)
    assert m["rewards/rejected"].numel() == 0
    assert get_objective("kto").summary_metrics({"rewards/chosen": 0.25}) == {}


def test_kto_without_labels_is_an_error():
    x = batch([-4.0, -2.0, -5.0, -3.0], [-5.0, -4.0, -4.0, -3.0])
    x = PairLogps(**{**x.__dict__, "labels": None})
    with pytest.raises(ValueError, match="labelled desirable"):
        get_objective("kto").pair_losses(x, KNOBS)


@pytest.mark.parametrize("field", ["desirable_weight", "undesirable_weight"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_kto_weights_must_be_positive(tmp_path, field, value):
    with pytest.raises(ValueError, match=rf"^{field}=.* must be a number > 0"):
        ORPOConfig(output_dir=str(tmp_path), method="kto", **{field: value})
