"""The non-finite guard through the Python API (``ORPOTrainer`` used directly, no CLI)."""

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny_args
from orpo import ORPOTrainer
from orpo.guard import MASTERS_KEY, Float32Masters, LossScaler, NonFiniteError
from orpo.models.tiny import build_model

FIXTURE = Path(__file__).parent / "fixtures" / "data" / "prompt_strings.jsonl"


def _model(tokenizer):
    return build_model(tokenizer, "llama", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)


def _trainer(tmp_path, tokenizer, rows, model=None, **overrides):
    return ORPOTrainer(
        model=model or _model(tokenizer),
        args=tiny_args(tmp_path, **overrides),
        train_dataset=rows,
        processing_class=tokenizer,
    )


def test_a_nan_weight_stops_at_step_1_naming_the_rows_and_saves_nothing(tmp_path, tokenizer, rows):
    model = _model(tokenizer)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    trainer = _trainer(
        tmp_path, tokenizer, rows, model=model, max_steps=3, save_strategy="steps", save_steps=1
    )
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    message = str(info.value)
    assert message.startswith("step 1: the loss is nan (batch: train rows ")
    # The rows named are the first batch's source rows (the sampler shuffles with the seed).
    named = [int(r) for r in message.split("train rows ")[1].split(")")[0].split(", ")]
    assert len(named) == 4 and all(0 <= r < len(rows) for r in named)
    assert "\n" not in message and info.value.step == 1
    assert not list(Path(tmp_path / "out").glob("checkpoint-*"))
    # The final save refuses the NaN weights too.
    with pytest.raises(NonFiniteError, match="refusing to save"):
        trainer.save_model(str(tmp_path / "final"))
    assert not (tmp_path / "final" / "model.safetensors").exists()


def test_a_bad_step_is_stopped_before_the_optimizer_changes_anything(tmp_path, tokenizer, rows):
    """A NaN loss at step 3 only: 'stop' raises there, the weights are those after step 2."""
    trainer = _trainer(tmp_path, tokenizer, rows, max_steps=5, save_strategy="steps", save_steps=2)
    compute_loss = trainer.compute_loss

    def poisoned(model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return loss * float("nan") if trainer.state.global_step == 2 else loss

    trainer.compute_loss = poisoned
    with pytest.raises(NonFiniteError, match=r"^step 3: the loss is nan"):
        trainer.train()
    saved = load_file(tmp_path / "out" / "checkpoint-2" / "model.safetensors")
    for name, param in trainer.model.named_parameters():
        if name in saved:
            torch.testing.assert_close(param.detach(), saved[name], rtol=0, atol=0)


@pytest.mark.slow
def test_skip_drops_the_bad_step_and_stops_after_n_in_a_row(tmp_path, tokenizer, rows):
    trainer = _trainer(tmp_path, tokenizer, rows, max_steps=4, on_nonfinite="skip", max_nonfinite_steps=2)
    compute_loss = trainer.compute_loss
    bad_steps = {1}
    snapshots = {}

    def poisoned(model, inputs, return_outputs=False, num_items_in_batch=None):
        step = trainer.state.global_step
        snapshots.setdefault(step, {n: p.detach().clone() for n, p in model.named_parameters()})
        loss = compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return loss * float("nan") if step in bad_steps else loss

    trainer.compute_loss = poisoned
    trainer.train()
    assert trainer.guard.skipped == 1 and trainer.state.global_step == 4
    # Step 2 (global_step 1 -> 2) was dropped: the weights did not move.
    for name, before in snapshots[1].items():
        torch.testing.assert_close(snapshots[2][name], before, rtol=0, atol=0)
    # ...while good steps do move them.
    assert any(not torch.equal(snapshots[1][n], snapshots[0][n]) for n in snapshots[0])
    # The non-finite values are in the log history as NaN, not replaced by plausible numbers.
    logged = [h for h in trainer.state.log_history if h.get("grad_norm") is not None]
    assert any(h["grad_norm"] != h["grad_norm"] for h in logged)

    bad_steps.update({0, 1, 2, 3})
    trainer = _trainer(tmp_path, tokenizer, rows, max_steps=4, on_nonfinite="skip", max_nonfinite_steps=2)
    compute_loss = trainer.compute_loss
    trainer.compute_loss = poisoned
    with pytest.raises(NonFiniteError, match="2 non-finite steps in a row"):
        trainer.train()


@pytest.mark.slow
def test_resume_true_skips_an_incomplete_checkpoint(tmp_path, tokenizer, rows, caplog):
    """A checkpoint-N folder without its completeness marker (a partial save by an older version or
    another tool) is named and skipped; the newest complete one is used."""
    trainer = _trainer(tmp_path, tokenizer, rows, max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    out = tmp_path / "out"
    partial = out / "checkpoint-3"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    (partial / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    trainer = _trainer(tmp_path, tokenizer, rows, max_steps=3, save_strategy="no")
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 3
    assert "skipping incomplete checkpoint(s)" in caplog.text and "checkpoint-3" in caplog.text


# ---- float16: an overflowing step is routine (skipped, as AMP's GradScaler does) ----


@pytest.mark.parametrize(
    ("dtype", "configured", "expected"),
    [
        (torch.float16, None, "skip"),
        (torch.bfloat16, None, "stop"),
        (torch.float32, None, "stop"),
        (torch.float16, "stop", "stop"),
        (torch.float32, "skip", "skip"),
    ],
)
def test_on_nonfinite_defaults_to_skip_under_float16_only(tmp_path, dtype, configured, expected):
    args = tiny_args(tmp_path, on_nonfinite=configured)
    assert args.resolved_on_nonfinite(dtype) == expected


def _overflow_every_step(model) -> None:
    """The fault, injected from the test: every backward leaves an inf gradient on one weight, as a
    float16 gradient that overflowed would."""
    weight = model.model.layers[0].mlp.up_proj.weight
    weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))


def test_float16_overflow_on_every_step_stops_after_max_nonfinite_steps(tmp_path, tokenizer, rows):
    """A float16 model skips overflow steps by default; overflow on every step stops the run after
    ``max_nonfinite_steps`` in a row with one line, and the weights (saved each step) never change."""
    model = _model(tokenizer).half()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _overflow_every_step(model)
    trainer = _trainer(
        tmp_path, tokenizer, rows, model=model, max_steps=10, save_strategy="steps", save_steps=1
    )
    assert trainer.guard.action == "skip"
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    message = str(info.value)
    assert message.startswith("step 3: 3 non-finite steps in a row (last: the gradient norm is inf")
    assert "stopped (max_nonfinite_steps=3)" in message and "\n" not in message
    assert info.value.step == 3 and trainer.guard.skipped_steps == [1, 2, 3]
    for name, param in trainer.model.named_parameters():
        torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=0)
    saved = load_file(tmp_path / "out" / "checkpoint-2" / "model.safetensors")
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)


@pytest.mark.slow
def test_skipped_steps_are_in_the_summary_and_the_report(tmp_path, tokenizer, monkeypatch):
    """`orpo train` on float16 weights: a NaN loss at step 2 is skipped (the float16 default), the run
    finishes, and summary.json and report.html name the skipped step."""
    from orpo.cli.main import main

    folder = tmp_path / "fp16-model"
    _model(tokenizer).half().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        f"model: {{name: {folder}, dtype: float16}}\nadapter: null\n"
        f"data: {{train: {FIXTURE}, eval_fraction: 0.0}}\n"
        f"training: {{output_dir: {tmp_path / 'run'}, max_steps: 3, per_device_train_batch_size: 2, "
        "gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: 'no', logging_steps: 1}\n"
    )
    compute_loss = ORPOTrainer.compute_loss

    def nan_at_step_2(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        return loss * float("nan") if self.state.global_step == 1 else loss

    monkeypatch.setattr(ORPOTrainer, "compute_loss", nan_at_step_2)
    assert main(["train", str(recipe), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert summary["on_nonfinite"] == "skip"
    assert summary["nonfinite_skipped"] == 1 and summary["nonfinite_skipped_steps"] == [2]
    report = (tmp_path / "run" / "report.html").read_text()
    assert "Non-finite steps skipped (on_nonfinite=skip): 1 (step 2)." in report


# ---- float16 weights without AMP: our own dynamic loss scale (GradScaler's rules) ----


def _param(grad: list[float], dtype=torch.float16) -> torch.nn.Parameter:
    param = torch.nn.Parameter(torch.zeros(len(grad), dtype=dtype))
    param.grad = torch.tensor(grad, dtype=dtype)
    return param


def test_loss_scaler_backs_off_on_overflow_and_grows_after_a_run_of_finite_steps():
    scaler = LossScaler(growth_interval=3)
    assert scaler.scale == 1.0
    norm = scaler.unscale_([_param([float("inf"), 1.0])], max_norm=1.0)
    assert not torch.isfinite(norm)  # the step must be skipped
    scaler.update(skipped=True)
    scaler.update(skipped=True)
    assert scaler.scale == 0.25
    scaler.update(skipped=False)
    scaler.update(skipped=False)
    assert scaler.scale == 0.25  # 2 finite steps: not yet a run of 3
    scaler.update(skipped=True)  # an overflow halves the scale and resets the run
    assert scaler.scale == 0.125
    for _ in range(3):
        scaler.update(skipped=False)
    assert scaler.scale == 0.25 and scaler.finite_in_a_row == 0
    for _ in range(3):
        scaler.update(skipped=False)
    assert scaler.scale == 0.5


def test_loss_scaler_scales_the_backward_and_unscales_exactly_before_clipping():
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    scaler = LossScaler(scale=8.0)
    loss = (weight * weight).sum() / 2  # d(loss)/d(weight) = weight
    loss.register_hook(scaler.scale_grad)
    loss.backward()
    assert weight.grad.tolist() == [24.0, 32.0]  # scaled by 8
    norm = scaler.unscale_([weight], max_norm=None)
    assert float(norm) == 5.0 and weight.grad.tolist() == [3.0, 4.0]  # unscaled, no clipping
    weight.grad = torch.tensor([24.0, 32.0])
    norm = scaler.unscale_([weight], max_norm=1.0)
    assert float(norm) == 5.0  # the true norm, before clipping
    torch.testing.assert_close(weight.grad, torch.tensor([0.6, 0.8]))


def test_loss_scaler_clips_a_gradient_that_only_fits_float16_once_clipped():
    """A true gradient of 98304 (beyond float16's 65504) scaled by 1/2 fits; unscaling alone would
    overflow to inf, so unscaling and clipping are one multiplication."""
    param = _param([49152.0, 0.0])
    scaler = LossScaler(scale=0.5)
    norm = scaler.unscale_([param], max_norm=1.0)
    assert float(norm) == 98304.0
    assert torch.isfinite(param.grad).all() and float(param.grad[0]) == pytest.approx(1.0, rel=1e-3)
    param = _param([49152.0, 0.0])
    assert not torch.isfinite(scaler.unscale_([param], max_norm=None))  # 98304 does not fit: skip


def _gradient_beyond_float16(trainer, model) -> None:
    """The fault, injected from the test: one weight's true gradient is 1e5 per element, beyond float16's
    65504, so at loss scale 1 its float16 gradient overflows; at scale 1/2 it fits (and, clipped, so does
    the unscaled update)."""
    weight = model.model.layers[0].mlp.up_proj.weight

    def huge(grad):
        scaler = getattr(trainer, "loss_scaler", None)
        value = 1e5 * (scaler.scale if scaler is not None else 1.0)
        return torch.full_like(grad, value, dtype=torch.float32).to(grad.dtype)  # inf where it overflows

    weight.register_hook(huge)


def test_float16_weights_without_amp_back_off_the_loss_scale_and_train_on(tmp_path, tokenizer, rows):
    """Without a loss scale every step overflows at the same size and the run stops after 3; with ours,
    step 1 overflows and is skipped (counted, as the guard counts), the scale halves, and the run trains
    to finite, changed weights."""
    model = _model(tokenizer).half()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(tmp_path, tokenizer, rows, model=model, max_steps=4, max_grad_norm=1.0)
    _gradient_beyond_float16(trainer, model)
    trainer.train()
    assert trainer.state.global_step == 4
    assert trainer.guard.skipped_steps == [1]
    assert trainer.loss_scaler.scale == 0.5
    for name, param in trainer.model.named_parameters():
        assert param.dtype == torch.float16 and torch.isfinite(param).all(), name
    weight = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(before[weight], trainer.model.get_parameter(weight))


@pytest.mark.parametrize(
    ("dtype", "overrides"),
    [
        (torch.float32, {}),
        (torch.float16, {"on_nonfinite": "stop"}),  # the user asked that a non-finite step end the run
        # bfloat16 has float32's exponent range: its gradients do not overflow where float32's would not.
        (torch.bfloat16, {}),
    ],
)
def test_no_loss_scale_for_float32_or_bfloat16_weights_or_in_stop_mode(
    tmp_path, tokenizer, rows, dtype, overrides
):
    model = _model(tokenizer).to(dtype)
    assert _trainer(tmp_path, tokenizer, rows, model=model, **overrides).loss_scaler is None
    assert _trainer(tmp_path, tokenizer, rows, model=_model(tokenizer).half()).loss_scaler is not None


# ---- float16 weights without AMP: the optimizer steps float32 masters (Adam's moments in float32) ----


def _linear(dtype: torch.dtype, grads: dict[str, torch.Tensor]) -> torch.nn.Linear:
    """The same 4 -> 3 Linear (values float16-representable) in ``dtype``, with ``grads`` set by name."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3).half().to(dtype)
    for name, param in layer.named_parameters():
        param.grad = grads[name].to(dtype) if name in grads else None
    return layer


def test_float32_masters_step_as_float32_adamw_does():
    """One AdamW step through ``Float32Masters`` on float16 weights is float32 AdamW's step on the same
    values and gradients: the masters equal it exactly, the weights are it rounded to float16.

    Why it matters, by hand: AdamW's first step is ``w - lr x m_hat / (sqrt(v_hat) + eps)`` with
    ``m = 0.1 g``, ``v = 0.001 g^2`` (then divided by the bias corrections 0.1 and 0.001), so about
    ``w - lr x sign(g)``. With ``|g| <= 4e-3`` in float16, ``v = 0.001 g^2 <= 1.6e-8`` rounds to 0
    (the smallest float16 is 6e-8) and so does ``eps`` = 1e-8: plain AdamW on float16 weights divides
    by 0 and writes inf. The bias has no gradient: its weight and its master stay put, with no state."""
    torch.manual_seed(1)
    grads = {"weight": (torch.rand(3, 4) * 2 - 1).mul(4e-3).half()}  # |g| <= 4e-3, float16 values
    full, half, plain = (_linear(d, grads) for d in (torch.float32, torch.float16, torch.float16))
    before = {n: p.detach().clone() for n, p in half.named_parameters()}

    torch.optim.AdamW(full.parameters(), lr=0.1, weight_decay=0.01).step()
    masters = Float32Masters(torch.optim.AdamW(half.parameters(), lr=0.1, weight_decay=0.01))
    masters.step()
    torch.optim.AdamW(plain.parameters(), lr=0.1, weight_decay=0.01).step()

    (weight, weight_master), (bias, bias_master) = masters.pairs
    torch.testing.assert_close(weight_master, full.weight.detach(), rtol=0, atol=0)
    assert weight.dtype == torch.float16
    torch.testing.assert_close(weight.detach(), full.weight.detach().half(), rtol=0, atol=0)
    moved = (weight.detach().float() - before["weight"].float()).abs()
    assert 0.09 < moved.min() and moved.max() < 0.11  # about lr x sign(g), as derived above
    assert torch.equal(bias.detach(), before["bias"]) and torch.equal(bias_master.half(), before["bias"])
    assert list(masters.state) == [weight_master]
    assert masters.state[weight_master]["exp_avg_sq"].dtype == torch.float32
    assert not torch.isfinite(plain.weight).any()  # float16 moments: v and eps round to 0


def test_float32_masters_state_dict_holds_the_masters_and_resumes_from_them():
    """After a step the state dict holds the float32 masters, and a fresh wrapper that loads it takes the
    same second step (float16 weights alone would have lost the masters' low bits). A state without
    masters takes them from the weights at the next step; one with a different count is refused."""
    grads = {"weight": torch.full((3, 4), 1e-3).half(), "bias": torch.full((3,), -2e-3).half()}
    first = Float32Masters(torch.optim.AdamW(_linear(torch.float16, grads).parameters(), lr=0.01))
    assert MASTERS_KEY not in first.state_dict()  # not taken yet: the weights may still be loaded
    first.step()
    state = copy.deepcopy(first.state_dict())  # as saved: torch's state_dict shares the live tensors
    assert [m.dtype for m in state[MASTERS_KEY]] == [torch.float32, torch.float32]

    layer = _linear(torch.float16, grads)
    with torch.no_grad():
        for param, (old, _) in zip(layer.parameters(), first.pairs):
            param.copy_(old)  # the checkpoint's float16 weights
    resumed = Float32Masters(torch.optim.AdamW(layer.parameters(), lr=0.01))
    resumed.load_state_dict(state)
    first.step()
    resumed.step()
    for (a, master_a), (b, master_b) in zip(first.pairs, resumed.pairs):
        assert torch.equal(master_a, master_b) and torch.equal(a, b)

    without = {k: v for k, v in state.items() if k != MASTERS_KEY}
    resumed.load_state_dict(without)
    assert not resumed.masters_taken
    resumed.step()
    assert torch.equal(resumed.pairs[0][1].half(), resumed.pairs[0][0])
    with pytest.raises(ValueError, match="holds 1 float32 master copies and this model trains 2"):
        resumed.load_state_dict({**state, MASTERS_KEY: state[MASTERS_KEY][:1]})


def test_float16_weights_without_amp_train_through_float32_masters(tmp_path, tokenizer, rows):
    """The trainer wraps its optimizer for float16 weights (not for float32 or bfloat16, where the moments
    fit), and a run resumed from a checkpoint (optimizer.pt holds the masters) ends on the weights of the
    uninterrupted run exactly."""

    def trainer(folder, dtype=torch.float16, **overrides):
        return _trainer(
            folder,
            tokenizer,
            rows,
            model=_model(tokenizer).to(dtype),
            max_steps=6,
            learning_rate=0.05,
            **overrides,
        )

    for dtype in (torch.float32, torch.bfloat16):
        assert not isinstance(trainer(tmp_path / str(dtype), dtype).create_optimizer(), Float32Masters)
    full = trainer(tmp_path / "full")
    full.train()
    assert isinstance(full.optimizer.optimizer, Float32Masters)  # inside accelerate's wrapper
    part = trainer(tmp_path / "part", save_strategy="steps", save_steps=3)
    part.train()
    resumed = trainer(tmp_path / "part")
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "out" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    for name, param in full.model.named_parameters():
        assert param.dtype == torch.float16 and torch.isfinite(param).all(), name
        assert torch.equal(resumed.model.get_parameter(name), param), name
